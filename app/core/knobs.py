"""The four energy knobs, their units and bounds, and a schedule for headless runs.

Values are validated here; `Runner.set_knob` is the one path that applies them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

KNOB_NAMES = ("power_cap", "batch_limit", "rate", "max_tokens", "max_num_seqs")


@dataclass(frozen=True, slots=True)
class KnobSpec:
    name: str
    unit: str
    integer: bool
    minimum: float
    maximum: float
    help: str


SPECS: dict[str, KnobSpec] = {
    "power_cap": KnobSpec("power_cap", "W", False, 1.0, 2000.0, "GPU power limit, watts"),
    "batch_limit": KnobSpec("batch_limit", "", True, 1, 65536, "requests in flight at most"),
    "rate": KnobSpec("rate", "/s", False, 0.0, 10_000.0, "workflow arrivals per second (0: closed loop)"),
    "max_tokens": KnobSpec("max_tokens", "tok", True, 1, 1_000_000, "cap on output tokens per call"),
    # The engine's own batch size: changing it drains and restarts the engine.
    "max_num_seqs": KnobSpec("max_num_seqs", "", True, 1, 65536,
                             "the engine's own max_num_seqs (drain, restart, resume)"),
}


class KnobError(ValueError):
    """An invalid knob name or value; the message is one line for the user."""


def validate(name: str, value: float | None) -> float | None:
    spec = SPECS.get(name)
    if spec is None:
        raise KnobError(f"unknown knob {name!r} (knobs: {', '.join(KNOB_NAMES)})")
    if value is None:
        if name in ("power_cap", "max_tokens", "rate"):
            return None  # unset: uncapped / workload's own lengths / closed loop
        raise KnobError(f"{name} needs a value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise KnobError(f"{name} must be a number, got {value!r}")
    if spec.integer and float(value) != int(value):
        raise KnobError(f"{name} must be a whole number, got {value}")
    if not spec.minimum <= value <= spec.maximum:
        raise KnobError(f"{name} must be between {spec.minimum:g} and {spec.maximum:g}, got {value:g}")
    return int(value) if spec.integer else float(value)


def parse_value(name: str, text: str) -> float | None:
    text = text.strip()
    if text.lower() in ("none", "off", "unset", ""):
        return validate(name, None)
    try:
        v = float(text.removesuffix("W").removesuffix("w"))
    except ValueError:
        raise KnobError(f"{name}: {text!r} is not a number") from None
    return validate(name, v)


@dataclass(frozen=True, slots=True)
class ScheduledChange:
    at_s: float
    knob: str
    value: float | None


_AT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*:\s*([a-z_]+)\s*=\s*(\S+)\s*$")


def parse_at(spec: str) -> ScheduledChange:
    """`SECONDS:KNOB=VALUE`, e.g. `60:power_cap=300`."""
    m = _AT.match(spec)
    if not m and spec.strip().startswith("-"):
        raise KnobError(f"--at {spec!r}: the time must be 0 or more seconds into the run")
    if not m:
        raise KnobError(f"--at {spec!r}: expected SECONDS:KNOB=VALUE, e.g. 60:power_cap=300")
    at_s, knob, text = float(m.group(1)), m.group(2), m.group(3)
    return ScheduledChange(at_s, knob, parse_value(knob, text))
