"""Typed options for plugins: one schema for engine (`-E`), meter and workload (`-p`)
settings, so that every plugin checks its input the same way and says so in one line.

A plugin declares its options as a dataclass whose fields are made with `option(...)`
(the name and type come from the field, the rest from the call), then builds it:

    @dataclass(slots=True)
    class SimOptions:
        max_num_seqs: int = option(1024, "requests in one batch", lo=1)

    OPTIONS = OptionSchema.of(SimOptions, "sim engine")
    opts = OPTIONS.build({"max_num_seqs": "64"})  # SimOptions(max_num_seqs=64)

Values arrive from the CLI (numbers already parsed), JSON, TOML or Python, so a value
is coerced when nothing is lost: "64" or 64.0 for an int, 1 for a float, "true" for a
bool, 7 for a string (the CLI reads `-E model=7` as a number). NaN and infinities are
never accepted, and `None` means "not given". Errors are `OptionError`s (ValueError)
of one line: `OWNER: option NAME must be an integer, got 'many'`, `OWNER: option NAME
= 0 is out of range (>= 1)`, `OWNER: unknown option 'x' (known: a, b)`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_META = "wattflow.option"


class OptionError(ValueError):
    """A bad option value or name; the message is one line for the user."""


class _Required:
    """The default of an option that has none (a dataclass field without a default)."""

    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()


@dataclass(frozen=True, slots=True)
class _Spec:
    """What `option()` records on a field; the field adds the name, type and default."""

    help: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[str, ...] = ()


def option(default: Any = REQUIRED, help: str = "", *, lo: float | None = None,
           hi: float | None = None, lo_open: bool = False,
           choices: Iterable[str] = ()) -> Any:
    """A dataclass field declaring an option. `lo`/`hi` bound a number (`lo_open`:
    `lo` itself excluded); `choices` lists the strings allowed."""
    spec = _Spec(help, lo, hi, lo_open, tuple(choices))
    if default is REQUIRED:
        return dataclasses.field(metadata={_META: spec})
    return dataclasses.field(default=default, metadata={_META: spec})


# -- types ------------------------------------------------------------------------------
_SKIP = object()  # a converter's "not this type"


def _to_bool(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    return _SKIP


def _to_int(v: Any) -> Any:
    if isinstance(v, bool):
        return _SKIP
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if v.is_integer() else _SKIP  # is_integer is False for nan and inf
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            return _SKIP
    return _SKIP


def _to_float(v: Any) -> Any:
    if isinstance(v, bool):
        return _SKIP
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return _SKIP
    return _SKIP


def _to_str(v: Any) -> Any:
    if isinstance(v, str):
        return v
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)  # `-E model=7`: the CLI made a number of the user's text
    return _SKIP


def _to_dict(v: Any) -> Any:
    return dict(v) if isinstance(v, Mapping) else _SKIP


@dataclass(frozen=True, slots=True)
class _Kind:
    name: str  # as `doctor` shows it
    want: str  # as an error says it
    convert: Callable[[Any], Any]


_KINDS: dict[type, _Kind] = {
    bool: _Kind("bool", "true or false", _to_bool),
    int: _Kind("int", "an integer", _to_int),
    float: _Kind("float", "a number", _to_float),
    str: _Kind("str", "a string", _to_str),
    dict: _Kind("dict", "a table", _to_dict),
}


def _list_kind(item: _Kind) -> _Kind:
    def convert(v: Any) -> Any:
        if not isinstance(v, list | tuple):
            return _SKIP
        out = [item.convert(x) for x in v]
        return _SKIP if any(x is _SKIP for x in out) else out

    plural = {"an integer": "integers", "a number": "numbers", "a string": "strings"}
    return _Kind(f"list[{item.name}]", f"a list of {plural.get(item.want, item.want)}",
                 convert)


def _kinds(hint: Any) -> tuple[_Kind, ...]:
    """The kinds a type hint allows, in its order (None is "not given", never a value)."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or \
        typing.get_origin(hint) is typing.Union else (hint,)
    kinds: list[_Kind] = []
    for a in args:
        if a is type(None):
            continue
        origin = typing.get_origin(a) or a
        if origin is list:
            (item,) = typing.get_args(a) or (str,)
            kinds.append(_list_kind(_KINDS[item]))
        elif origin in _KINDS:
            kinds.append(_KINDS[origin])
        else:
            raise TypeError(f"an option cannot have type {a!r}")
    return tuple(kinds)


