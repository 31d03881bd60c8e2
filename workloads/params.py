"""Workload parameters from the user (`-p KEY=VALUE`): typed, with one-line errors."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, TypeVar

T = TypeVar("T")

#: Generous bounds on any one parameter: past them a value is a typo, and honouring it
#: would only exhaust memory or time (a million-token prompt is already beyond models).
MAX_TOKENS = 1_000_000
MAX_CONCURRENCY = 10_000  # workflows in flight in a closed loop
MAX_RATE = 10_000.0  # workflows per second in an open loop


def bounded(default: Any, lo: float, hi: float, *, lo_open: bool = False) -> Any:
    """A params field with a range, checked by `build_params` and `check_ranges`."""
    return dataclasses.field(default=default, metadata={"range": (lo, hi, lo_open)})


def check_ranges(obj: Any, workload: str) -> None:
    """One-line ValueError for a field out of its declared range, or not finite."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        rng = f.metadata.get("range")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{workload}: parameter {f.name} must be a finite number,"
                             f" got {value}")
        if rng is None:
            continue
        lo, hi, lo_open = rng
        if value < lo or value > hi or (lo_open and value == lo):
            span = f"more than {lo:g}, up to {hi:g}" if lo_open else f"{lo:g}-{hi:g}"
            raise ValueError(f"{workload}: parameter {f.name} = {value:g} is out of range"
                             f" ({span})")


def build_params(cls: type[T], values: dict[str, Any], workload: str) -> T:
    """`cls(**values)` for a params dataclass, with unknown keys and wrong types
    reported as one-line ValueErrors naming the workload and the parameter; ints are
    accepted for floats, and the dataclass's own `validate()` is run."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{workload}: unknown parameter {unknown[0]!r} "
                         f"(known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        kwargs[key] = _coerce(key, value, hints[key], workload)
    obj = cls(**kwargs)
    check_ranges(obj, workload)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def _coerce(key: str, value: Any, hint: Any, workload: str) -> Any:
    allowed = typing.get_args(hint) or (hint,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if bool in allowed and isinstance(value, bool):
        return value
    if str in allowed and isinstance(value, str):
        return value
    want = " or ".join(getattr(a, "__name__", str(a)) for a in allowed if a is not type(None))
    raise ValueError(f"{workload}: parameter {key} must be {want}, got {value!r}")
