"""The compact session lines of format versions 2 and 3: what is left out, and how it
comes back.

A compact line is still one JSON object with `kind` and `t_s`; it leaves out what the
reader can restore exactly:

- a field equal to its reference value: the value it had on the previous line of the
  same *subject* (the same request, stage, workflow, device or engine-state source,
  see `SUBJECT`), or, for a subject's first line, the field's default in
  app/core/events.py. Fields added later (an optional `endpoint`...) are covered
  without a change here: their default comes from the dataclass.
- a duration that is the difference of two times already on record (`DERIVED`): a
  request's `latency_s` (from its `submitted` line), `ttft_s` on `first_token`,
  `tpot_s`, a stage's and a workflow's `latency_s` (from their `started` lines). It
  is left out only when recomputing it gives the value to the microsecond (the value
  read back is then the recomputed one).
- digits below the resolution of a session (`decimals`): times and durations to the
  microsecond, energy in mJ to the microjoule and in J to the millijoule, power and the
  other unit fields to a tenth: finer than any meter reads, and than the loop's timers.
- (version 3) a sample's `device` when it is the next of the devices in turn
  (`_DeviceCycle`), and a finished request's `queue_s` equal to the previous finished
  request's (as its `reason` in both versions).

`LineEncoder` (the recorder) and `LineDecoder` (the reader) keep the same table of
subjects seen, so they agree line by line; a subject is forgotten at its last phase
(a request `finished`/`failed`...), so the table holds only what is in flight.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from app.core.events import EVENT_KINDS, SESSION_VERSION, Event

#: The first format version with compact lines; the encoder writes SESSION_VERSION
#: (app/core/events.py) unless asked for this one.
COMPACT_VERSION = 2
#: From this version on: a `sample` line leaves out its `device` when it is the next in
#: the cycle of devices seen (`_DeviceCycle`), and a finished request's `queue_s` defaults
#: to the previous finished request's.
CYCLE_VERSION = 3

#: The fields that name a line's subject, per kind: lines with the same values of these
#: fields inherit from one another. A kind not here has no subject (defaults only).
SUBJECT: dict[str, tuple[str, ...]] = {
    "request": ("request_id",),
    "stage": ("workflow_id", "node"),
    "workflow": ("workflow_id",),
    "sample": ("device",),
    "engine_state": ("source",),
}

#: Phases after which a subject has no further line: its entry is dropped.
LAST_PHASES: dict[str, frozenset[str]] = {
    "request": frozenset({"finished", "failed"}),
    "stage": frozenset({"finished", "failed"}),
    "workflow": frozenset({"finished", "failed", "shed"}),
}

#: (kind, phase) -> [(field, phase whose time it is measured from)]: the field is
#: `t_s` minus the `t_s` of the subject's line of that phase, rounded like a time.
DERIVED: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("request", "first_token"): (("ttft_s", "submitted"),),
    ("request", "finished"): (("latency_s", "submitted"),),
    ("request", "failed"): (("latency_s", "submitted"),),
    ("stage", "finished"): (("latency_s", "started"),),
    ("stage", "failed"): (("latency_s", "started"),),
    ("workflow", "finished"): (("latency_s", "started"),),
    ("workflow", "failed"): (("latency_s", "started"),),
}

#: The phase a subject's next line has unless it says otherwise.
NEXT_PHASE: dict[tuple[str, str], str] = {
    ("request", "submitted"): "first_token",
    ("request", "first_token"): "finished",
    ("stage", "declared"): "started",
    ("stage", "started"): "finished",
    ("workflow", "started"): "finished",
}

#: Decimal places kept, by the unit suffix of a field's name.
_DECIMALS_BY_UNIT = {"_s": 6, "_j": 3, "_mj": 3, "_w": 1, "_pct": 1, "_mhz": 1, "_c": 1,
                     "_mib": 1}
_TIME_DECIMALS = 6
_TIME_SCALE = 10.0**_TIME_DECIMALS

_NONE: Any = object()  # "no value": no default, no rule


def decimals(name: str) -> int | None:
    """Decimal places a float field named `name` is written with (None: all)."""
    for unit, places in _DECIMALS_BY_UNIT.items():
        if name.endswith(unit):
            return places
    return None


def _rnd(x: float, scale: float) -> float:
    """`x` to the nearest 1/scale. round(x * scale) / scale is the double nearest that
    decimal, so orjson prints it short; and it is many times cheaper than round(x, n).
    NaN and the infinities are left as they are (orjson writes them as null)."""
    try:
        return round(x * scale) / scale
    except (ValueError, OverflowError):
        return x


def _round_value(v: Any, scale: float) -> Any:
    t = type(v)
    if t is float:
        return _rnd(v, scale)
    if t is dict:
        return {k: _rnd(x, scale) if type(x) is float else x for k, x in v.items()}
    return v


@dataclasses.dataclass(slots=True)
class _Plan:
    """How one event class is encoded: its fields in order, with default and rounding."""

    kind: str
    names: tuple[str, ...]  # every field but t_s
    defaults: dict[str, Any]  # field -> default (absent: none)
    places: tuple[int | None, ...]  # per name
    subject: tuple[str, ...]
    last_phases: frozenset[str]
    derived: dict[str, tuple[tuple[str, str], ...]]  # phase -> [(field, from phase)]
    values: Callable[[Event], list[Any]]  # the fields in order, rounded (_read_source)
    diff: Callable[[list[Any], list[Any] | tuple[Any, ...], dict[str, Any]], None]
    refs: dict[str, Any]  # every field -> its default, or _NONE (no default)
    one_subject: str | None  # the subject field when there is one only
    ref_values: tuple[Any, ...]  # refs in field order, _NONE at subject fields (written)
    index: dict[str, int]  # field -> its position in `names`
    subject_at: tuple[int, ...]  # positions of the subject fields
    base: dict[str, Any]  # the defaults that are immutable (a missing list: a new one)
    derived_at: dict[str, tuple[tuple[int, str], ...]]  # phase -> [(position, from phase)]
    at: tuple[int, ...]  # positions of phase, workflow_id, node, request_id, stage,
    #                      output_tokens, reason, tpot_s, queue_s, device (-1: none)
    telemetry: bool  # one subject field, no phase: a device's samples, a state source


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _NONE


_PLANS: dict[type[Event], _Plan] = {}


def _generated(cls: type[Event], names: tuple[str, ...], places: tuple[int | None, ...]
               ) -> tuple[Any, Any]:
    """Two functions written out for one event class, as dataclasses writes its
    __init__: `values(ev)`, the event's fields in order, rounded to the session's
    resolution; `diff(vals, ref, out)`, which puts into `out` each field whose value is
    not its reference's. They run for every event recorded: written out field by field,
    they cost about half the loops over the plan's tables they replace."""
    src = ["def values(ev):"]
    for i, (name, pl) in enumerate(zip(names, places, strict=True)):
        src.append(f"    v{i} = ev.{name}")
        if pl is not None:
            scale = repr(10.0**pl)
            src += [f"    if type(v{i}) is float:",
                    "        try:",
                    f"            v{i} = round(v{i} * {scale}) / {scale}",
                    "        except (ValueError, OverflowError):",
                    "            pass  # NaN or infinite: written as null, as ever",
                    f"    elif type(v{i}) is dict:",
                    f"        v{i} = _round_value(v{i}, {scale})"]
    src.append(f"    return [{', '.join(f'v{i}' for i in range(len(names)))}]")
    src.append("def diff(vals, ref, out):")
    if names:
        src.append(f"    {''.join(f'v{i}, ' for i in range(len(names)))}= vals")
        src.append(f"    {''.join(f'r{i}, ' for i in range(len(names)))}= ref")
    else:
        src.append("    pass")
    for i, name in enumerate(names):
        src += [f"    if v{i} is not r{i} and (type(v{i}) is not type(r{i}) or v{i} != r{i}):",
                f"        out[{name!r}] = v{i}"]
    namespace: dict[str, Any] = {"_round_value": _round_value}
    exec(compile("\n".join(src), f"<session codec: {cls.__qualname__}>", "exec"),
         namespace)
    return namespace["values"], namespace["diff"]


