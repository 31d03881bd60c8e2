"""The `dcgm` meter over real HTTP: `wattflow serve`'s /metrics (dcgm-exporter's series
for simulated GPUs) and a fake exporter's odd pages (counter resets, no energy counter,
node_exporter's RAPL series, garbage, a target that dies and comes back)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import meters
from app.core.clock import LoopClock, run_async
from app.core.events import Sample
from engines.base import EngineContext
from engines.openai.engine import OpenAIEngine
from engines.sim_server.server import ServeConfig, SimServer
from meters.base import MeterUnavailable, PowerCapError
from meters.dcgm.meter import DcgmMeter
from tests.fakes.fake_exporter import FakeExporter, dcgm_page, rapl_page

pytestmark = pytest.mark.timeout(60)


def _go(test: Callable[[], Awaitable[Any]]) -> Any:
    return run_async(asyncio.wait_for(test(), 40), virtual=False)


async def _sample(m: DcgmMeter, t: float, final: bool = False) -> list[Sample]:
    # The meter blocks on HTTP (the poller calls it from its thread): never on the loop
    # that runs the servers.
    return await asyncio.to_thread(m.sample_final if final else m.sample, t)


def test_reads_wattflow_serves_gpus_with_their_labels_and_exact_energy() -> None:
    async def t() -> None:
        async with SimServer(ServeConfig(port=0, gpus=2, hostname="node-a",
                                         collect_interval_s=0)) as srv:
            m = meters.create("dcgm", {"dcgm_url": srv.url + "/metrics"})
            await asyncio.to_thread(m.open)
            info = m.info()
            assert [d.device for d in info.devices] == ["node-a/gpu0", "node-a/gpu1"]
            d0 = info.devices[0]
            assert d0.node == "node-a" and d0.component == "gpu"
            assert d0.name == "NVIDIA H100 80GB HBM3" and d0.power_limit_range_w is None
            assert d0.labels["UUID"].startswith("GPU-") and d0.labels["Hostname"] == "node-a"
            assert "energy_mj" in d0.channels and "power_w" in d0.channels
            assert any("-c 1000" in n for n in info.notes)
            before = srv.energy_mj()
            got = await _sample(m, 0.0)
            after = srv.energy_mj()
            assert len(got) == 2
            for s, lo, hi in zip(got, before, after, strict=True):
                assert s.meter == "dcgm" and s.component == "gpu"
                assert s.energy_mj is not None and lo - 1 <= s.energy_mj <= hi + 1
                assert s.power_w is not None and 70 < s.power_w < 701
                assert s.power_limit_w == 700 and s.mem_used_mib and s.mem_used_mib > 60_000
                assert s.sm_clock_mhz is not None and s.util_pct is not None
            with pytest.raises(PowerCapError, match="local-only"):
                m.set_power_limit("node-a/gpu0", 300)
            m.close()

    _go(t)


def test_without_urls_it_reads_the_openai_engines_endpoints() -> None:
    async def t() -> None:
        async with SimServer(ServeConfig(port=0)) as a, SimServer(ServeConfig(port=0)) as b:
            eng = OpenAIEngine.from_options(EngineContext(LoopClock(), lambda e: None), {
                "url": [a.url + "/v1", b.url], "model": "m"})
            m = meters.create("dcgm", {"engine": eng})
            await asyncio.to_thread(m.open)
            # Both servers carry this host's name: each is its own node, by its address.
            names = {a.url.removeprefix("http://"), b.url.removeprefix("http://")}
            assert {d.node for d in m.info().devices} == names
            assert {d.device for d in m.info().devices} == {f"{n}/gpu0" for n in names}
            m.close()

    _go(t)


def test_readings_repeated_by_a_slow_exporter_are_dropped_and_timed_between_scrapes() -> None:
    async def t() -> None:
        async with SimServer(ServeConfig(port=0, collect_interval_s=0.5)) as srv:
            m = DcgmMeter([srv.url], poll_interval_s=0.05)
            await asyncio.to_thread(m.open)
            clock = LoopClock()
            samples: list[Sample] = []
            scrapes: list[float] = []
            while clock.now() < 3.0:
                scrapes.append(clock.now())
                samples += await _sample(m, clock.now())
                await asyncio.sleep(0.1)
            # One sample per collection (every 0.5 s), not per scrape (every 0.1 s).
            assert 4 <= len(samples) <= 8, len(samples)
            ts = [s.t_s for s in samples]
            assert ts == sorted(ts)
            energies = [s.energy_mj for s in samples]
            assert len(set(energies)) == len(energies)
            # Timed midway between the scrape that saw it first and the one before it
            # (when the exporter can have collected it), not at the scrape.
            mids = [(a + b) / 2 for a, b in itertools.pairwise(scrapes)]
            for s in samples[1:]:
                assert min(abs(s.t_s - m) for m in mids) < 0.03, (s.t_s, scrapes)
                assert all(abs(s.t_s - x) > 0.02 for x in scrapes)
            notes = m.drain_notes()
            period = [float(n.split("about every ")[1].split()[0]) for n in notes
                      if "change about every" in n]
            assert period and 0.4 < period[0] < 0.65, notes
            m.close()

    _go(t)


def test_odd_pages_reset_counters_power_only_rapl_and_garbage() -> None:
    async def t() -> None:
        gpu = await FakeExporter(dcgm_page(5_000_000, 300.0)).start()
        power_only = await FakeExporter(dcgm_page(None, 200.0, host="n2")).start()
        node = await FakeExporter(rapl_page(1000.0, 200.0)).start()
        try:
            m = DcgmMeter([gpu.url, power_only.url], node_targets=[f"n1={node.url}"],
                          poll_interval_s=0.01)
            await asyncio.to_thread(m.open)
            devs = {d.device: d for d in m.info().devices}
            assert set(devs) == {"n1/gpu0", "n2/gpu0", "n1/cpu0", "n1/dram0"}
            assert devs["n1/cpu0"].component == "cpu" and devs["n1/dram0"].component == "dram"
            first = {s.device: s for s in await _sample(m, 1.0)}
            assert first["n2/gpu0"].energy_mj == 0.0  # integrated from power from here
            assert first["n1/cpu0"].energy_mj == 1_000_000.0  # J -> mJ
            gpu.page = dcgm_page(5_600_000, 300.0)
            power_only.page = dcgm_page(None, 400.0, host="n2")
            node.page = rapl_page(1100.0, 210.0)
            second = {s.device: s for s in await _sample(m, 3.0)}
            assert second["n1/gpu0"].energy_mj == 5_600_000
            # The new reading was collected between the scrapes at 1 s and 3 s: timed at
            # 2 s, 1 s after the first at (200 + 400) / 2 W.
            assert second["n2/gpu0"].t_s == pytest.approx(2.0, abs=0.05)
            assert second["n2/gpu0"].energy_mj == pytest.approx(300_000, rel=0.05)
            assert second["n1/dram0"].energy_mj == 210_000
            gpu.page = dcgm_page(1_000, 300.0)  # the exporter restarted: the count goes back
            third = {s.device: s for s in await _sample(m, 4.0)}
            assert third["n1/gpu0"].energy_mj == 5_601_000  # kept monotonic
            gpu.page = "this is { not a page"
            assert "n1/gpu0" not in {s.device for s in await _sample(m, 5.0)}
            errors = m.drain_errors()
            assert len(errors) == 1 and "not a Prometheus text page" in errors[0]
            assert "\n" not in errors[0]
            gpu.page = dcgm_page(2_000, 300.0)
            assert "n1/gpu0" in {s.device for s in await _sample(m, 6.0)}
            assert any("answers again" in n for n in m.drain_notes())
            m.close()
        finally:
            for f in (gpu, power_only, node):
                await f.close()

    _go(t)


def test_a_target_that_dies_is_said_once_and_the_others_go_on() -> None:
    async def t() -> None:
        a = await FakeExporter(dcgm_page(1_000, 100.0, host="a")).start()
        b = await FakeExporter(dcgm_page(1_000, 100.0, host="b")).start()
        m = DcgmMeter([a.url, b.url], poll_interval_s=0.01, scrape_timeout_s=1.0)
        await asyncio.to_thread(m.open)
        await a.close()
        for i in range(3):
            b.page = dcgm_page(2_000 + i, 100.0, host="b")
            got = await _sample(m, 1.0 + i)
            assert [s.device for s in got] == ["b/gpu0"]
        errors = m.drain_errors()
        assert len(errors) == 1 and errors[0].startswith("dcgm: ") and "unreachable" in errors[0]
        m.close()
        await b.close()

    _go(t)


def test_nothing_to_read_is_a_one_line_reason() -> None:
    async def t() -> None:
        empty = await FakeExporter("# nothing here\n").start()
        try:
            for targets, words in [([empty.url], "no DCGM_FI_DEV_"),
                                   (["http://127.0.0.1:9/metrics"], "unreachable")]:
                m = DcgmMeter(targets, scrape_timeout_s=1.0)
                with pytest.raises(MeterUnavailable, match=words) as err:
                    await asyncio.to_thread(m.open)
                assert "\n" not in str(err.value)
        finally:
            await empty.close()
        with pytest.raises(MeterUnavailable, match="no exporter to scrape"):
            meters.create("dcgm", {})
        with pytest.raises(MeterUnavailable, match="must be http"):
            meters.create("dcgm", {"dcgm_url": "node-a:9400"})

    _go(t)