# -- one option ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Option:
    """One declared option: what it is called, takes, defaults to, means and allows."""

    name: str
    kinds: tuple[_Kind, ...]
    default: Any = None
    help: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[str, ...] = ()

    @property
    def type_name(self) -> str:
        return "|".join(k.name for k in self.kinds)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def span(self) -> str:
        """The allowed range in words: "1-1023", ">= 1", "more than 0, up to 10000"."""
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            lo_s, hi_s = format_number(lo), format_number(hi)
            return f"more than {lo_s}, up to {hi_s}" if self.lo_open else f"{lo_s}-{hi_s}"
        if lo is not None:
            return f"> {format_number(lo)}" if self.lo_open else f">= {format_number(lo)}"
        return "" if hi is None else f"<= {format_number(hi)}"

    def describe(self) -> str:
        """One line for `wattflow doctor`: name, type, bounds or choices, default, help."""
        what = self.type_name
        if self.choices:
            what += " " + "|".join(self.choices)
        elif self.span():
            what += " " + self.span()
        default = ("required" if self.required else "optional" if self.default is None
                   else f"default {self.default!r}")
        return f"{self.name} ({what}; {default})" + (f": {self.help}" if self.help else "")

    def coerce(self, value: Any, label: str) -> Any:
        """`value` as this option's type, within its bounds; `label` starts any error
        ("sim engine: option max_num_seqs")."""
        for kind in self.kinds:
            out = kind.convert(value)
            if out is not _SKIP:
                break
        else:
            want = " or ".join(k.want for k in self.kinds)
            raise OptionError(f"{label} must be {want}, got {value!r}")
        if self.choices and out not in self.choices:
            raise OptionError(f"{label} must be {_either(self.choices)}, got {out!r}")
        self.check_range(out, label)
        return out

    def check_range(self, value: Any, label: str) -> None:
        """A number must be finite and within the bounds; anything else passes."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionError(f"{label} must be a finite number, got {value}")
        lo, hi = self.lo, self.hi
        if (lo is not None and (value < lo or (self.lo_open and value == lo))) or (
                hi is not None and value > hi):
            raise OptionError(f"{label} = {format_number(value)} is out of range ({self.span()})")


def format_number(v: float) -> str:
    """A bound or value as a user typed it: whole numbers in full (100000000, not 1e+08).
    Every range in an error message (options, knobs, flags) is written with it."""
    if isinstance(v, int) or (math.isfinite(v) and float(v).is_integer() and abs(v) < 1e15):
        return str(int(v))
    return f"{v:g}"



def _either(choices: tuple[str, ...]) -> str:
    if len(choices) == 2:
        return f"{choices[0]} or {choices[1]}"
    return "one of " + ", ".join(choices)


_DECLARED: dict[type, tuple[Option, ...]] = {}


def _options_of(cls: type) -> tuple[Option, ...]:
    """The options a dataclass declares (read once per class: workloads build theirs
    for every run)."""
    if cls in _DECLARED:
        return _DECLARED[cls]
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec: _Spec = f.metadata.get(_META, _Spec())
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = REQUIRED
        kinds = _kinds(hints[f.name])
        out.append(Option(f.name, kinds, default, spec.help, spec.lo, spec.hi, spec.lo_open,
                          spec.choices))
    _DECLARED[cls] = tuple(out)
    return _DECLARED[cls]


# -- a plugin's options ----------------------------------------------------------------
@dataclass(frozen=True)
class OptionSchema(Generic[T]):
    """The options of one plugin. `owner` names it in errors ("sim engine"), `noun` is
    what an option is called there ("option", "parameter"); errors are raised as
    `error`, an OptionError subclass a plugin may bring (an EngineError too, say).
    `shared`: the values given are shared with other plugins (the meters all get one
    dict), so names this schema does not know are not errors."""

    cls: type[T]
    owner: str
    noun: str = "option"
    error: type[OptionError] = OptionError
    shared: bool = False

    @classmethod
    def of(cls, options: type[T], owner: str, *, noun: str = "option",
           error: type[OptionError] = OptionError, shared: bool = False) -> OptionSchema[T]:
        return cls(options, owner, noun, error, shared)

    @property
    def options(self) -> tuple[Option, ...]:
        return _options_of(self.cls)

    def names(self) -> list[str]:
        return sorted(o.name for o in self.options)

    def label(self, name: str) -> str:
        return f"{self.owner}: {self.noun} {name}"

    def parse(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The values given (None: not given), typed and checked; defaults are not
        filled in. Raises `self.error` with one line."""
        by_name = {o.name: o for o in self.options}
        given = {k: v for k, v in values.items() if v is not None}
        unknown = sorted(k for k in given if k not in by_name)
        if unknown and not self.shared:
            s = "s" if len(unknown) > 1 else ""
            raise self.error(f"{self.owner}: unknown {self.noun}{s} "
                             f"{', '.join(repr(k) for k in unknown)} "
                             f"(known: {', '.join(self.names())})")
        out: dict[str, Any] = {}
        for key, value in given.items():
            opt = by_name.get(key)
            if opt is None:
                continue
            try:
                out[key] = opt.coerce(value, self.label(key))
            except OptionError as exc:
                raise self.error(str(exc)) from None
        return out

    def build(self, values: Mapping[str, Any]) -> T:
        """The options dataclass from `values`; a required option left out is an error."""
        parsed = self.parse(values)
        missing = [o.name for o in self.options if o.required and o.name not in parsed]
        if missing:
            raise self.error(f"{self.label(missing[0])} is required")
        return self.cls(**parsed)

    def check_ranges(self, obj: Any) -> None:
        """Every number of a built `obj` finite and within its bounds (after a plugin
        changed or derived some)."""
        for opt in self.options:
            try:
                opt.check_range(getattr(obj, opt.name), self.label(opt.name))
            except OptionError as exc:
                raise self.error(str(exc)) from None

    def describe(self) -> list[str]:
        return [o.describe() for o in sorted(self.options, key=lambda o: o.name)]