def plan(cls: type[Event]) -> _Plan:
    p = _PLANS.get(cls)
    if p is None:
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.name != "t_s"]
        names = tuple(f.name for f in fields)
        defaults = {f.name: d for f in fields if (d := _default(f)) is not _NONE}
        places = tuple(decimals(n) if "float" in str(hints.get(n, "")) else None
                       for n in names)
        values, diff = _generated(cls, names, places)
        derived: dict[str, tuple[tuple[str, str], ...]] = {}
        for (kind, phase), rules in DERIVED.items():
            if kind == cls.kind:
                derived[phase] = rules
        subject = SUBJECT.get(cls.kind, ())
        p = _PLANS[cls] = _Plan(
            cls.kind, names, defaults, places, subject,
            LAST_PHASES.get(cls.kind, frozenset()), derived, values, diff,
            {n: defaults.get(n, _NONE) for n in names},
            subject[0] if len(subject) == 1 else None,
            tuple(_NONE if n in subject else defaults.get(n, _NONE) for n in names),
            {n: i for i, n in enumerate(names)},
            tuple(i for i, n in enumerate(names) if n in subject),
            {n: v for n, v in defaults.items() if type(v) in (str, int, float, bool, type(None))},
            {ph: tuple((names.index(f), since) for f, since in rules)
             for ph, rules in derived.items()},
            tuple(names.index(f) if f in names else -1 for f in (
                "phase", "workflow_id", "node", "request_id", "stage", "output_tokens",
                "reason", "tpot_s", "queue_s", "device")),
            len(subject) == 1 and "phase" not in names)
    return p


