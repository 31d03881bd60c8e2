"""What the dashboard paints from: the event stream digested into a `Frame`.

A `Feed` drains a bus queue subscription on the loop that publishes (the runner's or
the replay's), keeps the last two minutes of GPU power per device and a bounded
event log, and builds a `Frame` on request: the live stats snapshot plus those.
It never touches Textual, so it runs on the runner's thread in virtual-time runs.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field

from app.core.bus import EventBus
from app.core.clip import clip_text
from app.core.events import (
    RUN_ENDED,
    AutopilotEvent,
    EndEvent,
    EngineStateEvent,
    ErrorEvent,
    Event,
    KnobEvent,
    MarkEvent,
    RequestEvent,
    Sample,
    SessionHeader,
)
from app.core.knobs import format_value
from app.core.saturation import SaturationWatch
from app.core.stats import LiveStats, StatsSnapshot

HISTORY_S = 120.0
LOG_LINES = 500
TICKS_KEPT = 2000
#: The whole run's power is kept too, one mean per this many seconds per GPU, for the
#: chart once the run (or replay) has ended: 3,600 points per GPU for an hour.
OVERVIEW_S = 1.0
#: The note the runner publishes when it drains the engine for a restart (runner.py:
#: "draining to restart with max_num_seqs=128").
RESTART_NOTE = re.compile(r"^draining to restart with (\w+)=(\d+)")
# Large enough that the queue never compacts between two drains of the pump (each
# compaction is a pass over the buffer), small enough to bound memory.
QUEUE_SOFT_LIMIT = 20_000

#: Text from the stream (a mark's label, a reason) shown up to this many characters in the
#: log (a log line whole up to four times it), and a mark's label on the chart up to
#: MAX_LABEL_CHARS: a label of megabytes is a session's to keep, not a screen's to wrap.
MAX_LOG_CHARS = 500
MAX_LABEL_CHARS = 40


def clip(text: str, limit: int = MAX_LOG_CHARS) -> str:
    return clip_text(text, limit)


@dataclass(slots=True)
class LogLine:
    seq: int
    t_s: float
    level: str  # knob, mark, error, warning, note, run
    text: str


@dataclass(slots=True)
class GpuTrace:
    device: str
    points: list[tuple[float, float]]  # (t_s, instant power W), oldest first
    limit_w: float | None = None  # the limit in force, as the meter reads it
    # (t_s, limit W) at each change of the limit, the one in force at the window's start
    # first: the chart draws the cap as it was over time, not today's cap over the past
    limit_steps: list[tuple[float, float]] = field(default_factory=list)
    util_pct: float | None = None
    sm_clock_mhz: float | None = None
    temp_c: float | None = None


@dataclass(slots=True)
class Tick:
    """A moment the chart marks with a vertical tick: a mark (`m`) or a knob change."""

    t_s: float
    kind: str  # "mark" or "knob"
    label: str


@dataclass(slots=True)
class DeviceLimits:
    device: str
    name: str
    limit_w: float | None
    range_w: tuple[float, float] | None


@dataclass(slots=True)
class Frame:
    now_s: float
    snapshot: StatsSnapshot
    header: SessionHeader | None = None
    gpus: list[GpuTrace] = field(default_factory=list)
    devices: list[DeviceLimits] = field(default_factory=list)
    log: list[LogLine] = field(default_factory=list)
    engine_state: EngineStateEvent | None = None  # the engine's own view
    # wattflow's view: `running` admitted to the engine, `waiting` held at admission
    client_state: EngineStateEvent | None = None
    ended: EndEvent | None = None
    events: int = 0
    coalesced: int = 0
    ticks: list[Tick] = field(default_factory=list)  # the latest TICKS_KEPT, oldest first
    # A knob whose change is still taking effect: "draining 46 -> 2", "restarting -> 128"
    knob_status: dict[str, str] = field(default_factory=dict)
    # Set once the run has ended: the GPU traces span the whole run, this long
    span_s: float | None = None
    # Who last changed each knob (`ui`, `autopilot`, `schedule`, ...), and the autopilot's
    # latest state when the run has one.
    knob_sources: dict[str, str] = field(default_factory=dict)
    autopilot: AutopilotEvent | None = None
    # The autopilot's latest count of 30 s windows that met its objective, "104/110"
    autopilot_windows: str | None = None
    saturated: str | None = None  # why the engine cannot keep up (app/core/saturation.py)


def device_limits(header: SessionHeader) -> list[DeviceLimits]:
    out: list[DeviceLimits] = []
    for meter in header.meters:
        for d in meter.get("devices", []):
            if d.get("component") != "gpu":
                continue
            rng = d.get("power_limit_range_w")
            out.append(DeviceLimits(
                device=str(d.get("device", "")), name=str(d.get("name", "")),
                limit_w=d.get("power_limit_w"),
                range_w=(float(rng[0]), float(rng[1])) if rng else None,
            ))
    return out


class Feed:
    def __init__(self, bus: EventBus, stats: LiveStats, history_s: float = HISTORY_S) -> None:
        self._sub = bus.subscribe_queue(soft_limit=QUEUE_SOFT_LIMIT)
        self._stats = stats
        self.history_s = history_s
        self.header: SessionHeader | None = None
        self.devices: list[DeviceLimits] = []
        self.ended: EndEvent | None = None
        self.engine_state: EngineStateEvent | None = None
        self._power: dict[str, deque[tuple[float, float]]] = {}
        self._limits: dict[str, deque[tuple[float, float]]] = {}
        self._last: dict[str, Sample] = {}
        self._log: deque[LogLine] = deque(maxlen=LOG_LINES)
        self._seq = 0
        self._failure_reasons: set[str] = set()
        self.events = 0
        self.client_state: EngineStateEvent | None = None
        self._ticks: deque[Tick] = deque(maxlen=TICKS_KEPT)
        self._overview: dict[str, Overview] = {}
        self._all_limits: dict[str, list[tuple[float, float]]] = {}
        self.first_t: float | None = None
        self.knob_sources: dict[str, str] = {}
        self.autopilot: AutopilotEvent | None = None
        self.autopilot_windows: str | None = None
        self.saturation = SaturationWatch()
        self.drain = DrainWatch()

    # -- draining (on the publishing loop) ---------------------------------------
    async def pump(self) -> None:
        """Digest everything the bus delivers until it closes."""
        while True:
            batch = await self._sub.get_batch()
            if not batch:
                return
            for ev in batch:
                self.digest(ev)

    def close(self) -> None:
        self._sub.close()

    def log(self, t_s: float, level: str, text: str) -> None:
        self._seq += 1
        self._log.append(LogLine(self._seq, t_s, level, clip(text, 4 * MAX_LOG_CHARS)))

    def digest(self, ev: Event) -> None:
        self.events += 1
        self.saturation.on_event(ev)
        if isinstance(ev, Sample):
            self._on_sample(ev)
        elif isinstance(ev, RequestEvent):
            # One line per distinct failure reason: the vitals count them all.
            if ev.phase == "failed" and ev.reason != RUN_ENDED:
                reason = ev.reason or "unknown"
                if reason not in self._failure_reasons:
                    self._failure_reasons.add(reason)
                    self.log(ev.t_s, "warning", f"request failed: {clip(reason)}")
        elif isinstance(ev, EngineStateEvent):
            if ev.source != "client":
                if ev.running is not None or ev.waiting is not None or self.engine_state is None:
                    self.engine_state = ev  # a note alone does not replace the counts
            elif ev.running is not None or ev.waiting is not None:
                self.client_state = ev
            self.drain.on_state(self.engine_state, self.client_state)
            if ev.note:
                self.log(ev.t_s, "note", f"[{ev.source}] {ev.note}")
                if ev.source == "client" and (m := RESTART_NOTE.match(ev.note)):
                    self.drain.on_restart(m.group(1), int(m.group(2)))
        elif isinstance(ev, KnobEvent):
            self.drain.on_knob(ev, self.engine_state, self.client_state)
            if ev.is_change:
                before = format_value(ev.knob, ev.previous)
                after = format_value(ev.knob, ev.value)
                self.knob_sources[ev.knob] = ev.source
                why = f": {clip(ev.reason)}" if ev.reason else ""
                self.log(ev.t_s, "knob", f"{ev.knob} {before} → {after} ({ev.source}){why}")
                self._ticks.append(Tick(ev.t_s, "knob", f"{ev.knob}={after}"))
        elif isinstance(ev, AutopilotEvent):
            # Each change of state in the log; a hold that goes on is not news.
            if self.autopilot is None or ev.state != self.autopilot.state or ev.state not in (
                    "holding", "measuring"):
                self.log(ev.t_s, "note", f"autopilot {ev.state}: {clip(ev.reason)}")
            self.autopilot = ev
            # Only decisions carry it (a change of state alone does not): the last one's.
            windows = (ev.measured or {}).get("windows_met")
            if isinstance(windows, str):
                self.autopilot_windows = windows
        elif isinstance(ev, MarkEvent):
            self.log(ev.t_s, "mark", f"mark: {clip(ev.label)}")
            self._ticks.append(Tick(ev.t_s, "mark", clip(ev.label, MAX_LABEL_CHARS)))
        elif isinstance(ev, ErrorEvent):
            if ev.source == "engine":
                self.drain.on_engine_error(ev.message)
            first = ev.message.splitlines()[0] if ev.message else ""
            if ev.fatal and "Traceback" in first:
                # The runner records a crash as the whole traceback: show its last line.
                lines = [x for x in ev.message.splitlines() if x.strip()]
                first = lines[-1] if lines else first
            self.log(ev.t_s, "error" if ev.fatal else "warning", f"[{ev.source}] {first}")
        elif isinstance(ev, SessionHeader):
            self.header = ev
            self.devices = device_limits(ev)
            model = ev.engine.get("model") or "?"
            self.log(0.0, "run", f"session {ev.name or '(unnamed)'}: engine"
                     f" {ev.engine.get('name', '?')} ({model}), workload"
                     f" {ev.workload.get('name', '?')}, {ev.clock} clock")
        elif isinstance(ev, EndEvent):
            self.ended = ev
            msg = ev.summary.get("message") or ""
            self.log(ev.t_s, "run", f"run ended: {ev.reason}" + (f" ({msg})" if msg else ""))

    def _on_sample(self, s: Sample) -> None:
        if s.component != "gpu":
            return
        self._last[s.device] = s
        horizon = s.t_s - self.history_s - 1.0
        if self.first_t is None:
            self.first_t = s.t_s
        if s.power_limit_w is not None:
            steps = self._limits.setdefault(s.device, deque())
            if not steps or steps[-1][1] != s.power_limit_w:
                steps.append((s.t_s, s.power_limit_w))
                self._all_limits.setdefault(s.device, []).append((s.t_s, s.power_limit_w))
            while len(steps) > 1 and steps[1][0] < horizon:
                steps.popleft()
        if s.power_w is None:
            return
        overview = self._overview.get(s.device)
        if overview is None:
            overview = self._overview[s.device] = Overview()
        overview.add(s.t_s, s.power_w)
        trace = self._power.get(s.device)
        if trace is None:
            trace = self._power[s.device] = deque()
        trace.append((s.t_s, s.power_w))
        while trace and trace[0][0] < horizon:
            trace.popleft()

    # -- reading (on the publishing loop) -------------------------------------------
    def frame(self, now_s: float) -> Frame:
        """What to paint now. Once the run has ended the GPU traces span the whole run
        (`span_s`), so the marks and knob changes of all of it can be seen."""
        # The live stats (an inline subscriber) have seen every event published so far:
        # digest what still waits in the queue, so the knob panel's drain and the
        # knob values come from the same moment.
        for ev in self._sub.get_nowait():
            self.digest(ev)
        whole = self.ended is not None
        gpus = []
        for dev in sorted(self._power.keys() | self._last.keys(), key=natural_key):
            last = self._last.get(dev)
            if whole:
                overview = self._overview.get(dev)
                points = overview.points() if overview is not None else []
                steps = list(self._all_limits.get(dev, ()))
            else:
                points = list(self._power.get(dev, ()))
                steps = list(self._limits.get(dev, ()))
            gpus.append(GpuTrace(
                device=dev, points=points,
                limit_w=last.power_limit_w if last else None,
                limit_steps=steps,
                util_pct=last.util_pct if last else None,
                sm_clock_mhz=last.sm_clock_mhz if last else None,
                temp_c=last.temp_c if last else None,
            ))
        span = max(1.0, now_s - (self.first_t or 0.0)) if whole else None
        return Frame(
            now_s=now_s, snapshot=self._stats.snapshot(), header=self.header, gpus=gpus,
            devices=list(self.devices), log=list(self._log), engine_state=self.engine_state,
            client_state=self.client_state, ended=self.ended, events=self.events,
            coalesced=self._sub.coalesced, ticks=list(self._ticks),
            knob_sources=dict(self.knob_sources), autopilot=self.autopilot,
            autopilot_windows=self.autopilot_windows,
            saturated=None if whole else self.saturation.reason(),
            # Once the run has ended nothing is still taking effect.
            knob_status={} if whole else self.drain.status(self.engine_state,
                                                            self.client_state),
            span_s=span,
        )


def natural_key(name: str) -> tuple[tuple[int, str], ...]:
    """gpu2 before gpu10; node2/gpu0 before node10/gpu0."""
    return tuple((int(part), "") if part.isdigit() else (-1, part)
                 for part in re.split(r"(\d+)", name))


class Overview:
    """One GPU's power over the whole run: the mean of each OVERVIEW_S bucket."""

    __slots__ = ("_bucket", "_n", "_points", "_sum")

    def __init__(self) -> None:
        self._points: list[tuple[float, float]] = []
        self._bucket: int | None = None
        self._sum = 0.0
        self._n = 0

    def add(self, t: float, w: float) -> None:
        b = math.floor(t / OVERVIEW_S)
        if b != self._bucket:
            self._flush()
            self._bucket = b
        self._sum += w
        self._n += 1

    def _flush(self) -> None:
        if self._bucket is not None and self._n:
            self._points.append(((self._bucket + 0.5) * OVERVIEW_S, self._sum / self._n))
        self._sum, self._n = 0.0, 0

    def points(self) -> list[tuple[float, float]]:
        current = [] if self._bucket is None or not self._n else [
            ((self._bucket + 0.5) * OVERVIEW_S, self._sum / self._n)]
        return self._points + current


