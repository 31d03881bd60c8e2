"""The `openai` engine against a real HTTP server on loopback (tests/fakes/loopback_server)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.core.clock import LoopClock
from app.core.events import EngineStateEvent, Event
from engines.base import EngineContext, EngineError, Request, TokenEvent
from engines.openai.engine import OpenAIEngine
from tests.fakes.loopback_server import Behaviour, FakeOpenAIServer

pytestmark = pytest.mark.timeout(30)


def _with_engine(behaviour: Behaviour, options: dict[str, Any],
                 body: Callable[[OpenAIEngine, FakeOpenAIServer, list[Event]], Awaitable[Any]]
                 ) -> Any:
    async def main() -> Any:
        emitted: list[Event] = []
        async with FakeOpenAIServer(behaviour) as srv:
            eng = OpenAIEngine.from_options(EngineContext(LoopClock(), emitted.append),
                                            {"url": srv.url, **options})
            await eng.start()
            try:
                return await asyncio.wait_for(body(eng, srv, emitted), 15)
            finally:
                await eng.stop()

    return asyncio.run(main())


async def _collect(eng: OpenAIEngine, req: Request) -> list[TokenEvent]:
    return [ev async for ev in eng.generate(req)]


def _req(max_tokens: int = 5, prompt: str = "one two three four") -> Request:
    return Request(request_id="r1", prompt=prompt, prompt_tokens=99, max_tokens=max_tokens)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_streamed_tokens_text_and_usage(api: str) -> None:
    async def body(eng: OpenAIEngine, srv: FakeOpenAIServer, _: list[Event]) -> None:
        evs = await _collect(eng, _req(5))
        assert sum(e.decode_tokens for e in evs) == 5
        assert "".join(e.text for e in evs) == "tok " * 5
        # Usage (4 prompt tokens) comes at the end: the first event counts the request's.
        assert evs[0].prefill_tokens == 99 and all(e.prefill_tokens == 0 for e in evs[1:])
        last = evs[-1]
        assert last.finished and last.finish_reason == "length"
        assert (last.prompt_tokens, last.output_tokens) == (4, 5)  # the server's usage
        assert not any(e.finished for e in evs[:-1])
        sent = srv.seen.bodies[0]
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        assert sent["max_tokens"] == 5 and sent["min_tokens"] == 5 and sent["ignore_eos"]
        assert sent["model"] == "served-model"  # asked from /v1/models
        assert ("messages" in sent) == (api == "chat")

    _with_engine(Behaviour(model="served-model", token_s=0.01),
                 {"api": api, "metrics_interval_s": 0}, body)


def test_an_instant_answer_is_one_event_with_the_servers_prompt_count() -> None:
    async def body(eng: OpenAIEngine, srv: FakeOpenAIServer, _: list[Event]) -> None:
        evs = await _collect(eng, _req(16))
        assert len(evs) == 1  # all 16 deltas arrived in one read
        ev = evs[0]
        assert (ev.decode_tokens, ev.prefill_tokens, ev.finished) == (16, 4, True)

    _with_engine(Behaviour(one_write=True), {"metrics_interval_s": 0}, body)


def test_usage_counts_tokens_when_one_delta_carries_several() -> None:
    async def body(eng: OpenAIEngine, srv: FakeOpenAIServer, _: list[Event]) -> None:
        evs = await _collect(eng, _req(7))
        # 4 deltas (2+2+2+1 tokens) but usage says 7: the engine trusts usage.
        assert sum(e.decode_tokens for e in evs) == 7
        assert evs[-1].output_tokens == 7

    _with_engine(Behaviour(tokens_per_delta=2, token_s=0.01), {"metrics_interval_s": 0}, body)


def test_without_usage_one_token_per_delta() -> None:
    async def body(eng: OpenAIEngine, srv: FakeOpenAIServer, _: list[Event]) -> None:
        evs = await _collect(eng, _req(6))
        assert sum(e.decode_tokens for e in evs) == 6
        assert evs[-1].output_tokens == 6 and evs[-1].prompt_tokens is None

    _with_engine(Behaviour(send_usage=False), {"metrics_interval_s": 0}, body)


def test_timestamps_follow_the_servers_token_delays() -> None:
    async def body(eng: OpenAIEngine, srv: FakeOpenAIServer, _: list[Event]) -> None:
        t0 = eng._ctx.clock.now()
        evs = await _collect(eng, _req(4))
        assert [e.decode_tokens for e in evs] == [1, 1, 1, 1]
        assert 0.15 <= evs[0].t_s - t0 < 0.3
        gaps = [b.t_s - a.t_s for a, b in itertools.pairwise(evs)]
        assert all(0.045 <= g < 0.15 for g in gaps), gaps

    _with_engine(Behaviour(first_token_s=0.15, token_s=0.05), {"metrics_interval_s": 0}, body)


def test_connections_are_reused_when_the_end_of_body_comes_after_done() -> None:
    async def body(eng: OpenAIEngine, srv: FakeOpenAIServer, _: list[Event]) -> None:
        for _k in range(5):
            await _collect(eng, _req(3))
        assert srv.seen.requests == 5
        assert len(srv.seen.peers) == 1  # one keep-alive connection served them all

    # The chunked terminator comes a moment after [DONE], in its own write, as from uvicorn.
    _with_engine(Behaviour(token_s=0.005, eof_delay_s=0.02), {"metrics_interval_s": 0}, body)


def test_model_option_skips_discovery_and_falls_back_to_default() -> None:
    async def given(eng: OpenAIEngine, srv: FakeOpenAIServer, _: list[Event]) -> None:
        await _collect(eng, _req(1))
        assert srv.seen.bodies[0]["model"] == "mine"

    _with_engine(Behaviour(), {"model": "mine", "metrics_interval_s": 0}, given)

    async def main() -> tuple[str, list[Event]]:
        emitted: list[Event] = []
        eng = OpenAIEngine.from_options(EngineContext(LoopClock(), emitted.append),
                                        {"url": "http://127.0.0.1:9", "timeout_s": 2})
        await eng.start()
        await eng.stop()
        return eng.model, emitted

    model, emitted = asyncio.run(main())
    assert model == "default"
    assert any(isinstance(e, EngineStateEvent) and e.note and "no answer" in e.note
               for e in emitted)


def test_api_key_from_env_is_sent_and_not_in_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTFLOW_TEST_KEY", "sk-test-hushhush")

    async def body(eng: OpenAIEngine, srv: FakeOpenAIServer, _: list[Event]) -> None:
        await _collect(eng, _req(2))
        assert srv.seen.authorization == ["Bearer sk-test-hushhush"]
        info = eng.info()
        assert "hushhush" not in repr(info)
        assert info.details["api_key_env"] == "WATTFLOW_TEST_KEY"
        assert info.details["api_key_set"] is True

    _with_engine(Behaviour(), {"api_key_env": "WATTFLOW_TEST_KEY", "metrics_interval_s": 0},
                 body)


def test_no_key_in_env_sends_no_authorization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    async def body(eng: OpenAIEngine, srv: FakeOpenAIServer, _: list[Event]) -> None:
        await _collect(eng, _req(1))
        assert srv.seen.authorization == [None]

    _with_engine(Behaviour(), {"metrics_interval_s": 0}, body)


@pytest.mark.parametrize("name", ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"])
def test_metrics_scraped_into_engine_state_events(name: str) -> None:
    async def body(eng: OpenAIEngine, srv: FakeOpenAIServer, emitted: list[Event]) -> None:
        task = asyncio.create_task(_collect(eng, _req(30)))
        await asyncio.sleep(0.35)  # mid-request: one request is running on the server
        await task
        states = [e for e in emitted if isinstance(e, EngineStateEvent) and e.note is None]
        assert len(states) >= 3  # ~every 0.1 s
        assert all(e.source == "engine" for e in states)
        assert any(e.running == 1 for e in states)
        assert all(e.waiting == 3 and e.kv_cache_pct == pytest.approx(40.0) for e in states)

    _with_engine(Behaviour(metrics_name=name, kv_cache_fraction=0.4, token_s=0.02),
                 {"metrics_interval_s": 0.1}, body)


def test_missing_metrics_page_gives_one_note_then_no_scraping() -> None:
    async def body(eng: OpenAIEngine, srv: FakeOpenAIServer, emitted: list[Event]) -> None:
        await asyncio.sleep(0.5)
        notes = [e.note for e in emitted if isinstance(e, EngineStateEvent) and e.note]
        assert len([n for n in notes if "/metrics" in n]) == 1
        assert not [e for e in emitted if isinstance(e, EngineStateEvent) and e.note is None]
        assert eng._scraper is not None and eng._scraper.done()

    _with_engine(Behaviour(metrics=False), {"metrics_interval_s": 0.05}, body)


@pytest.mark.parametrize(("behaviour", "options", "reason"), [
    (Behaviour(fault="http500"), {}, "HTTP 500: fake engine failure"),
    (Behaviour(fault="cut"), {}, "stream cut before finish"),
    (Behaviour(fault="stall"), {"timeout_s": 0.3}, "stalled: no data for 0.3 s"),
])
def test_faults_raise_engine_error_with_one_line_reason(
        behaviour: Behaviour, options: dict[str, Any], reason: str) -> None:
    async def body(eng: OpenAIEngine, srv: FakeOpenAIServer, _: list[Event]) -> None:
        with pytest.raises(EngineError) as err:
            await _collect(eng, _req(10))
        assert str(err.value) == reason

    _with_engine(behaviour, {"metrics_interval_s": 0, **options}, body)


def test_connection_refused_is_engine_error() -> None:
    async def main() -> None:
        srv = await FakeOpenAIServer().start()
        url = srv.url
        await srv.close()  # the port now has nothing listening
        eng = OpenAIEngine.from_options(EngineContext(LoopClock(), lambda e: None),
                                        {"url": url + "/v1", "model": "m"})
        await eng.start()
        try:
            with pytest.raises(EngineError, match=f"^connection refused to {url}$"):
                await _collect(eng, _req(2))
        finally:
            await eng.stop()

    asyncio.run(main())


@pytest.mark.parametrize(("options", "message"), [
    ({}, "option url is required"),
    ({"url": "127.0.0.1:8000"}, "url must be http"),
    ({"url": "http://h:1", "api": "embeddings"}, "api must be completions or chat"),
    ({"url": "http://h:1", "timeout_s": "soon"}, "timeout_s must be a number"),
    ({"url": "http://h:1", "timeout_s": 0}, r"timeout_s = 0 is out of range \(> 0\)"),
    ({"url": "http://h:1", "metrics_interval_s": float("inf")}, "must be a finite number"),
    ({"url": "http://h:1", "api_key": "sk-x"}, "unknown option 'api_key'"),
])
def test_bad_options_are_one_line_engine_errors(options: dict[str, Any], message: str) -> None:
    ctx = EngineContext(LoopClock(asyncio.new_event_loop()), lambda e: None)
    with pytest.raises(EngineError, match=message) as err:
        OpenAIEngine.from_options(ctx, options)
    assert "\n" not in str(err.value)


def test_info_hides_url_credentials() -> None:
    ctx = EngineContext(LoopClock(asyncio.new_event_loop()), lambda e: None)
    eng = OpenAIEngine.from_options(ctx, {"url": "http://user:pw@host:8000/v1", "model": "m"})
    assert eng.info().details["url"] == "http://host:8000"
    assert "pw" not in repr(eng.info())
