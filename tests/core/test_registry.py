"""One lazy registry type behind engines, meters and workloads."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import engines
import meters
import workloads
from app.core.registry import Registry, lazy

ROOT = Path(__file__).resolve().parents[2]


def test_loaders_run_only_when_a_name_is_asked_for() -> None:
    loaded: list[str] = []

    def loader() -> Callable[[int], int]:
        loaded.append("double")
        return lambda x: 2 * x

    reg: Registry[[int], int] = Registry("doubler")
    reg.register("double", loader)
    assert reg.names() == ["double"] and "double" in reg and loaded == []
    assert reg.create("double", 21) == 42 and loaded == ["double"]
    assert reg.options("double") is None


def test_unknown_names_are_one_line_errors_listing_the_known_ones() -> None:
    reg: Registry[[], int] = Registry("widget")
    reg.register("b", lambda: lambda: 1)
    reg.register("a", lambda: lambda: 2)
    with pytest.raises(KeyError) as err:
        reg.create("c")
    assert err.value.args[0] == "unknown widget 'c' (choose from a, b)"
    with pytest.raises(workloads.WorkloadError, match=r"^unknown workload 'spiral' \(choose "
                       r"from agentic, composite, interactive, sequential or a FILE.toml\)$"):
        workloads.create("spiral")
    with pytest.raises(KeyError, match="unknown engine 'nope'"):
        engines.create("nope", None, {})  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="unknown meter 'nope'"):
        meters.create("nope", {})


def test_lazy_resolves_a_dotted_attribute() -> None:
    assert lazy("app.core.registry", "Registry.names")() is Registry.names


def test_every_builtin_engine_and_meter_declares_its_options_without_heavy_imports() -> None:
    for name in ("sim", "openai", "parrot", "transformers", "vllm"):
        schema = engines.option_schema(name)
        assert schema is not None and schema.owner == f"{name} engine"
        assert "seed" in schema.names()  # the runner passes the seed to every engine
        assert all(o.help for o in schema.options)
    for name in ("nvml", "rapl"):
        schema = meters.option_schema(name)
        assert schema is not None and schema.shared and "poll_interval_s" in schema.names()
    assert meters.option_schema("sim") is None  # it takes the engine, nothing else


def test_listing_options_imports_no_engine_library() -> None:
    code = ("import sys, engines, meters\n"
            "for n in engines.names(): engines.option_schema(n)\n"
            "for n in meters.names(): meters.option_schema(n)\n"
            "print(sorted({'vllm', 'torch', 'transformers', 'pynvml'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
