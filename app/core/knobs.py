"""The energy knobs: one spec per knob, one registry, read by everything that shows or
changes one (CLI flags, `--at`, `sweep --grid`, the dashboard's keys and `k` dialog, the
report, the session header).

A spec says what a knob is: its unit, its bounds and where tighter bounds come from at
run time (`device`: the GPUs' power-limit range; `engine`: what the engine accepts), what
"one step" is, what unset means, the ability it needs, and how it is applied: a function
of a `KnobTarget` (the runner implements it). `Runner.set_knob` is the one path that
changes a knob; adding a knob is a spec here plus, if it needs one, a target method.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from app.core.options import format_number as num


class KnobError(ValueError):
    """An invalid knob name or value; the message is one line for the user."""


class KnobTarget(Protocol):
    """What knobs act on: the runner. Each method applies a validated value and returns
    (the value now in force, the value it replaced)."""

    def set_power_cap(self, watts: float | None) -> tuple[float | None, float | None]: ...

    def set_batch_limit(self, n: int) -> tuple[float | None, float | None]: ...

    def set_rate(self, per_s: float | None) -> tuple[float | None, float | None]: ...

    def set_max_tokens(self, n: int | None) -> tuple[float | None, float | None]: ...

    def restart_engine(self, knob: str, value: int) -> None:
        """Drain, restart the engine with `knob=value`, resume: the knob event follows
        once the restart is done (asynchronous)."""
        ...


Applied = tuple[float | None, float | None] | None  # None: the change is under way


@dataclass(frozen=True, slots=True)
class Step:
    """One step up (down is the inverse): add `amount`, or multiply by it."""

    kind: Literal["add", "scale"]
    amount: float


@dataclass(frozen=True, slots=True)
class KnobSpec:
    name: str
    unit: str  # shown after values: "W", "/s", "tok", ""
    integer: bool
    minimum: float
    maximum: float
    help: str
    example: str  # a typical value, for `k`'s help
    apply: Callable[[KnobTarget, float | None], Applied]
    flag: str | None = None  # its `wattflow run` flag, if it has one
    minimum_open: bool = False  # the minimum itself is excluded (rate: more than 0)
    unset: str | None = None  # what "none" means; None: it cannot be unset
    step: Step | None = None  # the dashboard's one step (keys)
    bounds_from: Literal["spec", "device", "engine"] = "spec"
    needs: Literal["power_control", "engine_restart"] | None = None
    label: str = ""  # a shorter name for narrow panels; the name is what `k` takes

    def range_text(self, bounds: tuple[float, float] | None = None) -> str:
        lo, hi = bounds or (self.minimum, self.maximum)
        u = f" {self.unit}" if self.unit in ("W", "tok") else self.unit
        if self.minimum_open and lo == self.minimum:
            return f"more than {num(lo)}{u}, up to {num(hi)}{u}"
        return f"{num(lo)}-{num(hi)}{u}"


def _power_cap(t: KnobTarget, v: float | None) -> Applied:
    return t.set_power_cap(v)


def _batch_limit(t: KnobTarget, v: float | None) -> Applied:
    assert v is not None  # cannot be unset
    return t.set_batch_limit(int(v))


def _rate(t: KnobTarget, v: float | None) -> Applied:
    return t.set_rate(v)


def _max_tokens(t: KnobTarget, v: float | None) -> Applied:
    return t.set_max_tokens(None if v is None else int(v))


def _restart(name: str) -> Callable[[KnobTarget, float | None], Applied]:
    def apply(t: KnobTarget, v: float | None) -> Applied:
        assert v is not None
        t.restart_engine(name, int(v))
        return None

    return apply


_SPECS: tuple[KnobSpec, ...] = (
    KnobSpec("power_cap", "W", False, 1.0, 2000.0, "GPU power limit, watts", "300",
             _power_cap, flag="--power-cap", unset="as before the run",
             step=Step("add", 25.0), bounds_from="device", needs="power_control"),
    KnobSpec("batch_limit", "", True, 1, 65536, "requests in flight at most", "32",
             _batch_limit, flag="--batch-limit", step=Step("scale", 2.0)),
    KnobSpec("rate", "/s", False, 0.0, 10_000.0, "workflow arrivals per second (Poisson)",
             "2", _rate, flag="--rate", minimum_open=True, unset="closed loop"),
    KnobSpec("max_tokens", "tok", True, 1, 1_000_000, "cap on output tokens per call", "256",
             _max_tokens, flag="--max-tokens", unset="workload's"),
    # The engine's own batch size: changing it drains and restarts the engine.
    KnobSpec("max_num_seqs", "", True, 1, 65536,
             "the engine's own max_num_seqs (drain, restart, resume)", "128",
             _restart("max_num_seqs"), bounds_from="engine", needs="engine_restart"),
    KnobSpec("max_num_batched_tokens", "tok", True, 16, 1_000_000,
             "the engine's tokens per step (drain, restart, resume)", "8192",
             _restart("max_num_batched_tokens"), bounds_from="engine", needs="engine_restart",
             label="batched_tokens"),
)

SPECS: dict[str, KnobSpec] = {s.name: s for s in _SPECS}
KNOB_NAMES: tuple[str, ...] = tuple(SPECS)


def spec(name: str) -> KnobSpec:
    s = SPECS.get(name)
    if s is None:
        raise KnobError(f"unknown knob {name!r} (knobs: {', '.join(KNOB_NAMES)})")
    return s


def resolve(name: str) -> str:
    """A knob's name from what a user typed: exact, or a unique prefix (`max_n`)."""
    name = name.strip().lower().replace("-", "_")
    if name in SPECS:
        return name
    matches = [k for k in KNOB_NAMES if k.startswith(name)] if name else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise KnobError(f"{name!r} could be {' or '.join(matches)}: type more of it")
    raise KnobError(f"unknown knob {name!r} (knobs: {', '.join(KNOB_NAMES)})")


