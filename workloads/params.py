"""Workload parameters from the user (`-p KEY=VALUE`): typed, with one-line errors."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


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
