"""The parrot engine against a stand-in that speaks Parrot's HTTP API on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import engines
from app.core.clock import LoopClock
from app.core.events import Event, RequestEvent, StageEvent
from app.core.runner import RunConfig, Runner, RunOutcome
from engines.base import EngineContext, EngineError, Request
from engines.parrot import ParrotEngine, build_template, parse_options
from tests.fakes.parrot_standin import ParrotStandin, StandinCall

if "parrot" not in engines.names():
    # The lead registers it in engines/__init__.py; until then the tests do.
    engines.register("parrot", lambda: ParrotEngine.from_options)

T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    async def guarded() -> T:
        return await asyncio.wait_for(coro, 30)  # no test may hang

    return asyncio.run(guarded())


async def _with_standin(standin: ParrotStandin, cfg: RunConfig,
                        ) -> tuple[RunOutcome, list[Event]]:
    async with standin:
        cfg.engine_options = {"url": standin.url, **cfg.engine_options}
        runner = Runner(cfg)
        events: list[Event] = []
        runner.bus.subscribe(events.append)
        out = await runner.run()
    return out, events


def _cfg(**kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        workload="sequential", engine="parrot", meters=["none"], batch_limit=4, workflows=2,
        workload_params={"variant": "chain", "chunks": 4, "chunk_tokens": 40,
                         "output_tokens": 8},
    )
    base.update(kw)
    return RunConfig(**base)


def _by_output(standin: ParrotStandin) -> dict[str, StandinCall]:
    return {c.output: c for c in standin.calls}


def test_chain_runs_through_runner_and_parrot_sees_each_step_depend_on_the_last() -> None:
    standin = ParrotStandin(delay_s=0.01)
    out, events = _run(_with_standin(standin, _cfg()))
    assert out.reason == "completed", out.message
    assert out.summary["requests_finished"] == 8
    assert out.summary["requests_failed"] == 0
    calls = standin.calls
    assert len(calls) == 8
    producers = _by_output(standin)
    roots = [c for c in calls if not c.inputs]
    assert len(roots) == 2  # the first step of each document
    for c in calls:
        assert len(c.inputs) <= 1
        assert c.ignore_tokenizer_eos and c.max_gen_length == 8
        if c.inputs:
            parent = producers[c.inputs[0]]  # the DAG edge, as a semantic variable
            assert parent.finished is not None and c.started is not None
            assert c.started >= parent.finished
            # The parent's output reached the child's prompt through the variable.
            assert parent.output in c.bindings.values()
            assert (standin.vars[parent.output].content or "") in c.prompt
            assert "{{input_0}}" in c.template
    # Following the edges from each root gives a chain of all four steps.
    children = {c.inputs[0]: c for c in calls if c.inputs}
    for root in roots:
        chain, node = [root], root
        while node.output in children:
            node = children[node.output]
            chain.append(node)
        assert len(chain) == 4
    # The runner saw the stages start in order within each workflow.
    started: dict[str, list[str]] = {}
    for ev in events:
        if isinstance(ev, StageEvent) and ev.phase == "started":
            started.setdefault(ev.workflow_id, []).append(ev.node)
    assert started and all(v == [f"summarize_{k}" for k in range(4)] for v in started.values())
    assert standin.deleted_sessions == [0]  # the run's session is removed at the end


def test_reduce_call_binds_every_map_output() -> None:
    standin = ParrotStandin()
    cfg = _cfg(workflows=1, workload_params={"variant": "mapreduce", "chunks": 3,
                                             "chunk_tokens": 30, "output_tokens": 6,
                                             "reduce_tokens": 10})
    out, _ = _run(_with_standin(standin, cfg))
    assert out.reason == "completed", out.message
    maps = [c for c in standin.calls if not c.inputs]
    reduce = [c for c in standin.calls if c.inputs]
    assert len(maps) == 3 and len(reduce) == 1
    assert set(reduce[0].inputs) == {m.output for m in maps}
    assert reduce[0].max_gen_length == 10


def test_server_errors_become_failed_requests_with_the_reason() -> None:
    standin = ParrotStandin(fail_when=lambda p: "engine overloaded"
                            if "Summary so far" in p["template"] else None)
    out, events = _run(_with_standin(standin, _cfg()))
    failed = [e for e in events if isinstance(e, RequestEvent) and e.phase == "failed"]
    assert len(failed) == 2 == standin.failed_calls  # each document's first step
    for ev in failed:
        assert ev.reason is not None
        assert "HTTP 500" in ev.reason and "engine overloaded" in ev.reason
        assert "\n" not in ev.reason
    assert out.summary["requests_failed"] == 2
    assert out.summary["requests_finished"] == 0


def test_api_key_is_sent_but_never_recorded(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARROT_API_KEY", "sk-parrot-secret-42")
    standin = ParrotStandin()
    session = tmp_path / "parrot.jsonl"
    out, _ = _run(_with_standin(standin, _cfg(workflows=1, session_path=session)))
    assert out.reason == "completed", out.message
    assert standin.api_keys == ["sk-parrot-secret-42"]
    text = session.read_text()
    assert "sk-parrot-secret-42" not in text
    assert '"criteria":"latency"' in text  # the engine's details are in the header


def _engine(url: str) -> ParrotEngine:
    return ParrotEngine.from_options(EngineContext(LoopClock(), lambda ev: None),
                                     {"url": url, "timeout_s": 5})


def test_one_event_per_call_with_all_tokens_at_once() -> None:
    async def main() -> list[Any]:
        async with ParrotStandin() as standin:
            eng = _engine(standin.url)
            await eng.start()
            try:
                return [ev async for ev in eng.generate(
                    Request("r1", "Say something.", prompt_tokens=4, max_tokens=30))]
            finally:
                await eng.stop()

    evs = _run(main())
    assert len(evs) == 1
    ev = evs[0]
    assert ev.finished and ev.prefill_tokens == 4
    assert ev.decode_tokens == ev.output_tokens and 25 <= ev.decode_tokens <= 35
    assert ev.text.startswith("r0 ")


def test_no_server_is_a_one_line_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens

    async def main() -> None:
        await _engine(f"http://127.0.0.1:{port}").start()

    with pytest.raises(EngineError) as err:
        _run(main())
    msg = str(err.value)
    assert "\n" not in msg and "ServeCore running" in msg and str(port) in msg


def test_template_binds_parent_outputs_and_escapes_literal_placeholders() -> None:
    template, ph = build_template("Intro {{evil}} then PARENT-A and PARENT-B end",
                                  [("v-b", "PARENT-B"), ("v-a", "PARENT-A"), ("v-c", "gone")])
    assert template == "Intro { {evil}} then {{input_0}} and {{input_1}} end"
    assert ph == [{"name": "input_0", "is_output": False, "var_id": "v-a"},
                  {"name": "input_1", "is_output": False, "var_id": "v-b"}]


@pytest.mark.parametrize("opts, needle", [
    ({"url": "localhost:9000"}, "url"),
    ({"timeout_s": "soon"}, "timeout_s"),
    ({"speed": 3}, "unknown option"),
])
def test_bad_options_are_one_line_errors(opts: dict[str, Any], needle: str) -> None:
    with pytest.raises(EngineError, match=needle):
        parse_options(opts)


