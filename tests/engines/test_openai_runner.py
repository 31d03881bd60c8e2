"""Whole runs on the `openai` engine against a loopback server, on the wall clock:
client-side timings, usage counts, engine-state scraping, secrets kept out of the
session, and every fault the issue lists (each run takes a second or two, never hangs)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import engines
from app.core.clock import run_async
from app.core.events import EngineStateEvent, Event, RequestEvent
from app.core.runner import RunConfig, Runner, RunOutcome
from app.core.session_reader import read_session
from engines.openai.engine import OpenAIEngine
from tests.fakes.loopback_server import Behaviour, FakeOpenAIServer

pytestmark = pytest.mark.timeout(60)

if "openai" not in engines.names():
    engines.register("openai", lambda: OpenAIEngine.from_options)

CUT = "stream cut before finish"


def _run(behaviour: Behaviour, during: Callable[[FakeOpenAIServer], Awaitable[None]] | None = None,
         options: dict[str, Any] | None = None, url: str | None = None, **cfg: Any
         ) -> tuple[RunOutcome, list[Event], FakeOpenAIServer]:
    params: dict[str, Any] = {"variant": "chain", "chunks": 3, "chunk_tokens": 16,
                              "output_tokens": 6, "concurrency": 2}
    params.update(cfg.pop("params", {}))
    events: list[Event] = []

    async def main() -> tuple[RunOutcome, FakeOpenAIServer]:
        async with FakeOpenAIServer(behaviour) as srv:
            config = RunConfig(
                workload="sequential", workload_params=params, engine="openai",
                engine_options={"url": url or srv.url, "metrics_interval_s": 0.1,
                                **(options or {})},
                meters=["none"], **{"batch_limit": 8, "workflows": 2, **cfg})
            runner = Runner(config)
            runner.bus.subscribe(events.append)
            task = asyncio.create_task(runner.run())
            if during is not None:
                await during(srv)
            # A hang fails here, not at pytest-timeout: every run must end by itself.
            return await asyncio.wait_for(task, 20), srv

    out, srv = run_async(main(), virtual=False)
    return out, events, srv


def _requests(events: list[Event], phase: str) -> list[RequestEvent]:
    return [e for e in events if isinstance(e, RequestEvent) and e.phase == phase]


def test_ttft_and_tpot_are_measured_client_side() -> None:
    out, events, srv = _run(Behaviour(first_token_s=0.12, token_s=0.03), workflows=2,
                            params={"concurrency": 1, "chunks": 2})
    done = _requests(events, "finished")
    assert out.reason == "completed" and len(done) == 4
    for r in done:
        assert r.ttft_s is not None and r.tpot_s is not None
        assert 0.12 <= r.ttft_s < 0.22, r.ttft_s
        assert 0.028 <= r.tpot_s < 0.05, r.tpot_s
        assert r.output_tokens == 6 and r.reason == "length"
    # Prompt tokens are the server's count (usage), not the workload's estimate.
    served = sorted(len(b["prompt"].split()) for b in srv.seen.bodies)
    assert sorted(r.prompt_tokens for r in done) == served
    assert out.summary["output_tokens"] == 4 * 6


def test_chat_api_runs_a_workflow() -> None:
    out, events, srv = _run(Behaviour(), options={"api": "chat"}, workflows=1)
    assert out.reason == "completed"
    assert len(_requests(events, "finished")) == 3
    assert all("messages" in b for b in srv.seen.bodies)


def test_key_sent_but_never_in_session_and_engine_state_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-wattflow-test-3f9c2a71"
    monkeypatch.setenv("WATTFLOW_TEST_API_KEY", secret)
    path = tmp_path / "run.jsonl"
    out, _, srv = _run(Behaviour(token_s=0.02), options={"api_key_env": "WATTFLOW_TEST_API_KEY"},
                       session_path=path, workflows=2)
    assert out.reason == "completed"
    assert srv.seen.authorization and set(srv.seen.authorization) == {f"Bearer {secret}"}
    raw = path.read_bytes()
    assert secret.encode() not in raw and b"3f9c2a71" not in raw
    lines = [orjson.loads(line) for line in raw.splitlines()]
    assert lines[0]["kind"] == "session" and lines[-1]["kind"] == "end"
    states = [e for e in read_session(path).events if isinstance(e, EngineStateEvent)
              and e.source == "engine" and e.note is None]
    assert states and all(e.kv_cache_pct == pytest.approx(25.0) for e in states)
    assert any(e.running and e.running >= 1 for e in states)


def test_http_500s_are_recorded_and_the_run_goes_on() -> None:
    out, events, _ = _run(Behaviour(fault="http500", fault_every=4), workflows=4)
    failed = _requests(events, "failed")
    assert out.reason == "completed"
    assert failed and all(e.reason == "HTTP 500: fake engine failure" for e in failed)
    assert out.summary["requests_failed"] == len(failed)
    assert out.summary["failure_reasons"] == {"HTTP 500: fake engine failure": len(failed)}
    assert _requests(events, "finished")


def test_an_engine_that_always_fails_ends_the_run_as_failed() -> None:
    out, _, _ = _run(Behaviour(fault="http500"), workflows=None, duration_s=30.0,
                          max_consecutive_failures=5)
    assert out.reason == "failed"
    assert "5 requests failed in a row" in out.message
    assert out.summary["failure_reasons"]["HTTP 500: fake engine failure"] >= 5
    assert out.summary["wall_s"] < 10


def test_a_stalled_stream_fails_after_the_idle_timeout() -> None:
    out, events, _ = _run(Behaviour(fault="stall", fault_every=3, token_s=0.01),
                          options={"timeout_s": 0.4}, workflows=3)
    failed = _requests(events, "failed")
    assert out.reason == "completed"
    assert failed and {e.reason for e in failed} == {"stalled: no data for 0.4 s"}
    for e in failed:
        assert e.output_tokens == 2  # what arrived before the stall
        assert e.latency_s is not None and 0.4 <= e.latency_s < 1.5
    assert out.summary["failure_reasons"] == {"stalled: no data for 0.4 s": len(failed)}


def test_a_stream_cut_mid_way_is_a_failed_request() -> None:
    out, events, _ = _run(Behaviour(fault="cut", fault_every=2, token_s=0.01), workflows=3)
    failed = _requests(events, "failed")
    assert out.reason == "completed"
    assert failed and {e.reason for e in failed} == {CUT}
    assert all(e.output_tokens == 2 for e in failed)
    assert out.summary["requests_failed"] == len(failed)


def test_connection_refused_ends_the_run_with_a_clear_reason() -> None:
    async def closed_port() -> str:
        srv = await FakeOpenAIServer().start()
        await srv.close()
        return srv.url

    url = asyncio.run(closed_port())
    out, _, _ = _run(Behaviour(), url=url, options={"model": "m"}, workflows=None,
                          duration_s=30.0, max_consecutive_failures=4)
    assert out.reason == "failed" and "in a row" in out.message
    assert out.summary["failure_reasons"].get(f"connection refused to {url}", 0) >= 4
    assert out.summary["wall_s"] < 10


def test_server_killed_mid_run() -> None:
    async def kill_soon(srv: FakeOpenAIServer) -> None:
        await asyncio.sleep(0.5)
        await srv.kill()

    out, events, _ = _run(Behaviour(token_s=0.02), during=kill_soon, workflows=None,
                            duration_s=30.0, max_consecutive_failures=6,
                            params={"concurrency": 4, "output_tokens": 10})
    reasons = out.summary["failure_reasons"]
    assert out.reason == "failed" and "6 requests failed in a row" in out.message
    assert _requests(events, "finished")  # it worked before the kill
    assert reasons.get(CUT, 0) >= 1  # requests streaming when it died
    assert any(r.startswith("connection refused to") for r in reasons)  # and after
    assert out.summary["wall_s"] < 10
    # The engine's view went quiet when the server died; the run still recorded it before.
    assert any(isinstance(e, EngineStateEvent) and e.source == "engine" and e.note is None
               for e in events)
