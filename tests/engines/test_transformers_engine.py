"""The transformers engine on the CPU with tiny random-weight Llamas.

Needs torch, transformers and psutil (not default test dependencies): skipped, with
the reason, where they are missing. Option checks need none of them and always run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import engines
from app.core.clock import LoopClock, ManualClock
from app.core.runner import RunConfig, Runner
from engines.base import EngineContext, EngineError, HasTokenizer, Request, TokenEvent
from engines.synthetic_prompt import synthetic_prompt
from engines.transformers import TransformersEngine, parse_options
from workloads import text as wtext

if "transformers" not in engines.names():
    # The lead registers it in engines/__init__.py; until then the tests do.
    engines.register("transformers", lambda: TransformersEngine.from_options)

_MISSING = [m for m in ("torch", "transformers", "psutil") if importlib.util.find_spec(m) is None]
needs_torch = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"needs {', '.join(_MISSING)} (pip install torch transformers psutil; "
           "not a default test dependency)",
)
TINY_FOLDER = Path(__file__).resolve().parents[2] / "models" / "tiny-llama"
T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    async def guarded() -> T:
        return await asyncio.wait_for(coro, 90)  # no test may hang

    return asyncio.run(guarded())


async def _collect(eng: TransformersEngine, req: Request) -> list[TokenEvent]:
    return [ev async for ev in eng.generate(req)]


def _engine(**opts: Any) -> TransformersEngine:
    return TransformersEngine.from_options(EngineContext(LoopClock(), lambda ev: None),
                                           {"model": "tiny", **opts})


@needs_torch
def test_tiny_model_streams_exact_token_counts_for_concurrent_requests() -> None:
    async def main() -> tuple[list[list[TokenEvent]], dict[str, Any]]:
        eng = _engine()
        await eng.start()
        try:
            reqs = [Request(f"r{i}", f"prompt number {i}", prompt_tokens=20 + 7 * i,
                            max_tokens=12 + 5 * i) for i in range(5)]
            reqs.append(Request("ids", "", prompt_tokens=999, max_tokens=9,
                                prompt_token_ids=[5, 6, 7, 8]))
            streams = await asyncio.gather(*(_collect(eng, r) for r in reqs))
            return list(streams), dict(eng.resolved)
        finally:
            await eng.stop()

    streams, resolved = _run(main())
    assert resolved["device"] == "cpu" and resolved["parameters"] > 0
    for i, evs in enumerate(streams[:5]):
        want = 12 + 5 * i
        assert evs[0].prefill_tokens == 20 + 7 * i == evs[0].prompt_tokens
        assert all(e.prefill_tokens == 0 for e in evs[1:])
        assert sum(e.decode_tokens for e in evs) == want  # EOS ignored: exactly max_tokens
        assert evs[-1].finished and evs[-1].finish_reason == "length"
        assert evs[-1].output_tokens == want
        assert not any(e.finished for e in evs[:-1])
    # Tokens arrive while the request runs, not all at the end.
    assert max(len(evs) for evs in streams) > 1
    ids = streams[5]
    assert ids[0].prefill_tokens == 4 and sum(e.decode_tokens for e in ids) == 9


@needs_torch
def test_closing_a_stream_cancels_it_and_the_engine_goes_on() -> None:
    async def main() -> tuple[int, list[TokenEvent]]:
        eng = _engine()
        await eng.start()
        try:
            stream = eng.generate(Request("long", "x", prompt_tokens=16, max_tokens=5000))
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for _ in stream:
                    break  # the runner does this when a run ends or a request times out
            after = await _collect(eng, Request("next", "y", prompt_tokens=8, max_tokens=6))
            return eng.cancelled, after
        finally:
            await eng.stop()

    cancelled, after = _run(main())
    assert cancelled == 1
    assert sum(e.decode_tokens for e in after) == 6 and after[-1].finished


@needs_torch
def test_model_folder_with_tokenizer_gives_text_and_declares_its_tokenizer() -> None:
    async def main() -> tuple[list[TokenEvent], int, int, list[str], bool]:
        eng = _engine(model=str(TINY_FOLDER))
        await eng.start()
        try:
            prompt = "The river ran past the old mill and on to the sea."
            counter = eng.tokenizer()  # declared (HasTokenizer): the runner hands it on
            assert counter is not None
            evs = await _collect(eng, Request("t", prompt, prompt_tokens=1, max_tokens=10))
            return (evs, counter(prompt), evs[0].prefill_tokens, eng.info().capabilities,
                    wtext._tokenizer is None)
        finally:
            await eng.stop()

    evs, counted, prefilled, caps, untouched = _run(main())
    assert "text" in caps
    assert counted == prefilled  # prompt tokenized with the folder's tokenizer
    assert evs[-1].finished and evs[-1].text  # decoded output text
    assert untouched  # engines never install it in the workloads: the runner does
    preset = TransformersEngine.from_options(EngineContext(ManualClock(), lambda ev: None),
                                             {"model": "tiny"})
    assert isinstance(preset, HasTokenizer) and preset.tokenizer() is None  # it has none


@needs_torch
def test_mapreduce_through_runner_on_tiny_model() -> None:
    cfg = RunConfig(
        workload="sequential", engine="transformers", engine_options={"model": "tiny"},
        meters=["none"], batch_limit=4, workflows=1,
        workload_params={"variant": "mapreduce", "chunks": 3, "chunk_tokens": 40,
                         "output_tokens": 7, "reduce_tokens": 11},
    )
    out = _run(Runner(cfg).run())
    assert out.reason == "completed", out.message
    assert out.summary["requests_finished"] == 4
    assert out.summary["output_tokens"] == 3 * 7 + 11
    assert {st["stage"] for st in out.summary["stages"]} == {"map", "reduce"}


def test_synthetic_prompts_are_deterministic_and_share_prefixes() -> None:
    a = Request("a", "first question", prompt_tokens=50, max_tokens=1,
                prefix_key="system", prefix_tokens=30)
    b = Request("b", "second question", prompt_tokens=40, max_tokens=1,
                prefix_key="system", prefix_tokens=30)
    ia, ib = synthetic_prompt(a, 1000, 0), synthetic_prompt(b, 1000, 0)
    assert len(ia) == 50 and len(ib) == 40
    assert ia[:30] == ib[:30] and ia[30:40] != ib[30:]
    assert ia == synthetic_prompt(a, 1000, 0)
    assert synthetic_prompt(a, 1000, 1) != ia  # the seed matters
    assert all(3 <= t < 1000 for t in ia + ib)


@pytest.mark.parametrize("opts, needle", [
    ({"model": "gpt-17"}, "neither a folder with config.json nor a preset"),
    ({"dtype": "int3"}, "dtype must be one of"),
    ({"num_blocks": 0}, "num_blocks = 0 is out of range"),
    ({"block_size": "big"}, "block_size must be an integer"),
    ({"warmup": "maybe"}, "warmup must be true or false"),
    ({"beams": 4}, "transformers engine: unknown option 'beams'"),
    ({"state_interval_s": float("inf")}, "state_interval_s must be a finite number"),
])
def test_bad_options_are_one_line_errors(opts: dict[str, Any], needle: str) -> None:
    with pytest.raises(EngineError, match=needle) as err:
        parse_options({"model": "tiny", **opts})
    assert "\n" not in str(err.value)


def test_model_folder_is_accepted_by_path() -> None:
    opts = parse_options({"model": str(TINY_FOLDER), "num_blocks": 64, "warmup": "false"})
    assert opts.model == str(TINY_FOLDER.resolve()) and opts.num_blocks == 64
    assert opts.warmup is False