class _Subject:
    """What both sides know of one subject: its last line's fields, complete, and the
    time of each phase seen."""

    __slots__ = ("fields", "times", "values")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.times: dict[str, float] = {}
        # The encoder's: the next line's reference, in field order (_NONE at the subject).
        self.values: list[Any] = []


class _DeviceCycle:
    """The devices of the `sample` lines in the order they first came: a meter reads its
    devices in turn, so a sample line of version 3 leaves out its `device` when it is the
    one after the previous sample line's in this order (with one device: the same one
    again). Kept alike by the encoder and the decoder."""

    __slots__ = ("after", "next")

    def __init__(self) -> None:
        self.after: dict[Any, Any] = {}  # device -> the next in turn, in first-seen order
        self.next: Any = _NONE  # the device a line without one is of (none yet)

    def seen(self, device: Any) -> None:
        nxt = self.after.get(device, _NONE)
        if nxt is _NONE:  # a new device: the last in turn, before the first
            order = list(self.after)
            self.after[order[-1] if order else device] = device
            self.after[device] = nxt = order[0] if order else device
        self.next = nxt


def _tpot(full: dict[str, Any], st: _Subject, t_s: float) -> Any:
    """A finished request's mean time per output token after the first, as the runner
    computes it, from the recorded times: None when it has none."""
    t_first = st.times.get("first_token")
    out = full.get("output_tokens", 0)
    if t_first is None or type(out) is not int or out <= 1:
        return None
    return _rnd((t_s - t_first) / (out - 1), _TIME_SCALE)


def _derived(p: _Plan, st: _Subject, full: dict[str, Any], phase: Any,
             t_s: Any) -> dict[str, Any] | None:
    """The durations the reader computes for this line instead of reading them."""
    if type(t_s) not in (float, int):
        return None
    rules = p.derived.get(phase) if type(phase) is str else None
    if not rules:
        return None
    out: dict[str, Any] = {}
    for name, since in rules:
        t0 = st.times.get(since)
        if t0 is not None:
            out[name] = _rnd(t_s - t0, _TIME_SCALE)
    if p.kind == "request" and phase == "finished":
        out["tpot_s"] = _tpot(full, st, t_s)
    return out


def _subject_key(p: _Plan, get: Callable[[str], Any]) -> Any:
    s = p.subject
    return get(s[0]) if len(s) == 1 else tuple(get(n) for n in s)


def _same(v: Any, r: Any) -> bool:
    return v is r or (type(v) is type(r) and v == r)


