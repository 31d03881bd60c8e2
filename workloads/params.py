"""Workload parameters from the user (`-p KEY=VALUE`): a params dataclass is an option
schema (app.core.options) whose owner is the workload and whose options are called
parameters, so `-p` is checked, and worded, as `-E` is."""

from __future__ import annotations

from typing import Any, TypeVar

from app.core.options import OptionSchema, option

T = TypeVar("T")

#: Generous bounds on any one parameter: past them a value is a typo, and honouring it
#: would only exhaust memory or time (a million-token prompt is already beyond models).
MAX_TOKENS = 1_000_000
MAX_CONCURRENCY = 10_000  # workflows in flight in a closed loop
MAX_RATE = 10_000.0  # workflows per second in an open loop


def bounded(default: Any, lo: float, hi: float, *, lo_open: bool = False) -> Any:
    """A params field with a range, checked by `build_params` and `check_ranges`."""
    return option(default, lo=lo, hi=hi, lo_open=lo_open)


def _schema(cls: type[T], workload: str) -> OptionSchema[T]:
    return OptionSchema.of(cls, workload, noun="parameter")


def check_ranges(obj: Any, workload: str) -> None:
    """One-line ValueError for a field out of its declared range, or not finite."""
    _schema(type(obj), workload).check_ranges(obj)


def build_params(cls: type[T], values: dict[str, Any], workload: str) -> T:
    """`cls(**values)` for a params dataclass, with unknown keys, wrong types and values
    out of range reported as one-line ValueErrors naming the workload and the parameter;
    then the dataclass's own `validate()`, if it has one, is run."""
    obj = _schema(cls, workload).build(values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj
