"""One spec per knob, read by every path that changes one: the CLI flag, `--at`, the
dashboard's `k` dialog and its step keys, sweeps, and the runner's one `set_knob`. The
same value is taken or refused the same way everywhere; bounds from the device (a fake
NVML card of 100-400 W) are in force for all of them; every starting value is a knob
event with the value asked, the value in force and the value it replaced."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import pytest

from app import cli
from app.core import knobs
from app.core.clock import run_async
from app.core.events import Event, KnobEvent
from app.core.runner import RunConfig, Runner
from app.ui.screens.knob_input import parse_entry
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml, install


def _cli_flag_accepts(flag: str, text: str) -> bool:
    parser = cli.build_parser()
    try:
        parser.parse_args(["run", flag, text])
    except SystemExit:
        return False
    return True


def _at_accepts(name: str, text: str) -> bool:
    try:
        knobs.parse_at(f"10:{name}={text}")
    except knobs.KnobError:
        return False
    return True


def _k_accepts(name: str, text: str) -> bool:
    try:
        parse_entry(f"{name}={text}")
    except knobs.KnobError:
        return False
    return True


def _values(spec: knobs.KnobSpec) -> list[str]:
    tiny = 1 if spec.integer else 0.5
    return [knobs.num(spec.minimum), knobs.num(spec.maximum), knobs.num(spec.maximum + tiny),
            knobs.num(spec.minimum - tiny), "nan", "inf", "-1", "abc", "none"]


@pytest.mark.parametrize("name", knobs.KNOB_NAMES)
def test_every_path_takes_and_refuses_the_same_values(name: str) -> None:
    spec = knobs.SPECS[name]
    for text in _values(spec):
        expected = _k_accepts(name, text)
        assert _at_accepts(name, text) == expected, (name, text)
        if spec.flag is not None and text.lower() != "none":
            assert _cli_flag_accepts(spec.flag, text) == expected, (name, text)
    # The bounds themselves: the minimum is taken unless the spec excludes it.
    assert _k_accepts(name, knobs.num(spec.minimum)) is (not spec.minimum_open)
    assert _k_accepts(name, knobs.num(spec.maximum))


def test_the_k_dialog_names_an_example_for_every_knob() -> None:
    # Was a KeyError in the dialog (`max_num_seqs` typed with no value): the dashboard died.
    for name in knobs.KNOB_NAMES:
        with pytest.raises(knobs.KnobError, match=f"{name} needs a value, e.g. {name}="):
            parse_entry(name)
    with pytest.raises(knobs.KnobError, match="max_num_seqs needs a value"):
        parse_entry("max_num_s")
    with pytest.raises(knobs.KnobError, match="could be max_num_seqs or max_num_batched_tokens"):
        parse_entry("max_n")


def test_steps_follow_the_spec_and_stop_at_the_bounds_in_force() -> None:
    assert knobs.step_value("power_cap", 300.0, -1, (100.0, 400.0)) == 275.0
    assert knobs.step_value("power_cap", 400.0, +1, (100.0, 400.0)) == 400.0
    assert knobs.step_value("power_cap", None, -1, (100.0, 400.0), in_force=400.0) == 375.0
    assert knobs.step_value("batch_limit", 64, +1) == 128
    assert knobs.step_value("batch_limit", 1, -1) == 1
    assert knobs.step_value("batch_limit", 65536, +1) == 65536
    with pytest.raises(knobs.KnobError, match="no step keys"):
        knobs.step_value("rate", 2.0, +1)


# -- the runner, with a 100-400 W card -------------------------------------------------

def _small_card(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> FakeNvml:
    monkeypatch.setenv("WATTFLOW_STATE_DIR", str(tmp_path))
    return install(monkeypatch, FakeNvml([FakeGpu(limit_w=400.0, default_limit_w=400.0,
                                                  min_limit_w=100.0, max_limit_w=400.0)],
                                         root=True))


def _cfg(**kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        workload="sequential", workload_params={"chunks": 2, "output_tokens": 5},
        engine="fake", meters=["nvml"], allow_power_cap=True, batch_limit=4, workflows=1,
        engine_options={"token_s": 0.001, "prefill_s": 0.001})
    base.update(kw)
    return RunConfig(**base)


def _run(cfg: RunConfig, during: Any = None) -> tuple[list[Event], Any]:
    runner = Runner(cfg)
    events: list[Event] = []
    runner.bus.subscribe(events.append)

    async def main() -> Any:
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0.05)
        if during is not None:
            await during(runner)
        return await task

    return events, run_async(main(), virtual=False)


def test_the_power_cap_range_comes_from_the_device(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Any) -> None:
    fake = _small_card(monkeypatch, tmp_path)
    seen: dict[str, Any] = {}

    async def during(runner: Runner) -> None:
        seen["bounds"] = runner.knob_bounds("power_cap")
        with pytest.raises(knobs.KnobError, match=r"out of range for this GPU \(100-400 W\)"):
            runner.set_knob("power_cap", 450.0, source="ui")  # what `k` sends
        runner.set_knob("power_cap", 150.0, source="ui")
        seen["set"] = fake.gpus[0].limit_w
        seen["down"] = runner.step_knob("power_cap", -1)  # `[`
        for _ in range(20):
            runner.step_knob("power_cap", +1)  # `]` until the card's maximum
        seen["top"] = runner.knobs["power_cap"]

    events, out = _run(_cfg(workflows=None, duration_s=0.5), during)
    assert out.reason == "completed", out.message
    assert seen["bounds"] == (100.0, 400.0)
    assert seen["set"] == 150.0 and seen["down"] == (150.0, 125.0)
    assert seen["top"] == 400.0
    assert fake.gpus[0].limit_w == 400.0  # restored at the end
    header = next(e for e in events if e.kind == "session")
    assert header.knob_specs["power_cap"]["minimum"] == 100.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(("kw", "needle"), [
    ({"power_cap_w": 450.0}, "--power-cap: 450 W is out of range for this GPU (100-400 W)"),
    ({"schedule": [knobs.ScheduledChange(0.2, "power_cap", 450.0)]},
     "--at 0.2:power_cap: power_cap 450 W is out of range for this GPU (100-400 W)"),
    ({"start_knobs": {"power_cap": 90.0}, "start_knobs_source": "sweep"},
     "--power-cap: 90 W is out of range for this GPU (100-400 W)"),
])
def test_start_values_and_schedules_beyond_the_device_are_refused_before_the_run(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any, kw: dict[str, Any], needle: str) -> None:
    _small_card(monkeypatch, tmp_path)
    session = tmp_path / "s.jsonl"
    _, out = _run(_cfg(session_path=session, **kw))
    assert out.config_error and out.message == needle  # the CLI's exit 2, one line
    assert not session.exists()


def test_every_starting_value_is_a_knob_event(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Any) -> None:
    _small_card(monkeypatch, tmp_path)
    events, out = _run(_cfg(power_cap_w=300.0, rate=2.0))
    assert out.reason == "completed", out.message
    # The starting values: the knob events before the first request (on a loaded host
    # the run's clock may be well past 0 by then).
    first_request = next(i for i, e in enumerate(events) if e.kind == "request")
    start = [(e.knob, e.value, e.previous, e.requested, e.source)
             for e in events[:first_request] if isinstance(e, KnobEvent)]
    assert start == [
        ("power_cap", 300.0, 400.0, 300.0, "cli"),  # asked for: set, replacing 400 W
        ("batch_limit", 4, 4, 4, "cli"),
        ("rate", 2.0, None, 2.0, "cli"),
        ("max_tokens", None, None, None, "start"),  # not asked for: what is in force
    ]


def test_a_sweep_point_sets_its_knobs_through_the_same_path() -> None:
    runner = Runner(RunConfig(workload="sequential", workload_params={"chunks": 2},
                              engine="sim", meters=["sim"], workflows=1, fast=True,
                              start_knobs={"power_cap": 450.0, "batch_limit": 2},
                              start_knobs_source="sweep"))
    events: list[Event] = []
    runner.bus.subscribe(events.append)
    out = run_async(runner.run(), virtual=True)
    assert out.reason == "completed"
    sweep = {e.knob: (e.value, e.previous) for e in events
             if isinstance(e, KnobEvent) and e.source == "sweep"}
    assert sweep == {"power_cap": (450.0, 700.0), "batch_limit": (2, 64)}


def test_the_cli_flag_types_are_the_specs() -> None:
    """No flag of a knob has bounds of its own: its type is the spec's validator."""
    parser = cli.build_parser()
    run = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run_parser = run.choices["run"]
    for spec in knobs.SPECS.values():
        if spec.flag is None:
            continue
        action = next(a for a in run_parser._actions if spec.flag in a.option_strings)
        assert getattr(action.type, "__qualname__", "").startswith("_knob_number"), spec.flag