#: A derived duration is left out when the difference of the recorded (rounded) times
#: is within this of it: the reader's value is then off by at most 1.5 us.
_DERIVED_TOLERANCE_S = 1.0000001e-6


def _close_enough(v: Any, dv: Any) -> bool:
    if v is None or dv is None:
        return v is dv
    return type(v) is float and type(dv) is float and abs(v - dv) <= _DERIVED_TOLERANCE_S


# -- packing: lines that say little, written inside another ---------------------------
#: A workflow's `started` line carries the `declared` lines of its stages that follow it
#: at the same time, as `stages` (each without kind, t_s and workflow_id).
STAGES = "stages"
#: A request's first line carries the `started` line of its stage when that line came
#: right before it and says nothing else (a one-call stage), as its time.
STAGE_STARTED = "stage_started_t_s"
#: A request's `finished`/`failed` line carries its `first_token` line (as an object
#: without kind, request_id and phase) ...
FIRST_TOKEN = "first_token"
#: ... and the `finished` line of a one-call stage whose `started` it carried, as its
#: time (the stage's line is read back right after the request's).
STAGE_FINISHED = "stage_finished_t_s"
#: On a line the recorder wrote in place of an event it could not encode: both sides
#: forget every subject there.
RESET = "codec_reset"
PACKING_KEYS = frozenset({STAGES, STAGE_STARTED, FIRST_TOKEN, STAGE_FINISHED, RESET})

_MINIMAL_STAGE = frozenset({"kind", "t_s", "workflow_id", "node"})  # + phase if written
_RELEASING_KINDS = frozenset({"request", "stage"})  # may need held lines written first


def _minimal_stage(line: dict[str, Any], phase: str) -> bool:
    """A stage line with nothing but its subject and time (and phase)."""
    n = len(line)
    return (line["kind"] == "stage" and line.keys() >= _MINIMAL_STAGE
            and (n == 4 or (n == 5 and line.get("phase") == phase)))


