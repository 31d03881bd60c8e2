"""Typed events: everything wattflow observes or does is one of these.

Every event has a `kind` (the registry key used when a session is read back) and
`t_s`, seconds since the run started on the run's clock. Units live in field names.
Events are plain slotted dataclasses so the recorder can serialise them with orjson
without a conversion step, and the reader can rebuild them from a dict.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

#: The session format version written (docs/session-format.md); the reader also reads
#: the versions in READABLE_VERSIONS.
SESSION_VERSION = 3
READABLE_VERSIONS = frozenset({1, 2, 3})

#: The reason given to requests and workflows cut off by the end of the run (the
#: duration was reached, or the run was stopped): counted apart from failures.
RUN_ENDED = "run ended"

#: The reason given to a request cancelled because another call of its workflow failed
#: (its stage, and so its workflow, cannot succeed): a failure's collateral, counted
#: with failures under this reason, not as cut off by the end of the run.
WORKFLOW_FAILED = "cancelled: another call of its workflow failed"

RequestPhase = Literal["submitted", "first_token", "finished", "failed"]
StagePhase = Literal["declared", "started", "finished", "failed"]
WorkflowPhase = Literal["started", "finished", "failed"]
Component = Literal["gpu", "cpu", "dram"]


@dataclass(slots=True)
class Event:
    kind: ClassVar[str] = "event"
    t_s: float

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            d[f.name] = getattr(self, f.name)
        return d


EVENT_KINDS: dict[str, type[Event]] = {}


def register(cls: type[Event]) -> type[Event]:
    if cls.kind in EVENT_KINDS:
        raise ValueError(f"event kind {cls.kind!r} registered twice")
    EVENT_KINDS[cls.kind] = cls
    return cls


@register
@dataclass(slots=True)
class SessionHeader(Event):
    """First line of a session: everything needed to know what was run."""

    kind: ClassVar[str] = "session"
    version: int = SESSION_VERSION
    name: str = ""
    started_unix_s: float = 0.0
    clock: str = "wall"  # "wall" or "virtual"
    config: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)
    meters: list[dict[str, Any]] = field(default_factory=list)
    knobs: dict[str, Any] = field(default_factory=dict)
    # Per knob: unit, the bounds in force in this run (the GPU's range for the power
    # cap), and why it cannot be changed here, if it cannot (app/core/knobs.py).
    knob_specs: dict[str, Any] = field(default_factory=dict)


@register
@dataclass(slots=True)
class Sample(Event):
    """One reading of one device. `energy_mj` is a cumulative counter (monotonic
    within a run; meters that lack a hardware counter integrate power themselves)."""

    kind: ClassVar[str] = "sample"
    meter: str = ""
    device: str = ""  # e.g. "gpu0", "cpu0", "dram0"
    component: str = "gpu"  # Component
    energy_mj: float | None = None
    power_w: float | None = None  # instant power
    power_avg_w: float | None = None
    util_pct: float | None = None
    mem_used_mib: float | None = None
    sm_clock_mhz: float | None = None
    temp_c: float | None = None
    power_limit_w: float | None = None


@register
@dataclass(slots=True)
class RequestEvent(Event):
    kind: ClassVar[str] = "request"
    request_id: str = ""
    phase: str = "submitted"  # RequestPhase
    workflow_id: str = ""
    stage: str = ""  # the stage label statistics are grouped by
    node: str = ""  # the DAG node id within the workflow
    parents: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    max_tokens: int = 0
    latency_s: float | None = None  # submitted -> finished (or failed)
    queue_s: float | None = None  # submitted -> admitted to the engine
    ttft_s: float | None = None
    tpot_s: float | None = None  # mean time per output token after the first
    energy_j: dict[str, float] | None = None  # attributed energy per component
    reason: str | None = None  # finish reason, or why it failed
    endpoint: str | None = None  # which of several endpoints served it (openai engine)


@register
@dataclass(slots=True)
class StageEvent(Event):
    kind: ClassVar[str] = "stage"
    workflow_id: str = ""
    node: str = ""
    stage: str = ""
    phase: str = "declared"  # StagePhase
    deps: list[str] = field(default_factory=list)
    calls: int = 1
    latency_s: float | None = None


@register
@dataclass(slots=True)
class WorkflowEvent(Event):
    kind: ClassVar[str] = "workflow"
    workflow_id: str = ""
    workload: str = ""
    phase: str = "started"  # WorkflowPhase
    latency_s: float | None = None
    critical_path: list[str] = field(default_factory=list)
    requests: int = 0
    output_tokens: int = 0
    reason: str | None = None


@register
@dataclass(slots=True)
class KnobEvent(Event):
    kind: ClassVar[str] = "knob"
    knob: str = ""
    value: float | None = None  # in force after the change
    previous: float | None = None  # the value it replaced
    source: str = "cli"  # cli, start, schedule, ui, sweep, restore, autopilot
    requested: float | None = None  # the value asked for (the device may round it)
    reason: str | None = None  # why, when a controller (the autopilot) made the change

    @property
    def is_change(self) -> bool:
        """Whether the knob moved: a starting value found in force (source `start`), or
        one asked for that equals what was there, is a record, not a change."""
        return self.source != "start" and self.value != self.previous


@register
@dataclass(slots=True)
class EngineStateEvent(Event):
    kind: ClassVar[str] = "engine_state"
    source: str = "engine"  # "engine": the engine's own view; "client": wattflow's view
    running: int | None = None
    waiting: int | None = None
    kv_cache_pct: float | None = None
    preempted_total: int | None = None
    prefix_hit_pct: float | None = None
    output_tokens_total: int | None = None  # cumulative tokens generated so far
    prompt_tokens_total: int | None = None
    note: str | None = None


@register
@dataclass(slots=True)
class AutopilotEvent(Event):
    """The autopilot's state and why (app/core/autopilot): each decision, each change of
    state. Its knob changes are `knob` events with source `autopilot`."""

    kind: ClassVar[str] = "autopilot"
    state: str = ""  # settling, measuring, exploring, holding, backing off, paused, off
    objective: str = ""  # e.g. "ttft_p90=2s,tpot_p90=80ms"
    reason: str = ""
    measured: dict[str, Any] | None = None  # the epoch's J/token, quantiles, load
    grid: dict[str, Any] | None = None  # the values each knob may take (first event)


@register
@dataclass(slots=True)
class MarkEvent(Event):
    kind: ClassVar[str] = "mark"
    label: str = ""


@register
@dataclass(slots=True)
class ErrorEvent(Event):
    kind: ClassVar[str] = "error"
    source: str = ""
    message: str = ""
    fatal: bool = False


@register
@dataclass(slots=True)
class EndEvent(Event):
    """Last line of a session; `summary` is the live stats' final snapshot."""

    kind: ClassVar[str] = "end"
    reason: str = "completed"  # completed, interrupted, failed
    summary: dict[str, Any] = field(default_factory=dict)


