"""The prometheus meter against a real Prometheus server (Debian's `prometheus` package:
`apt-get install prometheus`), scraping two `wattflow serve` processes on loopback every
second. Skipped where the binary is not installed."""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from meters.prometheus.meter import PrometheusMeter
from tests.commands.serve_process import ServeProcess

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="no prometheus binary (apt-get install prometheus)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, list[ServeProcess]]]:
    servers = [ServeProcess("--node", f"node-{x}", "--dcgm-interval", "0").start()
               for x in "ab"]
    try:
        targets = ", ".join(f"'{s.url.removeprefix('http://')}'" for s in servers)
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: dcgm\n"
                       f"    static_configs:\n      - targets: [{targets}]\n")
        port = _free_port()
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'db'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "no prometheus"
                time.sleep(0.2)
            yield url, servers
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        for s in servers:
            s.kill()


def test_the_meter_reads_the_fleet_through_a_real_prometheus(
        prometheus: tuple[str, list[ServeProcess]]) -> None:
    url, _ = prometheus
    # The servers collect at every scrape (--dcgm-interval 0): said so, a reading is
    # timed when Prometheus scraped it.
    m = PrometheusMeter(url, selector='job="dcgm"', poll_interval_s=0.2, exporter_interval_s=0)
    deadline = time.monotonic() + 20
    while True:  # the first scrapes land within a second or two
        try:
            m.open()
            if len(m.info().devices) == 2:
                break
        except Exception:
            pass
        assert time.monotonic() < deadline, "no series in Prometheus"
        m = PrometheusMeter(url, selector='job="dcgm"', poll_interval_s=0.2,
                            exporter_interval_s=0)
        time.sleep(0.5)
    devs = {d.device: d for d in m.info().devices}
    assert set(devs) == {"node-a/gpu0", "node-b/gpu0"}
    assert devs["node-a/gpu0"].labels["job"] == "dcgm"
    t0 = time.monotonic()
    samples = []
    while time.monotonic() - t0 < 4.5:
        samples += m.sample(time.monotonic() - t0)
        time.sleep(0.2)
    a = [s for s in samples if s.device == "node-a/gpu0"]
    # One new reading per Prometheus scrape (1 s), timed when it was scraped.
    assert 3 <= len(a) <= 6, [s.t_s for s in a]
    assert all(y.energy_mj > x.energy_mj for x, y in itertools.pairwise(a))  # type: ignore[operator]
    # (The first reading was scraped before the meter's clock began: timed at its start.)
    gaps = [y.t_s - x.t_s for x, y in itertools.pairwise(a[1:])]
    assert all(0.8 < g < 1.2 for g in gaps), gaps
    # An idle simulated H100: 75 W between readings, from the energy counter.
    for x, y in itertools.pairwise(a[1:]):
        power = (y.energy_mj - x.energy_mj) / 1000 / (y.t_s - x.t_s)  # type: ignore[operator]
        assert 70 < power < 80, power