class LineEncoder:
    """Turns events into compact line objects (dicts for orjson) of format `version` (2
    or 3), one run's worth: it remembers each subject's last line, as the reader will.
    `encode` returns the lines ready to write: a line that can travel inside a later one
    is held until it comes (`finish` returns those still held when the run ends)."""

    def __init__(self, version: int = SESSION_VERSION) -> None:
        self.version = version
        # Version 3's device cycle and finished request's queue_s reference (or None).
        self._cycle = _DeviceCycle() if version >= CYCLE_VERSION else None
        self._last_queue: Any = None  # the last finished request's queue_s
        self._subjects: dict[tuple[str, Any], _Subject] = {}
        self._pending: dict[str, Any] | None = None  # held to absorb the next line(s)
        self._one_call: dict[tuple[Any, Any], Any] = {}  # stage -> its one request id
        # request id -> its one-call stage's `finished` line (workflow id, node, time)
        self._stage_done: dict[Any, tuple[Any, Any, Any]] = {}
        # kind -> its last first line, as the next first line's reference (field order)
        self._last_ref: dict[str, list[Any]] = {}
        self._last_reason: Any = None  # the last finished request's reason
        self._stage_done_by_stage: dict[tuple[Any, Any], Any] = {}  # stage -> request id
        self._was_first = False  # the event just compacted was its subject's first line
        self._stage_label_at = plan(EVENT_KINDS["stage"]).at[4]  # in a stage's references

    def reset(self) -> dict[str, Any]:
        """Forget every subject (after a line could not be written); the packing key to
        put on the line written instead, so the reader forgets them too."""
        self._subjects.clear()
        self._last_ref.clear()
        self._last_reason = None
        self._last_queue = None
        if self._cycle is not None:
            self._cycle = _DeviceCycle()
        self._pending = None
        self._one_call.clear()
        self._stage_done.clear()
        self._stage_done_by_stage.clear()
        return {RESET: True}

    def finish(self) -> list[dict[str, Any]]:
        """The lines still held back, as lines of their own (the run is over)."""
        out = [] if self._pending is None else [self._pending]
        self._pending = None
        for wid, node, t in self._stage_done.values():
            out.append({"kind": "stage", "t_s": t, "workflow_id": wid, "node": node,
                        "phase": "finished"})
        self._stage_done.clear()
        self._stage_done_by_stage.clear()
        return out

    def _release(self, ev: Event) -> list[dict[str, Any]]:
        """Held lines that must be written before `ev`'s: a line of the same subject is
        coming that will not carry them (both sides must see a subject's lines in the
        order they were encoded)."""
        stage = (getattr(ev, "workflow_id", None), getattr(ev, "node", None))
        held = self._stage_done_by_stage.get(stage)
        if held is None:
            return []
        if (ev.kind == "request" and getattr(ev, "request_id", None) == held
                and getattr(ev, "phase", None) in ("finished", "failed")):
            return []  # the request's last line, which carries it
        del self._stage_done_by_stage[stage]
        wid, node, t = self._stage_done.pop(held)
        return [{"kind": "stage", "t_s": t, "workflow_id": wid, "node": node,
                 "phase": "finished"}]

    def encode(self, ev: Event) -> list[dict[str, Any]]:
        p = _PLANS.get(type(ev))
        if p is not None and p.telemetry:  # 40% of a run's events: the short path
            line = self._telemetry(ev, p)
            pend = self._pending
            if pend is None:
                return [line]
            self._pending = None  # nothing packs into a held line but what it holds
            return [pend, line]
        out = (self._release(ev) if self._stage_done and ev.kind in _RELEASING_KINDS
               else [])
        line, info = self._compact(ev)
        pend = self._pending
        if pend is not None:
            self._pending = None
            if pend["kind"] == "workflow":
                if (line["kind"] == "stage" and "phase" not in line
                        and line["t_s"] == pend["t_s"]
                        and line["workflow_id"] == pend["workflow_id"]):
                    pend.setdefault(STAGES, []).append(
                        {k: v for k, v in line.items()
                         if k not in ("kind", "t_s", "workflow_id")})
                    self._pending = pend
                    return out
            elif pend["kind"] == "stage":
                if (line["kind"] == "request" and info is not None
                        and info[0] == "submitted" and "phase" not in line
                        and info[1] == pend["workflow_id"] and info[2] == pend["node"]):
                    # The held line is a one-call stage's `started`: its request follows.
                    line[STAGE_STARTED] = pend["t_s"]
                    self._one_call[(pend["workflow_id"], pend["node"])] = line["request_id"]
                    out.append(line)
                    return out
            elif (_minimal_stage(line, "finished") and info is not None
                  and info[0] == "finished"
                  and self._one_call.get((line["workflow_id"], line["node"]), _NONE)
                  == pend["request_id"]):
                # The held line is the request of this one-call stage, just finished.
                del self._one_call[(line["workflow_id"], line["node"])]
                pend[STAGE_FINISHED] = line["t_s"]
                out.append(pend)
                return out
            out.append(pend)
        kind = line["kind"]
        if kind == "workflow":
            if "phase" not in line:
                self._pending = line
                return out
        elif kind == "stage" and info is not None:
            phase = info[0]
            if phase == "started" and _minimal_stage(line, "started"):
                self._pending = line
                return out
            if phase in ("finished", "failed"):
                stage = (line["workflow_id"], line["node"])
                rid = self._one_call.pop(stage, _NONE)
                if (phase == "finished" and rid is not _NONE and not self._was_first
                        and _minimal_stage(line, "finished")
                        and ("request", rid) in self._subjects):
                    # Its request has not finished yet (its line waits for its energy):
                    # the stage's line goes with the request's.
                    self._stage_done[rid] = (*stage, line["t_s"])
                    self._stage_done_by_stage[stage] = rid
                    return out
        elif kind == "request" and info is not None:
            rid = line["request_id"]
            phase = info[0]
            # A `first_token` line is written at its time, not carried by the request's
            # last line: readers (stats per knob segment, replay, seek) need the stream in
            # time order, and a request may run for minutes after its first token. The
            # reader still takes a `first_token` object on a last line (files written so).
            if phase in ("finished", "failed"):
                done = self._stage_done.pop(rid, None)
                if done is not None:
                    del self._stage_done_by_stage[done[0], done[1]]
                    line[STAGE_FINISHED] = done[2]
                elif self._one_call.get((info[1], info[2])) == rid:
                    self._pending = line  # its stage's `finished` may come next
                    return out
        out.append(line)
        return out

    def _compact(self, ev: Event) -> tuple[dict[str, Any], tuple[Any, Any, Any] | None]:
        """The event's compact line, and for a subject's event its (phase, workflow id,
        node). Runs for every event of a run, so it is plain code over lists in field
        order: the reference of each subject is kept ready to compare in one pass."""
        cls = type(ev)
        p = _PLANS.get(cls) or plan(cls)
        t_s = ev.t_s
        if type(t_s) is float:
            try:  # noqa: SIM105 - suppress() costs more than the rounding
                t_s = round(t_s * _TIME_SCALE) / _TIME_SCALE
            except (ValueError, OverflowError):
                pass
        vals = p.values(ev)
        out: dict[str, Any] = {"kind": p.kind, "t_s": t_s}
        if not p.subject:
            p.diff(vals, p.ref_values, out)
            return out, None
        kind = p.kind
        sub = p.subject_at
        key = (kind, vals[sub[0]] if len(sub) == 1 else tuple(vals[i] for i in sub))
        st = self._subjects.get(key)
        i_phase, i_wid, i_node, i_rid, _, i_out, i_reason, i_tpot, i_queue, i_dev = p.at
        phase = vals[i_phase] if i_phase >= 0 else None
        ref: list[Any]
        if st is not None:
            self._was_first = False
            ref = st.values  # replaced below, so it may be changed in place
            rules = (p.derived_at.get(phase) if p.derived_at and type(phase) is str
                     and type(t_s) in (float, int) else None)
            if rules:
                times = st.times
                for i, since in rules:
                    t0 = times.get(since)
                    if t0 is not None:
                        dv = _rnd(t_s - t0, _TIME_SCALE)
                        if _close_enough(vals[i], dv):
                            ref[i] = vals[i] = dv  # what the reader will have
                        else:
                            ref[i] = _NONE
                if i_tpot >= 0 and phase == "finished":
                    t_first = times.get("first_token")
                    n = vals[i_out]
                    tpot = (None if t_first is None or type(n) is not int or n <= 1
                            else _rnd((t_s - t_first) / (n - 1), _TIME_SCALE))
                    if _close_enough(vals[i_tpot], tpot):
                        ref[i_tpot] = vals[i_tpot] = tpot
                    else:
                        ref[i_tpot] = _NONE
        else:
            self._was_first = True
            last = self._last_ref.get(kind)
            ref = list(p.ref_values if last is None else last)
            if i_rid >= 0:
                self._request_refs(ref, p, vals[i_rid], vals[i_wid], vals[i_node])
            last = vals.copy()
            for i in sub:
                last[i] = _NONE  # always written
            self._last_ref[kind] = last
        if i_reason >= 0 and phase == "finished" and i_rid >= 0:
            ref[i_reason], self._last_reason = self._last_reason, vals[i_reason]
            if self._cycle is not None:
                ref[i_queue], self._last_queue = self._last_queue, vals[i_queue]
        elif i_dev >= 0 and kind == "sample" and self._cycle is not None:
            cycle = self._cycle
            ref[i_dev] = cycle.next  # left out when it is the next in turn
            cycle.seen(vals[i_dev])
        p.diff(vals, ref, out)
        info = (phase, vals[i_wid] if i_wid >= 0 else None, vals[i_node] if i_node >= 0 else None)
        if phase in p.last_phases:
            if st is not None:
                del self._subjects[key]
        else:
            if st is None:
                st = self._subjects[key] = _Subject()
            for i in sub:
                vals[i] = _NONE  # always written
            if type(phase) is str:
                st.times[phase] = t_s
                after = NEXT_PHASE.get((kind, phase))
                if after is not None:
                    vals[i_phase] = after  # a phase in order is left out
            st.values = vals
        return out, info

    def _telemetry(self, ev: Event, p: _Plan) -> dict[str, Any]:
        """_compact() for a kind without phases whose subject is one field (samples,
        engine states): the same line, by a shorter path."""
        t_s = ev.t_s
        if type(t_s) is float:
            try:  # noqa: SIM105
                t_s = round(t_s * _TIME_SCALE) / _TIME_SCALE
            except (ValueError, OverflowError):
                pass
        vals = p.values(ev)
        i = p.subject_at[0]
        kind = p.kind
        key = (kind, vals[i])
        st = self._subjects.get(key)
        ref: list[Any]
        if st is not None:
            self._was_first = False
            ref = st.values  # replaced below, so it may be changed in place
        else:
            self._was_first = True
            last = self._last_ref.get(kind)
            ref = list(p.ref_values if last is None else last)
            last = vals.copy()
            last[i] = _NONE  # always written
            self._last_ref[kind] = last
            st = self._subjects[key] = _Subject()
        cycle = self._cycle
        if cycle is not None and kind == "sample" and p.at[9] == i:
            ref[i] = cycle.next  # the device: left out when it is the next in turn
            cycle.seen(vals[i])
        out: dict[str, Any] = {"kind": kind, "t_s": t_s}
        p.diff(vals, ref, out)
        vals[i] = _NONE  # always written
        st.values = vals
        return out

    def _request_refs(self, ref: list[Any], p: _Plan, rid: Any, wid: Any, node: Any) -> None:
        """A request's first line: its workflow id's reference is its request id's
        prefix, its stage label's that of its stage (first_request_refs, encoder side)."""
        prefix = rid.rpartition(".")[0] if type(rid) is str else ""
        ref[p.at[1]] = prefix
        st = self._subjects.get(("stage", (wid, node)))
        if st is not None:
            ref[p.at[4]] = st.values[self._stage_label_at]


