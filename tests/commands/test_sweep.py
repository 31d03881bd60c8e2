from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]


def wattflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_sweep_runs_every_point_of_the_grid_with_its_knobs(tmp_path: Path) -> None:
    out = wattflow("sweep", "--fast", "--workload", "sequential", "-p", "variant=mapreduce",
                   "--workflows", "1", "--grid", "batch_limit=1,8", "--grid",
                   "power_cap=700,400", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    files = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert files == ["batch_limit=1-power_cap=400.jsonl", "batch_limit=1-power_cap=700.jsonl",
                     "batch_limit=8-power_cap=400.jsonl", "batch_limit=8-power_cap=700.jsonl"]
    lines = [orjson.loads(x) for x in
             (tmp_path / "batch_limit=8-power_cap=400.jsonl").read_bytes().splitlines()]
    assert lines[0]["config"]["start_knobs"] == {"batch_limit": 8, "power_cap": 400.0}
    # The point's values go through the knob path: events with source `sweep`.
    sweep = {e["knob"]: e["value"] for e in lines if e["kind"] == "knob"
             and e["source"] == "sweep"}
    assert sweep == {"batch_limit": 8, "power_cap": 400.0}
    assert "comparison" in out.stdout and out.stdout.count("batch_limit=") >= 8


def test_sweep_usage_errors(tmp_path: Path) -> None:
    for args, needle in (
        (["--duration", "5"], "--grid"),
        (["--grid", "batch_limit=1,2"], "--duration or --workflows"),
        (["--duration", "5", "--grid", "voltage=1,2"], "unknown knob"),
        (["--duration", "5", "--grid", "batch_limit=1,x"], "not a number"),
    ):
        out = wattflow("sweep", "--fast", "--dir", str(tmp_path), *args)
        assert out.returncode == 2, (args, out.stderr)
        assert needle in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
