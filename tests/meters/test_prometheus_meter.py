"""The `prometheus` meter against a Prometheus stand-in (tests/fakes/fake_prometheus.py)
that scrapes real `wattflow serve` servers: the same devices as the dcgm meter, readings
timed when Prometheus scraped them, a selector, the server going away, a whole run."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from typing import Any

import pytest

import meters
from app.core.clock import run_async
from app.core.events import Event, RequestEvent, Sample
from app.core.runner import RunConfig, Runner
from engines.sim_server.server import ServeConfig
from meters.base import MeterUnavailable, PowerCapError
from meters.prometheus.meter import PrometheusMeter
from tests.fakes.fake_prometheus import FakePrometheus
from tests.meters.server_thread import ServersInThread

pytestmark = pytest.mark.timeout(90)


def _servers() -> ServersInThread:
    return ServersInThread([ServeConfig(port=0, hostname=h, collect_interval_s=0)
                            for h in ("node-a", "node-b")])


def test_reads_the_fleets_gpus_through_prometheus_timed_when_scraped() -> None:
    with _servers() as fleet:
        prom: FakePrometheus = fleet.run(FakePrometheus(
            [s.url + "/metrics" for s in fleet.servers], scrape_interval_s=0.5).start())
        try:
            m = meters.create("prometheus", {"prometheus_url": prom.url, "poll_interval_s": 0.1})
            m.open()
            devs = {d.device: d for d in m.info().devices}
            assert set(devs) == {"node-a/gpu0", "node-b/gpu0"}
            d = devs["node-a/gpu0"]
            assert d.node == "node-a" and d.labels["job"] == "dcgm"
            assert d.labels["instance"] == fleet.servers[0].url.removeprefix("http://")
            assert d.power_limit_range_w is None
            with pytest.raises(PowerCapError, match="local-only"):
                m.set_power_limit("node-a/gpu0", 300)
            t0 = time.monotonic()
            samples: list[Sample] = []
            while time.monotonic() - t0 < 2.6:
                samples += m.sample(time.monotonic() - t0)
                time.sleep(0.1)
            by_dev = collections.defaultdict(list)
            for s in samples:
                by_dev[s.device].append(s)
            scrapes = prom.scraped[fleet.servers[0].url.removeprefix("http://")]
            for dev, ss in by_dev.items():
                # One sample per Prometheus scrape (every 0.5 s), not per query (every
                # 0.1 s): never more samples than scrapes, however the host is loaded.
                assert 3 <= len(ss) <= len(scrapes) + 1, (dev, len(ss), len(scrapes))
                assert all(b.energy_mj > a.energy_mj for a, b in itertools.pairwise(ss))  # type: ignore[operator]
                assert all(s.power_w and s.power_w >= 75 for s in ss)
            # Timed when scraped: the gaps between readings are the gaps between the
            # scrapes that made them (the first was scraped before the meter's clock
            # began: it is timed at its start), not between the meter's queries.
            ts = [s.t_s for s in by_dev["node-a/gpu0"]]
            gaps = [b - a for a, b in itertools.pairwise(ts)][1:]
            # (a reading the meter missed under load makes a gap of two scrapes)
            scrape_gaps = [b - a for a, b in itertools.combinations(scrapes, 2)]
            assert gaps and all(any(abs(g - sg) < 0.02 for sg in scrape_gaps) for g in gaps), (
                gaps, scrape_gaps)
            assert all("timestamp(" in q or "__name__" in q for q in prom.queries)
        finally:
            fleet.run(prom.close())


def test_a_selector_narrows_the_series_and_bad_servers_are_one_line() -> None:
    with _servers() as fleet:
        prom: FakePrometheus = fleet.run(FakePrometheus(
            [s.url + "/metrics" for s in fleet.servers]).start())
        try:
            m = PrometheusMeter(prom.url, selector='Hostname="node-b"')
            m.open()
            assert [d.device for d in m.info().devices] == ["node-b/gpu0"]
            none = PrometheusMeter(prom.url, selector='job="node"')
            with pytest.raises(MeterUnavailable, match="no DCGM_FI_DEV_"):
                none.open()
            prom.down = True
            assert m.sample(1.0) == [] and m.sample(9.0) == []
            errors = m.drain_errors()
            assert len(errors) == 1 and "HTTP 503" in errors[0] and "\n" not in errors[0]
            prom.down = False
            time.sleep(0.3)
            m.sample(20.0)
            assert any("answers again" in n for n in m.drain_notes())
        finally:
            fleet.run(prom.close())
    for opts, words in [({}, "give the server"), ({"prometheus_url": "prom:9090"}, "must be http")]:
        with pytest.raises(MeterUnavailable, match=words):
            meters.create("prometheus", opts)
    with pytest.raises(MeterUnavailable, match="unreachable"):
        PrometheusMeter("http://127.0.0.1:9", scrape_timeout_s=1).open()


def test_a_run_measured_through_prometheus() -> None:
    events: list[Event] = []
    with _servers() as fleet:
        prom: FakePrometheus = fleet.run(FakePrometheus(
            [s.url + "/metrics" for s in fleet.servers], scrape_interval_s=0.25).start())
        try:
            config = RunConfig(
                workload="sequential", engine="openai", meters=["prometheus"],
                batch_limit=8, duration_s=3.0,
                meter_options={"prometheus_url": prom.url, "poll_interval_s": 0.25},
                workload_params={"variant": "chain", "chunks": 2, "chunk_tokens": 64,
                                 "output_tokens": 24, "concurrency": 4},
                engine_options={"url": [s.url for s in fleet.servers],
                                 "metrics_interval_s": 0})

            async def main() -> Any:
                runner = Runner(config)
                runner.bus.subscribe(events.append)
                return await asyncio.wait_for(runner.run(), 60)

            out = run_async(main(), virtual=False)
        finally:
            fleet.run(prom.close())
    assert out.reason == "completed", out.message
    gpu_samples = [e for e in events if isinstance(e, Sample) and e.meter == "prometheus"]
    assert {s.device for s in gpu_samples} == {"node-a/gpu0", "node-b/gpu0"}
    measured = out.summary["measured_energy_j"]["gpu"]
    assert measured > 2 * 3 * 75 * 0.7  # two GPUs, at least about idle power
    done = [e for e in events if isinstance(e, RequestEvent) and e.phase == "finished"]
    assert done and sum(e.energy_j.get("gpu", 0) for e in done if e.energy_j) > 0


class ScriptedPrometheus(PrometheusMeter):
    """A fake of the server's answers (a scripted query function, no HTTP): the energy
    counter of one GPU, scraped at `scrape` (unix s), valued `energy_j` (the exporter's
    counter is in mJ: `energy_j * 1000`); `rescrape`
    moves the scrape on between the values query and the timestamp query."""

    def __init__(self) -> None:
        super().__init__("http://scripted:9090", poll_interval_s=0.1)
        self.scrape, self.energy_j, self.now = 1000.0, 5.0, 1000.05
        self.rescrape: tuple[float, float] | None = None  # (new scrape, new energy)

    def _query(self, promql: str) -> tuple[float, list[dict[str, Any]]]:
        labels = {"gpu": "0", "Hostname": "n", "instance": "n:9400", "job": "dcgm"}
        if promql.startswith("timestamp("):
            return self.now, [{"metric": labels, "value": [self.now, str(self.scrape)]}]
        vec = [{"metric": {**labels, "__name__": "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"},
                "value": [self.now, str(self.energy_j * 1000)]}]
        if self.rescrape is not None:  # after the values were read
            self.scrape, self.energy_j = self.rescrape
            self.rescrape = None
        return self.now, vec


def test_a_counter_scraped_again_mid_read_is_read_whole_at_the_next_look() -> None:
    m = ScriptedPrometheus()
    m.open()
    assert [s.energy_mj for s in m.sample(0.0)] == [5_000.0]
    # Between the values (still 5 J) and their time, Prometheus scrapes again (7 J):
    # timed by that scrape, the old value would be placed a scrape late.
    m.now, m.rescrape = 1000.6, (1000.5, 7.0)
    assert m.sample(1.0) == []
    m.now = 1000.7
    (s,) = m.sample(2.0)
    assert s.energy_mj == 7_000.0
    # Midway between the scrape that saw 5 J and the one that saw 7 J, each on the
    # caller's clock by its age at the read that saw it: 0.05 s before 0.0, 0.2 s
    # before 2.0 (the read that met the rescrape changed nothing).
    assert s.t_s == pytest.approx((-0.05 + 1.8) / 2, abs=0.01)