def validate(name: str, value: float | None,
             bounds: tuple[float, float] | None = None) -> float | None:
    """The value as the knob takes it, or KnobError (one line). `bounds` are the ones in
    force at run time (the GPU's range for the power cap), inside the spec's own."""
    s = spec(name)
    if value is None:
        if s.unset is not None:
            return None
        raise KnobError(f"{name} needs a value ({s.range_text(bounds)})")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise KnobError(f"{name} must be a number, got {value!r}")
    if s.integer and float(value) != int(value):
        raise KnobError(f"{name} must be a whole number, got {value}")
    lo, hi = s.minimum, s.maximum
    if not lo <= value <= hi or (s.minimum_open and value == lo):
        raise KnobError(f"{name} must be {_between(s)}, got {num(value)}")
    if bounds is not None:
        blo, bhi = bounds
        if not blo <= value <= bhi:
            where = {"device": " for this GPU", "engine": " for this engine"}.get(s.bounds_from, "")
            raise KnobError(f"{name} {num(value)}{' ' + s.unit if s.unit == 'W' else ''} is out of"
                            f" range{where} ({s.range_text(bounds)})")
    return int(value) if s.integer else float(value)


def _between(s: KnobSpec) -> str:
    if s.minimum_open:
        return f"more than {num(s.minimum)} and at most {num(s.maximum)}"
    return f"between {num(s.minimum)} and {num(s.maximum)}"


def parse_value(name: str, text: str, bounds: tuple[float, float] | None = None) -> float | None:
    text = text.strip()
    if text.lower() in ("none", "off", "unset", ""):
        return validate(name, None, bounds)
    try:
        v = float(text.removesuffix("W").removesuffix("w"))
    except ValueError:
        raise KnobError(f"{name}: {text!r} is not a number") from None
    return validate(name, v, bounds)


def step_value(name: str, current: float | None, direction: int,
               bounds: tuple[float, float] | None = None,
               in_force: float | None = None) -> float | None:
    """One step up (`direction` > 0) or down from `current` (or from `in_force` when the
    knob is unset), clamped to the bounds in force. Returns `current` unchanged at a
    bound; KnobError for a knob without steps or with nothing to step from."""
    s = spec(name)
    if s.step is None:
        raise KnobError(f"{name} has no step keys; set it with k")
    lo, hi = bounds or (s.minimum, s.maximum)
    start = current if current is not None else in_force
    if start is None:
        raise KnobError(f"{name}: no value in force to step from")
    if s.step.kind == "add":
        new = start + direction * s.step.amount
    else:
        new = start * s.step.amount if direction > 0 else start / s.step.amount
    if s.integer:
        new = math.floor(new) if direction < 0 else math.ceil(new)
    new = min(max(new, lo), hi)
    if s.integer:
        new = int(new)
    if new == start and current is not None:
        return current
    return new


def step_text(name: str, direction: int) -> str:
    """The key's label: `-25W`, `+25W`, `½`, `×2`."""
    st = spec(name).step
    if st is None:
        return ""
    if st.kind == "add":
        return f"{'+' if direction > 0 else '-'}{st.amount:g}{spec(name).unit}"
    if st.amount == 2:
        return "×2" if direction > 0 else "½"
    return f"×{st.amount:g}" if direction > 0 else f"÷{st.amount:g}"


def format_value(name: str, value: float | None) -> str:
    s = SPECS.get(name)
    if value is None:
        return "unset"
    unit = s.unit if s is not None else ""
    if unit in ("W", "tok"):
        return f"{value:g} {unit}"
    return f"{value:g}{unit}"


@dataclass(frozen=True, slots=True)
class ScheduledChange:
    at_s: float
    knob: str
    value: float | None


_AT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*:\s*([a-z_]+)\s*=\s*(\S+)\s*$")


def parse_at(text: str) -> ScheduledChange:
    """`SECONDS:KNOB=VALUE`, e.g. `60:power_cap=300`."""
    m = _AT.match(text)
    if not m and text.strip().startswith("-"):
        raise KnobError(f"--at {text!r}: the time must be 0 or more seconds into the run")
    if not m:
        raise KnobError(f"--at {text!r}: expected SECONDS:KNOB=VALUE, e.g. 60:power_cap=300")
    at_s, knob, value = float(m.group(1)), m.group(2), m.group(3)
    return ScheduledChange(at_s, knob, parse_value(knob, value))
