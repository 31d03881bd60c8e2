"""The option schema every engine, meter and workload checks its settings with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.core.options import OptionError, OptionSchema, option


@dataclass(slots=True)
class _Opts:
    name: str = option(help="what to call it")
    count: int = option(4, "how many", lo=1, hi=64)
    rate: float | None = option(None, "per second", lo=0, lo_open=True)
    fast: bool = option(False, "hurry")
    mode: str = option("a", "which", choices=("a", "b"))
    ids: list[int] | None = option(None, "which ones")
    spec: str | dict[str, Any] = option("x", "a name or a table")


SCHEMA = OptionSchema.of(_Opts, "test engine")


def test_values_are_coerced_when_nothing_is_lost() -> None:
    o = SCHEMA.build({"name": 7, "count": "8", "rate": 2, "fast": "TRUE", "ids": ["1", 2],
                      "spec": {"k": 1}})
    assert (o.name, o.count, o.rate, o.fast, o.ids, o.spec) == ("7", 8, 2.0, True, [1, 2],
                                                                  {"k": 1})
    assert SCHEMA.build({"name": Path("/m"), "count": 16.0, "rate": None}).count == 16
    assert SCHEMA.build({"name": "n"}) == _Opts(name="n")  # None and absent: the default


@pytest.mark.parametrize(("values", "message"), [
    ({"count": 0}, "test engine: option count = 0 is out of range (1-64)"),
    ({"count": 65}, "test engine: option count = 65 is out of range (1-64)"),
    ({"count": 2.5}, "test engine: option count must be an integer, got 2.5"),
    ({"count": True}, "test engine: option count must be an integer, got True"),
    ({"count": float("nan")}, "test engine: option count must be an integer, got nan"),
    ({"rate": 0}, "test engine: option rate = 0 is out of range (> 0)"),
    ({"rate": float("inf")}, "test engine: option rate must be a finite number, got inf"),
    ({"rate": "nan"}, "test engine: option rate must be a finite number, got nan"),
    ({"rate": "fast"}, "test engine: option rate must be a number, got 'fast'"),
    ({"fast": "yes"}, "test engine: option fast must be true or false, got 'yes'"),
    ({"mode": "c"}, "test engine: option mode must be a or b, got 'c'"),
    ({"ids": "0,1"}, "test engine: option ids must be a list of integers, got '0,1'"),
    ({"spec": [1]}, "test engine: option spec must be a string or a table, got [1]"),
    ({"name": True}, "test engine: option name must be a string, got True"),
    ({"colour": 1}, "test engine: unknown option 'colour' (known: count, fast, ids, mode, "
                    "name, rate, spec)"),
    ({"b": 1, "a": 2}, "test engine: unknown options 'a', 'b' (known:"),
    ({"name": None}, "test engine: option name is required"),
])
def test_errors_are_one_line_and_name_owner_option_and_expectation(
        values: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError) as err:
        SCHEMA.build({"name": "n", **values})
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_a_plugin_brings_its_own_error_class_and_shared_dicts_skip_other_names() -> None:
    class MyError(OptionError):
        pass

    mine = OptionSchema.of(_Opts, "test meter", error=MyError, shared=True)
    with pytest.raises(MyError, match="count = 0"):
        mine.build({"name": "n", "count": 0})
    assert mine.build({"name": "n", "engine": object()}).name == "n"


def test_check_ranges_covers_values_set_after_building() -> None:
    o = SCHEMA.build({"name": "n"})
    o.count = 100
    with pytest.raises(OptionError, match="count = 100 is out of range"):
        SCHEMA.check_ranges(o)


def test_describe_gives_name_type_bounds_default_and_help() -> None:
    lines = SCHEMA.describe()
    assert "count (int 1-64; default 4): how many" in lines
    assert "rate (float > 0; optional): per second" in lines
    assert "mode (str a|b; default 'a'): which" in lines
    assert "name (str; required): what to call it" in lines
    assert [ln.split()[0] for ln in lines] == sorted(ln.split()[0] for ln in lines)