def first_request_refs(subjects: dict[tuple[str, Any], _Subject], rid: Any, wid: Any,
                       node: Any) -> dict[str, Any]:
    """Where a request's first line takes its reference from elsewhere: its workflow id
    is its request id's prefix (`WORKFLOW.N`, as workflows number their calls), its
    stage label that of its stage (`wid`, `node`; `wid` None: the prefix) if recorded."""
    prefix = rid.rpartition(".")[0] if type(rid) is str else ""
    refs: dict[str, Any] = {"workflow_id": prefix}
    st = subjects.get(("stage", (prefix if wid is None else wid, node)))
    if st is not None:
        refs["stage"] = st.fields.get("stage", "")
    return refs


def unpack(d: dict[str, Any]) -> list[dict[str, Any]] | str:
    """The lines packed into line `d` (version 2), in their order: `d` alone when
    nothing is; a phrase saying what is wrong when the packing is malformed. The stage
    lines packed in a request line lack workflow_id and node (the request's)."""
    kind = d.get("kind")
    if kind == "workflow":
        stages = d.pop(STAGES, None)
        if stages is None:
            return [d]
        if type(stages) is not list or not all(type(s) is dict for s in stages):
            return f"{STAGES} is not a list of objects"
        t_s, wid = d.get("t_s", 0.0), d.get("workflow_id", "")
        out = [d]
        for s in stages:
            if s.keys() & {"kind", "t_s", "workflow_id"}:
                return f"{STAGES} holds a kind, t_s or workflow_id"
            out.append({"kind": "stage", "t_s": t_s, "workflow_id": wid, **s})
        return out
    if kind != "request":
        return [d]
    before = d.pop(STAGE_STARTED, None)
    after = d.pop(STAGE_FINISHED, None)
    first = d.pop(FIRST_TOKEN, None)
    for name, v in ((STAGE_STARTED, before), (STAGE_FINISHED, after)):
        if v is not None and (type(v) not in (float, int) or not -1.0 <= v <= 1e8):
            return f"{name} is not a time"
    if first is not None and (type(first) is not dict
                              or first.keys() & {"kind", "request_id", "phase"}):
        return f"{FIRST_TOKEN} is not an object of first_token fields"
    out = []
    if before is not None:
        out.append({"kind": "stage", "t_s": before, "phase": "started"})
    if first is not None:
        out.append({"kind": "request", "request_id": d.get("request_id"),
                    "phase": "first_token", **first})
    out.append(d)
    if after is not None:
        out.append({"kind": "stage", "t_s": after, "phase": "finished"})
    return out