def test_a_real_gpu_without_permission_is_refused_before_the_run(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    fake = _small_card(monkeypatch, tmp_path)
    session = tmp_path / "s.jsonl"
    events, out = _run(_cfg(allow_power_cap=False, power_cap_w=300.0, session_path=session))
    assert out.config_error
    assert out.message == "--power-cap: setting a real GPU's power limit needs --allow-power-cap"
    assert not session.exists() and fake.gpus[0].limit_w == 400.0
    # Without a cap asked for, the run goes on and records the limit it found.
    events, out = _run(_cfg(allow_power_cap=False))
    assert out.reason == "completed"
    assert [(e.value, e.source) for e in events if isinstance(e, KnobEvent)
            and e.knob == "power_cap"] == [(400.0, "start")]


@pytest.mark.parametrize("engine", ["sim", "vllm"])
def test_engine_restart_options_take_what_their_knobs_take(engine: str) -> None:
    """`-E max_num_seqs=N` at the start and `--at T:max_num_seqs=N` mid-run agree."""
    import engines

    schema = engines.option_schema(engine)
    assert schema is not None
    by_name = {o.name: o for o in schema.options}
    for spec in knobs.SPECS.values():
        if spec.needs != "engine_restart":
            continue
        opt = by_name[spec.name]
        assert (opt.lo, opt.hi) == (spec.minimum, spec.maximum), (engine, spec.name)
