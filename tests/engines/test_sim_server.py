"""`wattflow serve`'s server (engines/sim_server) over real HTTP on loopback: the OpenAI
API's shapes, timing by the twin, vLLM's and dcgm-exporter's /metrics read back with
prometheus_client's parser, replicas, client disconnects, and a whole `run` of the
openai engine against it."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.clock import run_async
from app.core.events import EngineStateEvent, Event, RequestEvent
from app.core.runner import RunConfig, Runner
from engines.sim_server.prefix_index import PrefixIndex
from engines.sim_server.server import ServeConfig, SimServer

pytestmark = pytest.mark.timeout(60)

DCGM_LABELS = {"gpu", "UUID", "device", "modelName", "Hostname"}


def _serve(test: Callable[[SimServer, aiohttp.ClientSession], Awaitable[Any]],
           **cfg: Any) -> Any:
    async def main() -> Any:
        config = ServeConfig(port=0, **{"collect_interval_s": 0.0, **cfg})
        async with SimServer(config) as srv, aiohttp.ClientSession() as http:
            return await asyncio.wait_for(test(srv, http), 30)

    return run_async(main(), virtual=False)


async def _sse(http: aiohttp.ClientSession, url: str, body: dict[str, Any]
               ) -> tuple[list[dict[str, Any]], list[float], bool]:
    """(chunks, arrival time of each, whether [DONE] came)."""
    chunks: list[dict[str, Any]] = []
    times: list[float] = []
    done = False
    async with http.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        buf = b""
        async for data in resp.content.iter_any():
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                assert event.startswith(b"data: ")
                if event == b"data: [DONE]":
                    done = True
                    continue
                chunks.append(orjson.loads(event[6:]))
                times.append(time.perf_counter())
    return chunks, times, done


async def _metrics(http: aiohttp.ClientSession, srv: SimServer) -> dict[str, Any]:
    async with http.get(srv.url + "/metrics") as resp:
        assert resp.status == 200
        return {f.name: f for f in text_string_to_metric_families(await resp.text())}


def _value(families: dict[str, Any], name: str, **labels: str) -> float:
    fam = families[name]
    total = 0.0
    for s in fam.samples:
        if s.name in (name, name + "_total") and all(s.labels.get(k) == v
                                                     for k, v in labels.items()):
            total += s.value
    return total


def test_streamed_completion_is_shaped_like_vllms_and_counts_its_tokens() -> None:
    async def t(srv: SimServer, http: aiohttp.ClientSession) -> None:
        body = {"model": srv.model, "prompt": "one two three four five six", "max_tokens": 7,
                "stream": True, "stream_options": {"include_usage": True}}
        chunks, _, done = await _sse(http, srv.url + "/v1/completions", body)
        assert done
        texts = [c["choices"][0]["text"] for c in chunks if c["choices"]]
        assert len(texts) == 7 and all(t.startswith(" ") for t in texts)
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"] == {"prompt_tokens": 8, "completion_tokens": 7,
                                       "total_tokens": 15}
        assert {c["object"] for c in chunks} == {"text_completion"}

    _serve(t)


def test_streamed_chat_starts_with_the_role_and_non_streamed_answers_whole() -> None:
    async def t(srv: SimServer, http: aiohttp.ClientSession) -> None:
        body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4,
                "stream": True}
        chunks, _, done = await _sse(http, srv.url + "/v1/chat/completions", body)
        assert done and chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert sum(1 for c in chunks[1:] if c["choices"][0]["delta"].get("content")) == 4
        assert not any("usage" in c for c in chunks)  # not asked for
        async with http.post(srv.url + "/v1/chat/completions",
                             json={"messages": [{"role": "user", "content": "hi"}],
                                   "max_tokens": 5}) as resp:
            whole = await resp.json()
        assert whole["object"] == "chat.completion"
        assert len(whole["choices"][0]["message"]["content"].split()) == 5
        assert whole["usage"]["completion_tokens"] == 5

    _serve(t)


def test_models_health_and_bad_requests() -> None:
    async def t(srv: SimServer, http: aiohttp.ClientSession) -> None:
        async with http.get(srv.url + "/v1/models") as resp:
            models = await resp.json()
        assert models["data"][0]["id"] == "meta-llama/Llama-3.1-8B-Instruct"
        async with http.get(srv.url + "/health") as resp:
            assert resp.status == 200
        cases = [
            (b"{not json", 400, "not JSON"),
            (orjson.dumps({"model": "gpt-9", "prompt": "x"}), 404, "does not exist"),
            (orjson.dumps({"prompt": "x", "max_tokens": 0}), 400, "max_tokens"),
            (orjson.dumps({"prompt": "x", "max_tokens": 200_000}), 400, "context length"),
            (orjson.dumps({"prompt": {"a": 1}}), 400, "prompt"),
            (orjson.dumps({"prompt": "x", "n": 2}), 400, "n=1"),
        ]
        for raw, status, words in cases:
            async with http.post(srv.url + "/v1/completions", data=raw) as resp:
                assert resp.status == status, raw
                assert words in (await resp.json())["error"]["message"]
        assert srv.requests_total == 0  # none reached an engine

    _serve(t)


def test_tokens_are_timed_by_the_twin_on_the_wall_clock() -> None:
    """A lone decode step of an 8B model on the H100 twin takes a few ms: 100 tokens take
    a few hundred ms, streamed one by one, not all at once."""
    async def t(srv: SimServer, http: aiohttp.ClientSession) -> None:
        t0 = time.perf_counter()
        chunks, times, _ = await _sse(http, srv.url + "/v1/completions",
                                      {"prompt": "a b c", "max_tokens": 100, "stream": True})
        took = time.perf_counter() - t0
        assert len(chunks) == 100
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        median = gaps[len(gaps) // 2]
        assert 0.002 < median < 0.05, median
        assert took > 99 * 0.002
        # The server's own histograms saw the same request.
        fam = await _metrics(http, srv)
        assert _value(fam, "vllm:generation_tokens") == 100
        itl = {s.name: s.value for s in fam["vllm:inter_token_latency_seconds"].samples
               if s.name.endswith(("_count", "_sum"))}
        assert itl["vllm:inter_token_latency_seconds_count"] == 99
        assert 0.002 < itl["vllm:inter_token_latency_seconds_sum"] / 99 < 0.05

    _serve(t)


def test_metrics_page_has_vllms_and_dcgms_series_with_their_labels() -> None:
    async def t(srv: SimServer, http: aiohttp.ClientSession) -> None:
        before = await _metrics(http, srv)
        e0 = _value(before, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", gpu="1")
        await asyncio.gather(*(_sse(http, srv.url + "/v1/completions",
                                    {"prompt": "x y z " * 50, "max_tokens": 40, "stream": True})
                               for _ in range(6)))
        fam = await _metrics(http, srv)
        for name, kind in [("vllm:num_requests_running", "gauge"),
                           ("vllm:num_requests_waiting", "gauge"),
                           ("vllm:kv_cache_usage_perc", "gauge"),
                           ("vllm:gpu_cache_usage_perc", "gauge"),
                           ("vllm:prompt_tokens", "counter"),
                           ("vllm:generation_tokens", "counter"),
                           ("vllm:time_to_first_token_seconds", "histogram"),
                           ("vllm:inter_token_latency_seconds", "histogram"),
                           ("vllm:time_per_output_token_seconds", "histogram"),
                           ("vllm:e2e_request_latency_seconds", "histogram"),
                           ("DCGM_FI_DEV_POWER_USAGE", "gauge"),
                           ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter"),
                           ("DCGM_FI_DEV_GPU_UTIL", "gauge"),
                           ("DCGM_FI_DEV_SM_CLOCK", "gauge"),
                           ("DCGM_FI_DEV_FB_USED", "gauge"),
                           ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge")]:
            assert fam[name].type == kind, name
        assert _value(fam, "vllm:generation_tokens") == 240
        # Both replicas served (least requests in flight) and each counts its own.
        per_engine = [_value(fam, "vllm:generation_tokens", engine=e) for e in ("0", "1")]
        assert all(n > 0 for n in per_engine) and sum(per_engine) == 240
        power = fam["DCGM_FI_DEV_POWER_USAGE"].samples
        assert {s.labels["gpu"] for s in power} == {"0", "1"}
        for s in power:
            assert set(s.labels) >= DCGM_LABELS
            assert s.labels["Hostname"] == "node-a"
            assert s.labels["modelName"] == "NVIDIA H100 80GB HBM3"
            assert s.labels["UUID"].startswith("GPU-")
            assert 75 <= s.value <= 700
        assert len({s.labels["UUID"] for s in power}) == 2
        assert _value(fam, "DCGM_FI_DEV_POWER_MGMT_LIMIT", gpu="0") == 700
        assert _value(fam, "DCGM_FI_DEV_FB_USED", gpu="0") > 60_000  # weights + KV pool
        # The energy counter (mJ) grew by at least idle power over the time it took.
        e1 = _value(fam, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", gpu="1")
        assert e1 > e0 > 0
        exact = srv.energy_mj()[1]
        assert e1 <= exact and exact - e1 < 700 * 1000 * 0.5  # read at the scrape, mJ

    _serve(t, gpus=2, hostname="node-a")


def test_dcgm_values_are_as_old_as_the_collection_interval() -> None:
    async def t(srv: SimServer, http: aiohttp.ClientSession) -> None:
        a = _value(await _metrics(http, srv), "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
        await asyncio.sleep(0.3)
        b = _value(await _metrics(http, srv), "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
        assert a == b  # not collected again within 5 s
        assert srv.energy_mj()[0] > b + 0.3 * 70 * 1000  # idle power went on meanwhile

    _serve(t, collect_interval_s=5.0)


def test_a_client_that_goes_away_frees_its_place_in_the_engine() -> None:
    async def t(srv: SimServer, http: aiohttp.ClientSession) -> None:
        async with http.post(srv.url + "/v1/completions",
                             json={"prompt": "a", "max_tokens": 100_000, "stream": True}) as r:
            await r.content.readline()
            assert srv.replicas[0].in_flight == 1
        for _ in range(200):  # the server notices at its next write
            if srv.replicas[0].in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert srv.replicas[0].in_flight == 0
        await asyncio.sleep(1.2)  # the engine's next state report
        fam = await _metrics(http, srv)
        assert _value(fam, "vllm:num_requests_running") == 0

    _serve(t)


def test_a_run_of_the_openai_engine_against_the_server() -> None:
    events: list[Event] = []

    async def main() -> Any:
        async with SimServer(ServeConfig(port=0)) as srv:
            config = RunConfig(
                workload="sequential", engine="openai", meters=["none"], batch_limit=8,
                workflows=3, workload_params={"variant": "chain", "chunks": 2,
                                              "chunk_tokens": 64, "output_tokens": 12,
                                              "concurrency": 3},
                engine_options={"url": srv.url + "/v1", "metrics_interval_s": 0.2})
            runner = Runner(config)
            runner.bus.subscribe(events.append)
            return await asyncio.wait_for(runner.run(), 30), srv.requests_total

    out, served = run_async(main(), virtual=False)
    assert out.reason == "completed", out.message
    finished = [e for e in events if isinstance(e, RequestEvent) and e.phase == "finished"]
    assert len(finished) == 6 == served
    assert all(e.output_tokens == 12 and e.ttft_s and e.ttft_s > 0 for e in finished)
    states = [e for e in events if isinstance(e, EngineStateEvent) and e.source == "engine"
              and e.kv_cache_pct is not None]
    assert states  # scraped from the server's /metrics


def test_prefix_index_finds_the_leading_blocks_seen_before() -> None:
    idx = PrefixIndex()
    shared = " ".join(f"s{i}" for i in range(120))  # 10 blocks of 12 words
    assert idx.lookup(shared + " tail one", None) == (None, 0)
    key, tokens = idx.lookup(shared + " tail two", None)
    assert key is not None and tokens == round(10 * 12 * 1.33)
    assert idx.lookup(shared + " tail three x y", None) == (key, tokens)
    assert idx.lookup("other words entirely " * 20, None) == (None, 0)
    ids = list(range(100))
    assert idx.lookup("", ids) == (None, 0)
    assert idx.lookup("", [*ids[:64], 7, 7, 7])[1] == 64  # 4 blocks of 16 ids
    small = PrefixIndex(max_blocks=5)
    small.lookup(shared, None)
    assert len(small._seen) == 5  # bounded


def test_a_long_shared_prompt_is_prefilled_once_then_reused() -> None:
    """The twin's prefix cache over HTTP: the third prompt with the same 6,000-word system
    prompt starts far sooner than the first (its prefill is mostly cached)."""
    async def t(srv: SimServer, http: aiohttp.ClientSession) -> None:
        system = " ".join(f"rule{i}" for i in range(6000))
        ttft = []
        for q in ("first question", "second question", "third question"):
            t0 = time.perf_counter()
            async with http.post(srv.url + "/v1/completions", json={
                    "prompt": system + " " + q, "max_tokens": 2, "stream": True}) as resp:
                await resp.content.readline()
                ttft.append(time.perf_counter() - t0)
                await resp.read()
        assert ttft[2] < ttft[0] / 3, ttft

    _serve(t)
