"""A whole run over a fleet of `wattflow serve` servers (in this process, so the test can
read each simulated GPU's exact energy at the session's times): the openai engine over
four servers (H100s and A100s, one with two GPUs), the dcgm meter on their /metrics.
Each node's energy in the session is its GPUs' own counters' over the same span; a
server killed mid-run is lost, and the run finishes on the others."""

from __future__ import annotations

import asyncio
import collections
import itertools
from typing import Any

import pytest

from app.core.clock import run_async
from app.core.events import ErrorEvent, Event, RequestEvent, Sample, SessionHeader
from app.core.runner import RunConfig, Runner
from engines.sim_server.server import ServeConfig
from tests.meters.server_thread import ServersInThread

pytestmark = pytest.mark.timeout(120)

FLEET = [("node-a", "h100", 1), ("node-b", "a100", 1), ("node-c", "h100", 2),
         ("node-d", "a100", 1)]


def _interpolate(series: list[tuple[float, list[float]]], t: float, gpu: int) -> float:
    """The counter (mJ) at server time `t`, linear between the two readings around it."""
    for (t0, e0), (t1, e1) in itertools.pairwise(series):
        if t0 <= t <= t1:
            return e0[gpu] + (e1[gpu] - e0[gpu]) * (t - t0) / (t1 - t0)
    raise AssertionError(f"no reading around {t}")


def _fleet(kill_after_s: float | None) -> tuple[Any, list[Event], list[str], dict[str, float]]:
    """(outcome, events, the servers' URLs, node -> its GPUs' energy (J) over the span the
    session read them, from the servers' own counters read every 50 ms by this test)."""
    events: list[Event] = []
    configs = [ServeConfig(port=0, gpus=n, hostname=node, collect_interval_s=0,
                           engine_options={"gpu": gpu, "max_num_seqs": 16})
               for node, gpu, n in FLEET]
    with ServersInThread(configs) as fleet:
        urls = [s.url for s in fleet.servers]
        # node -> [(server time, each GPU's counter mJ)], read on the servers' thread.
        readings: dict[str, list[tuple[float, list[float]]]] = collections.defaultdict(list)
        offsets: dict[str, float] = {}

        def read_all() -> None:
            for srv in fleet.servers:
                assert srv.clock is not None
                if not srv._stopping:
                    readings[srv.cfg.hostname or ""].append((srv.clock.now(), srv.energy_mj()))

        async def record() -> None:
            while True:
                await asyncio.to_thread(fleet.call, read_all)
                await asyncio.sleep(0.05)

        async def main() -> Any:
            config = RunConfig(
                workload="sequential", engine="openai", meters=["dcgm"], batch_limit=24,
                duration_s=6.0, poll_interval_s=0.25,
                # The servers collect at every scrape (--dcgm-interval 0): said so.
                meter_options={"exporter_interval_s": 0},
                workload_params={"variant": "chain", "chunks": 3, "chunk_tokens": 128,
                                 "output_tokens": 32, "concurrency": 12},
                engine_options={"url": [u + "/v1" for u in urls],
                                 "policy": "least_outstanding", "metrics_interval_s": 0.5})
            recorder = asyncio.create_task(record())
            await asyncio.sleep(0.1)
            runner = Runner(config)
            runner.bus.subscribe(events.append)
            task = asyncio.create_task(runner.run())
            if kill_after_s is not None:
                await asyncio.sleep(kill_after_s)
                await asyncio.to_thread(fleet.kill, 1)
            out = await asyncio.wait_for(task, 60)
            await asyncio.sleep(0.1)
            recorder.cancel()
            run_now = runner.clock.now()
            for srv in fleet.servers:
                assert srv.clock is not None
                # Both clocks read the same monotonic time: their offset is fixed.
                offsets[srv.cfg.hostname or ""] = srv.clock.now() - run_now
            return out

        out = run_async(main(), virtual=False)
    counters: dict[str, float] = {}
    killed = {FLEET[1][0]} if kill_after_s is not None else set()
    for node, devs in _node_energy(events).items():
        if node in killed:
            continue  # its last readings race its death: no counter to compare with
        total = 0.0
        for dev, samples in devs.items():
            gpu = int(dev.rsplit("gpu", 1)[1])
            total += (_interpolate(readings[node], samples[-1].t_s + offsets[node], gpu)
                      - _interpolate(readings[node], samples[0].t_s + offsets[node], gpu))
        counters[node] = total / 1000.0
    return out, events, urls, counters