class LineDecoder:
    """Restores compact line objects (format `version`, 2 or 3) to full field dicts, line
    by line, in file order."""

    def __init__(self, version: int = SESSION_VERSION) -> None:
        self.version = version
        self._cycle = _DeviceCycle() if version >= CYCLE_VERSION else None
        self._last_queue: Any = None
        self._subjects: dict[tuple[str, Any], _Subject] = {}
        self._last_first: dict[str, dict[str, Any]] = {}
        self._last_reason: Any = None

    def reset(self) -> None:
        self._subjects.clear()
        self._last_first.clear()
        self._last_reason = None
        self._last_queue = None
        if self._cycle is not None:
            self._cycle = _DeviceCycle()

    def request_identity(self, d: dict[str, Any]) -> tuple[Any, Any]:
        """The workflow id and node of request line `d` as decode() will restore them
        (the stage lines packed into it are the stage of that workflow and node)."""
        p = plan(EVENT_KINDS["request"])
        st = self._subjects.get(("request", d.get("request_id")))
        if st is not None:
            wid = d.get("workflow_id", st.fields.get("workflow_id", ""))
            node = d.get("node", st.fields.get("node", ""))
            return wid, node
        rid = d.get("request_id")
        wid = d.get("workflow_id", rid.rpartition(".")[0] if type(rid) is str else "")
        base = self._last_first.get("request") or p.base
        return wid, d.get("node", base.get("node", ""))

    def decode(self, cls: type[Event], d: dict[str, Any]) -> dict[str, Any]:
        """`d` with what the writer left out put back (a new dict when anything was).
        `d` holds `kind` and `t_s`; its values have been type-checked. The dict returned
        is kept as the subject's reference: the caller may remove `kind`, nothing else."""
        p = _PLANS.get(cls) or plan(cls)
        if not p.subject:
            return d
        kind = p.kind
        one = p.one_subject
        cycle = self._cycle
        if cycle is not None and kind == "sample":
            if "device" not in d:
                d["device"] = "" if cycle.next is _NONE else cycle.next
            cycle.seen(d["device"])
        key = (kind, d.get(one) if one is not None else tuple(d.get(n) for n in p.subject))
        st = self._subjects.get(key)
        t_s = d.get("t_s", 0.0)
        if st is None:
            base = self._last_first.get(kind) or p.base
            if kind == "request":
                refs = first_request_refs(
                    self._subjects, d.get("request_id"), d.get("workflow_id"),
                    d["node"] if "node" in d else base.get("node", ""))
                full = {**base, **refs, **d}
            else:
                full = {**base, **d}
            self._last_first[kind] = full
            phase = full.get("phase")
        else:
            fields = st.fields
            full = {**fields, **d}
            if "phase" not in d:
                prev = fields.get("phase")
                if prev is not None and (kind, prev) in NEXT_PHASE:
                    full["phase"] = NEXT_PHASE[kind, prev]
            phase = full.get("phase")
            rules = (p.derived.get(phase) if p.derived and type(phase) is str
                     and type(t_s) in (float, int) else None)
            if rules:  # _derived(), inline: this runs for most lines
                times = st.times
                for name, since in rules:
                    if name not in d and (t0 := times.get(since)) is not None:
                        full[name] = _rnd(t_s - t0, _TIME_SCALE)
                if kind == "request" and phase == "finished" and "tpot_s" not in d:
                    full["tpot_s"] = _tpot(full, st, t_s)
        if kind == "request" and phase == "finished":
            if "reason" not in d:
                full["reason"] = self._last_reason
            self._last_reason = full["reason"]
            if cycle is not None:
                if "queue_s" not in d:
                    full["queue_s"] = self._last_queue
                self._last_queue = full["queue_s"]
        if phase in p.last_phases:
            if st is not None:
                del self._subjects[key]
        else:
            if st is None:
                st = self._subjects[key] = _Subject()
            # A field absent here is the dataclass's default on both sides; `kind` and
            # `t_s` are the next line's own.
            st.fields = full
            if type(phase) is str:
                st.times[phase] = t_s
        return full