#: Events a slow subscriber may have coalesced (only the newest per device matters to a
#: live view). Everything else is delivered, in order, always.
COALESCIBLE_KINDS = frozenset({"sample", "engine_state"})


_FIELD_NAMES: dict[type[Event], frozenset[str]] = {}


def field_names(cls: type[Event]) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


_LINE_KEYS: dict[type[Event], frozenset[str]] = {}


def _line_keys(cls: type[Event]) -> frozenset[str]:
    """The keys of a session line of this kind: its fields and `kind`."""
    keys = _LINE_KEYS.get(cls)
    if keys is None:
        keys = _LINE_KEYS[cls] = field_names(cls) | {"kind"}
    return keys


def event_from_dict(d: dict[str, Any]) -> Event:
    """Rebuild an event from a session line. Unknown fields are ignored so that a
    newer writer's extra fields do not break an older reader."""
    kind = d.get("kind")
    cls = EVENT_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    names = field_names(cls)
    if "t_s" in d and d.keys() <= _line_keys(cls):
        # The usual line (exactly the fields this version writes): no filtering copy,
        # which is most of the cost of reading a long session.
        del d["kind"]
        try:
            return cls(**d)
        finally:
            d["kind"] = kind  # the caller's dict is left as it was given
    if "t_s" not in d:
        d = {**d, "t_s": 0.0}
    return cls(**{k: v for k, v in d.items() if k in names})