def _node_energy(events: list[Event]) -> dict[str, dict[str, list[Sample]]]:
    by: dict[str, dict[str, list[Sample]]] = collections.defaultdict(
        lambda: collections.defaultdict(list))
    for e in events:
        if isinstance(e, Sample) and e.meter == "dcgm" and e.energy_mj is not None:
            by[e.device.split("/")[0]][e.device].append(e)
    return by


def test_each_nodes_energy_in_the_session_is_its_gpus_own_counter() -> None:
    out, events, urls, counters = _fleet(kill_after_s=None)
    assert out.reason == "completed", out.message
    header = next(e for e in events if isinstance(e, SessionHeader))
    devices = [d for m in header.meters for d in m["devices"]]
    assert sorted(d["device"] for d in devices) == [
        "node-a/gpu0", "node-b/gpu0", "node-c/gpu0", "node-c/gpu1", "node-d/gpu0"]
    assert {d["name"] for d in devices} == {"NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"}
    assert any("-c 1000" in n for m in header.meters for n in m["notes"])
    by_node = _node_energy(events)
    assert set(by_node) == {"node-a", "node-b", "node-c", "node-d"}
    for node, devs in by_node.items():
        session_j = sum((s[-1].energy_mj - s[0].energy_mj) / 1000 for s in devs.values())
        assert session_j > 5 * 50  # at least idle power over the run
        assert session_j == pytest.approx(counters[node], rel=0.01), node
    done = [e for e in events if isinstance(e, RequestEvent) and e.phase == "finished"]
    assert len({e.endpoint for e in done}) == 4
    assert all(e.energy_j and e.energy_j.get("gpu", 0) > 0 for e in done)
    # Each node's energy went to the requests its endpoint served, or to its idle line.
    endpoint_of = {u.removeprefix("http://"): node for u, (node, _, _) in zip(urls, FLEET,
                                                                             strict=True)}
    charged: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if isinstance(e, RequestEvent) and e.energy_j and e.endpoint:
            charged[endpoint_of[e.endpoint]] += e.energy_j.get("gpu", 0.0)
    idle = out.summary["idle_energy_by_node_j"]
    for node, devs in by_node.items():
        session_j = sum((s[-1].energy_mj - s[0].energy_mj) / 1000 for s in devs.values())
        assert charged[node] + idle[node] == pytest.approx(session_j, rel=1e-6), node
        assert charged[node] > 0.2 * session_j


def test_a_server_killed_mid_run_is_lost_and_the_others_finish_the_run() -> None:
    out, events, urls, _ = _fleet(kill_after_s=2.0)
    assert out.reason == "completed", out.message
    killed = urls[1].removeprefix("http://")
    errors = [e.message for e in events if isinstance(e, ErrorEvent)]
    assert any(m.startswith(f"endpoint {killed} lost") for m in errors), errors
    assert any(m.startswith("dcgm: node-b") and "unreachable" in m for m in errors), errors
    reqs = [e for e in events if isinstance(e, RequestEvent)]
    submitted = {e.request_id for e in reqs if e.phase == "submitted"}
    ended = {e.request_id for e in reqs if e.phase in ("finished", "failed")}
    assert submitted == ended  # nothing lost from the session
    late = [e for e in reqs if e.phase == "finished" and e.t_s > 3.0]
    assert late and all(e.endpoint != killed for e in late)
    # node-b's energy stops at its death; the others' goes on to the end.
    by_node = _node_energy(events)
    last = {n: max(s[-1].t_s for s in d.values()) for n, d in by_node.items()}
    assert last["node-b"] < 2.6 and all(last[n] > 5.5 for n in ("node-a", "node-c", "node-d"))
