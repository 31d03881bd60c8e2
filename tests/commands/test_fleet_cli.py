"""The fleet as a user runs it: four `wattflow serve` processes (simulated H100s and
A100s, one with two GPUs, each its own node), `wattflow run --engine openai` over all
four with the dcgm meter on their /metrics, one server killed mid-run.

Each surviving node's energy in the session matches its server's own counter within
1%: the counters read by this test before and after the run, less the idle energy of the
seconds outside the session (the servers idle then: exactly their GPUs' idle power).
The killed server is marked lost, the run finishes on the others, and every request
submitted has its end in the session."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.commands.serve_process import ROOT, ServeProcess
from tests.session_records import session_records

pytestmark = pytest.mark.timeout(180)

NODES = [("node-a", ["--gpu", "h100"], 75.0), ("node-b", ["--gpu", "a100"], 55.0),
         ("node-c", ["--gpu", "h100", "--gpus", "2"], 150.0), ("node-d", ["--gpu", "a100"], 55.0)]


def _counter_j(url: str) -> float:
    """The server's GPUs' energy counters (dcgm-exporter's, mJ), summed, in J."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text)
               if f.name == "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" for s in f.samples) / 1000


def test_a_fleet_of_four_servers_measured_and_one_killed(tmp_path: Path) -> None:
    session = tmp_path / "fleet.jsonl"
    servers = [ServeProcess("--node", node, "--dcgm-interval", "0", *args).start()
               for node, args, _ in NODES]
    try:
        before = {node: (time.time(), _counter_j(s.url)) for (node, _, _), s in
                  zip(NODES, servers, strict=True)}
        run = subprocess.Popen(
            [sys.executable, "-m", "app", "run", "--headless", "--engine", "openai",
             *[a for s in servers for a in ("--url", s.url + "/v1")],
             "-E", "policy=least_outstanding", "--meter", "dcgm",
             "-M", "exporter_interval_s=0", "--poll-interval", "0.25",
             "--workload", "sequential", "-p", "chunks=3", "-p", "chunk_tokens=256",
             "-p", "output_tokens=48", "-p", "concurrency=24", "--batch-limit", "32",
             "--duration", "8", "--session", str(session)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(4.0)
        killed = servers[1]
        assert killed.proc is not None
        killed.proc.send_signal(signal.SIGKILL)
        out, err = run.communicate(timeout=90)
        after = {node: (time.time(), _counter_j(s.url)) for (node, _, _), s in
                 zip(NODES, servers, strict=True) if s is not killed}
    finally:
        for s in servers:
            s.kill()
    assert run.returncode == 0, err
    lines = session_records(session)
    header, end = lines[0], lines[-1]
    assert end["kind"] == "end" and end["reason"] == "completed"
    # The killed server: lost, its requests failed over or failed; nothing went missing.
    lost = [e for e in lines if e["kind"] == "error" and " lost (" in e["message"]]
    assert len(lost) == 1 and killed.url.removeprefix("http://") in lost[0]["message"]
    reqs = [e for e in lines if e["kind"] == "request"]
    submitted = {e["request_id"] for e in reqs if e["phase"] == "submitted"}
    assert submitted == {e["request_id"] for e in reqs if e["phase"] in ("finished", "failed")}
    # Each node's energy: the session's, against its server's counter.
    rep = subprocess.run([sys.executable, "-m", "app", "report", "--json", str(session)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert rep.returncode == 0, rep.stderr
    doc = json.loads(rep.stdout)["sessions"][0]
    nodes = {n["node"]: n for n in doc["nodes"]}
    assert set(nodes) == {"node-a", "node-b", "node-c", "node-d"}
    assert nodes["node-c"]["gpus"] == 2 and nodes["node-b"]["gpu_energy_j"] > 0
    assert all(0 <= n["idle_energy_j"] < n["gpu_energy_j"] for n in nodes.values())
    samples = [e for e in lines if e["kind"] == "sample" and e["meter"] == "dcgm"]
    for node, _, idle_w in NODES:
        if node not in after:
            continue
        mine = [e["t_s"] for e in samples if e["device"].startswith(node + "/")]
        first_wall = header["started_unix_s"] + min(mine)
        last_wall = header["started_unix_s"] + max(mine)
        outside_s = (first_wall - before[node][0]) + (after[node][0] - last_wall)
        counter = after[node][1] - before[node][1] - idle_w * outside_s
        assert nodes[node]["gpu_energy_j"] == pytest.approx(counter, rel=0.01), node
    # The per-endpoint table: every endpoint served, the killed one too (before it died).
    assert {e["endpoint"] for e in doc["endpoints"]} == {
        s.url.removeprefix("http://") for s in servers}
    assert all(e["requests_finished"] > 0 for e in doc["endpoints"])
    assert "session:" in out
    # The progress lines add the remote GPUs' power (devices NODE/gpuN).
    watts = [int(m.group(1)) for m in re.finditer(r"GPU\s+(\d+)W", out)]
    assert watts and max(watts) > 4 * 55