def running_in_engine(engine: EngineStateEvent | None,
                      client: EngineStateEvent | None) -> int | None:
    """Requests the engine runs now: its own count when it reports one, else the
    requests wattflow has admitted to it."""
    if engine is not None and engine.running is not None:
        return engine.running
    if client is not None and client.running is not None:
        return client.running
    return None


class DrainWatch:
    """Knob changes that take effect over time. Lowering the batch limit admits nobody
    new, but the requests already inside run to their end: the knob reads 2 while the
    engine still runs 46 ("draining 46 -> 2") until its running count reaches the
    limit. A max_num_seqs restart drains the engine, restarts it, resumes ("restarting
    -> 128"), until the knob event that says it is done (or an engine error)."""

    def __init__(self) -> None:
        self.batch_target: int | None = None
        self.restarts: dict[str, int] = {}

    def on_knob(self, ev: KnobEvent, engine: EngineStateEvent | None,
                client: EngineStateEvent | None) -> None:
        if ev.knob == "batch_limit" and ev.value is not None:
            self.batch_target = int(ev.value)
            self.on_state(engine, client)
        self.restarts.pop(ev.knob, None)  # a restart's knob event: it is done

    def on_restart(self, knob: str, value: int) -> None:
        self.restarts[knob] = value

    def on_engine_error(self, message: str) -> None:
        # The runner reports a failed restart as "KNOB=VALUE: why".
        for knob in list(self.restarts):
            if message.startswith(f"{knob}="):
                del self.restarts[knob]

    def on_state(self, engine: EngineStateEvent | None,
                 client: EngineStateEvent | None) -> None:
        n = running_in_engine(engine, client)
        if self.batch_target is not None and (n is None or n <= self.batch_target):
            self.batch_target = None

    def status(self, engine: EngineStateEvent | None,
               client: EngineStateEvent | None) -> dict[str, str]:
        out: dict[str, str] = {}
        n = running_in_engine(engine, client)
        if self.batch_target is not None and n is not None and n > self.batch_target:
            out["batch_limit"] = f"draining {n} -> {self.batch_target}"
        for knob, value in self.restarts.items():
            out[knob] = f"restarting -> {value}"
        return out
