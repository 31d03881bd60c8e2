"""The `openai` engine over several endpoints: the policies, each request's endpoint in
its records, an endpoint that dies (marked lost, its requests failed over, the run goes
on) and one that comes back. Real `SimServer`s (wattflow serve) on loopback."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from app.commands.report import analyse, report_dict
from app.core.clock import LoopClock, run_async
from app.core.events import EngineStateEvent, ErrorEvent, Event, RequestEvent
from app.core.runner import RunConfig, Runner, RunOutcome
from engines.base import EngineContext, EngineError, Request
from engines.openai.endpoints import Endpoint, EndpointError, Router, make_endpoints, read_urls_file
from engines.openai.engine import OpenAIEngine
from engines.sim_server.server import ServeConfig, SimServer
from tests.session_records import session_records

pytestmark = pytest.mark.timeout(90)


def _eps(n: int) -> list[Endpoint]:
    return make_endpoints([(f"http://127.0.0.1:{8000 + i}", None) for i in range(n)])


# -- the policies ---------------------------------------------------------------------
def test_round_robin_takes_the_live_endpoints_in_turn() -> None:
    eps = _eps(3)
    r = Router(eps, "round_robin")
    assert [r.pick("w").name for _ in range(6)] == [e.name for e in eps] * 2  # type: ignore[union-attr]
    eps[1].lost = True
    picked = collections.Counter(r.pick("w").name for _ in range(10))  # type: ignore[union-attr]
    assert set(picked) == {eps[0].name, eps[2].name} and min(picked.values()) == 5


def test_least_outstanding_takes_the_emptiest() -> None:
    eps = _eps(3)
    eps[0].outstanding, eps[1].outstanding, eps[2].outstanding = 5, 2, 9
    r = Router(eps, "least_outstanding")
    assert r.pick("w") is eps[1]
    assert r.pick("w", exclude={eps[1]}) is eps[0]


def test_affinity_keeps_a_workflow_on_one_endpoint_and_moves_only_the_lost_ones() -> None:
    eps = _eps(4)
    r = Router(eps, "affinity")
    before = {f"wf{i}": r.pick(f"wf{i}") for i in range(400)}
    assert all(r.pick(w) is e for w, e in before.items())  # sticky
    spread = collections.Counter(e.name for e in before.values() if e)
    assert len(spread) == 4 and min(spread.values()) > 60  # spread about evenly
    eps[2].lost = True
    after = {w: r.pick(w) for w in before}
    moved = [w for w in before if after[w] is not before[w]]
    assert moved and all(before[w] is eps[2] for w in moved)
    assert all(after[w] is not eps[2] for w in before)


def test_when_all_are_lost_the_one_lost_longest_ago_is_tried() -> None:
    eps = _eps(3)
    for e, t in zip(eps, (5.0, 1.0, 3.0), strict=True):
        e.lost, e.lost_at = True, t
    r = Router(eps, "round_robin")
    assert r.pick("w") is eps[1]
    assert r.pick("w", exclude=set(eps)) is None


def test_endpoint_names_urls_and_files(tmp_path: Path) -> None:
    eps = make_endpoints([("http://u:pw@127.0.0.1:9000/v1", None), ("http://h:1", "gpu-node-b")])
    assert [e.name for e in eps] == ["127.0.0.1:9000", "gpu-node-b"]
    assert eps[0].shown_url == "http://127.0.0.1:9000" and eps[0].url.endswith("@127.0.0.1:9000")
    f = tmp_path / "endpoints.txt"
    f.write_text("# the fleet\nhttp://10.0.0.1:8000/v1  node-a\n\nhttp://10.0.0.2:8000 # b\n")
    assert read_urls_file(str(f)) == [("http://10.0.0.1:8000/v1", "node-a"),
                                      ("http://10.0.0.2:8000", None)]
    f.write_text("http://10.0.0.1:8000 node-a node-a/gpu0,node-a/gpu1\n")
    (e,) = make_endpoints(read_urls_file(str(f)))
    assert (e.name, e.devices) == ("node-a", ["node-a/gpu0", "node-a/gpu1"])
    assert e.record() == {"name": "node-a", "url": "http://10.0.0.1:8000",
                          "devices": ["node-a/gpu0", "node-a/gpu1"]}
    bad = [("w x y z\n", "line 1: expected 'URL"), ("# nothing\n", "no endpoints")]
    for text, words in bad:
        f.write_text(text)
        with pytest.raises(EndpointError, match=words):
            read_urls_file(str(f))
    with pytest.raises(EndpointError, match="given twice"):
        make_endpoints([("http://h:1", None), ("http://h:1/v1", None)])


@pytest.mark.parametrize(("options", "words"), [
    ({"url": ["http://h:1", "ftp://h:2"]}, "url must be http"),
    ({"url": ["http://h:1", "http://h:2"], "policy": "random"}, "option policy must be one"),
    ({"urls_file": "/nonexistent/endpoints.txt"}, "urls_file /nonexistent/endpoints.txt"),
    ({"url": ["http://h:1", 7.5]}, "url must be http.*got .7.5."),
])
def test_bad_endpoint_options_are_one_line(options: dict[str, Any], words: str) -> None:
    ctx = EngineContext(LoopClock(asyncio.new_event_loop()), lambda e: None)
    with pytest.raises(EngineError, match=words) as err:
        OpenAIEngine.from_options(ctx, options)
    assert "\n" not in str(err.value)


# -- runs against several servers ---------------------------------------------------------
def _fleet_run(n: int, options: dict[str, Any],
               during: Callable[[list[SimServer]], Awaitable[None]] | None = None,
               **cfg: Any) -> tuple[RunOutcome, list[Event], list[SimServer]]:
    events: list[Event] = []

    async def main() -> tuple[RunOutcome, list[SimServer]]:
        servers = [await SimServer(ServeConfig(port=0, engine_options={"max_num_seqs": 8})
                                   ).__aenter__() for _ in range(n)]
        try:
            config = RunConfig(
                workload="sequential", engine="openai", meters=["none"],
                workload_params={"variant": "chain", "chunks": 3, "chunk_tokens": 64,
                                 "output_tokens": 24, "concurrency": 6},
                engine_options={"url": [s.url + "/v1" for s in servers],
                                 "metrics_interval_s": 0.2, **options},
                **{"batch_limit": 12, "workflows": 12, **cfg})
            runner = Runner(config)
            runner.bus.subscribe(events.append)
            task = asyncio.create_task(runner.run())
            if during is not None:
                await during(servers)
            return await asyncio.wait_for(task, 60), servers
        finally:
            for s in servers:
                await s.stop()

    out, servers = run_async(main(), virtual=False)
    return out, events, servers


def _requests(events: list[Event], phase: str) -> list[RequestEvent]:
    return [e for e in events if isinstance(e, RequestEvent) and e.phase == phase]


def test_requests_spread_over_the_endpoints_and_record_where_they_went(tmp_path: Path) -> None:
    session = tmp_path / "fleet.jsonl"
    out, events, servers = _fleet_run(3, {"policy": "round_robin"}, session_path=session)
    assert out.reason == "completed", out.message
    done = _requests(events, "finished")
    assert len(done) == 36 and not _requests(events, "failed")
    names = {s.url.removeprefix("http://") for s in servers}
    by_endpoint = collections.Counter(e.endpoint for e in done)
    assert set(by_endpoint) == names and min(by_endpoint.values()) == 12  # in turn
    assert [s.requests_total for s in servers] == [12, 12, 12]
    lines = session_records(session)
    assert {e["name"] for e in lines[0]["engine"]["details"]["endpoints"]} == names
    assert all(d["endpoint"] in names for d in lines
               if d["kind"] == "request" and d["phase"] != "submitted")
    states = [e for e in events if isinstance(e, EngineStateEvent) and e.source == "engine"
              and e.running is not None]
    assert states  # the three servers' gauges, summed
    # `report` breaks the run down per endpoint.
    rows = {r["endpoint"]: r for r in analyse(session).endpoints}
    assert set(rows) == names
    assert all(r["requests_finished"] == 12 and r["requests_failed"] == 0
               and r["output_tokens"] == 12 * 24 and r["ttft_p50_s"] > 0 for r in rows.values())
    assert report_dict(analyse(session))["endpoints"] == list(rows.values())


def test_affinity_keeps_each_workflow_on_one_endpoint() -> None:
    out, events, _ = _fleet_run(3, {"policy": "affinity"})
    assert out.reason == "completed", out.message
    per_workflow: dict[str, set[str | None]] = collections.defaultdict(set)
    for e in _requests(events, "finished"):
        per_workflow[e.workflow_id].add(e.endpoint)
    assert len(per_workflow) == 12 and all(len(v) == 1 for v in per_workflow.values())
    assert len(set().union(*per_workflow.values())) >= 2


def test_an_endpoint_that_dies_is_lost_and_the_run_finishes_on_the_others() -> None:
    killed: list[str] = []

    async def kill_one(servers: list[SimServer]) -> None:
        await asyncio.sleep(1.0)
        killed.append(servers[1].url.removeprefix("http://"))
        await servers[1].kill()

    out, events, _servers = _fleet_run(3, {"policy": "round_robin"}, during=kill_one,
                                      workflows=24)
    assert out.reason == "completed", out.message
    lost = [e for e in events if isinstance(e, ErrorEvent) and "lost" in e.message]
    errors = [e.message for e in events if isinstance(e, ErrorEvent)]
    assert len(lost) == 1 and lost[0].message.startswith(f"endpoint {killed[0]} lost"), errors
    assert "2 of 3 endpoints left" in lost[0].message
    done, failed = _requests(events, "finished"), _requests(events, "failed")
    # Every request submitted ended (a chain whose step failed submits no more steps).
    assert len(done) + len(failed) == len(_requests(events, "submitted")) > 60
    # Only requests cut mid-answer failed (their tokens were counted); none was refused.
    why = [(e.reason, e.output_tokens, e.endpoint) for e in failed]
    assert all(e.reason and "stream cut before finish" in e.reason for e in failed), why
    assert all(e.output_tokens > 0 for e in failed), why
    t_lost = lost[0].t_s
    late = [(e.t_s, e.endpoint) for e in done if e.t_s > t_lost + 0.5]
    assert all(ep != killed[0] for _, ep in late), (t_lost, late)
    assert out.summary["requests_finished"] == len(done) > 48, why


def test_without_failover_a_request_to_the_dead_endpoint_fails() -> None:
    async def kill_first(servers: list[SimServer]) -> None:
        await servers[0].kill()

    _out, events, _ = _fleet_run(2, {"policy": "round_robin", "failover": "none"},
                                during=kill_first, workflows=4)
    failed = _requests(events, "failed")
    assert any(e.reason and e.reason.startswith("connection refused") for e in failed)
    assert _requests(events, "finished")


def test_a_lost_endpoint_that_answers_again_is_back() -> None:
    async def main() -> list[Event]:
        emitted: list[Event] = []
        a = await SimServer(ServeConfig(port=0)).__aenter__()
        b = await SimServer(ServeConfig(port=0)).__aenter__()
        eng = OpenAIEngine.from_options(EngineContext(LoopClock(), emitted.append), {
            "url": [a.url, b.url], "policy": "round_robin", "probe_interval_s": 0.1,
            "metrics_interval_s": 0})
        await eng.start()
        try:
            port = a.port
            await a.kill()
            await a.stop()
            for i in range(2):  # one of them meets the dead one and fails over
                evs = [ev async for ev in eng.generate(Request(f"r{i}", "hi", 2, 3))]
                assert evs[-1].finished
            for _ in range(50):  # the endpoint that cut a request is probed at once
                if eng.endpoints[0].lost:
                    break
                await asyncio.sleep(0.02)
            assert eng.endpoints[0].lost
            a2 = await SimServer(ServeConfig(port=port)).__aenter__()
            for _ in range(50):
                if not eng.endpoints[0].lost:
                    break
                await asyncio.sleep(0.05)
            await a2.stop()
        finally:
            await eng.stop()
            await b.stop()
        return emitted

    emitted = asyncio.run(main())
    notes = [e.note for e in emitted if isinstance(e, EngineStateEvent) and e.note]
    assert any(n.startswith("endpoint 127.0.0.1:") and "is back" in n for n in notes)
    assert any(n.startswith("endpoints: ") and "lost 1x" in n for n in notes)
