"""User mistakes get one line on stderr, exit 2, and never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def wattflow(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env=None)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--workload", "nosuch", "--headless"], "unknown workload 'nosuch'"),
        (["run", "--engine", "nosuch", "--headless"], "unknown engine 'nosuch'"),
        (["run", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["run", "--duration", "-5"], "argument --duration: -5 is out of range"),
        (["run", "--duration", "abc"], "not a number"),
        (["run", "--batch-limit", "0"], "batch_limit must be between 1 and 65536"),
        (["run", "--at", "soon:power_cap=300"], "SECONDS:KNOB=VALUE"),
        (["run", "--at", "10:voltage=3"], "unknown knob 'voltage'"),
        (["run", "--fast", "--engine", "openai"], "--fast"),
        (["run", "--workload", "sequential", "-p", "variant=spiral"],
         "variant must be chain or mapreduce"),
        (["run", "--workload", "sequential", "-p", "colour=blue"], "colour"),
        (["run", "-p", "interactive_rate=-1"], "interactive_rate"),
        (["run", "--autopilot", "ttft_p90=soon"], "not a duration"),
        (["run", "--autopilot", "speed_p90=2s"], "unknown metric"),
        (["run", "--autopilot-bound", "power_cap=300..700"], "needs --autopilot"),
        (["run", "--autopilot", "ttft_p90=2s", "--autopilot-bound", "rate=1..2"], "turns"),
        (["frobnicate"], "invalid choice"),
        (["replay", "nope.jsonl", "--headless"], "nope.jsonl"),
        (["replay", "x.jsonl", "--speed", "0"], "must be positive"),
        (["replay", "x.jsonl", "--speed", "fast-ish"], "expected a number"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    out = wattflow(*args, "--session", str(tmp_path / "s.jsonl")) if args[0] == "run" else \
        wattflow(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert needle in lines[0]
    assert "Traceback" not in out.stderr


def test_report_on_missing_or_non_session_file(tmp_path: Path) -> None:
    missing = wattflow("report", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "Traceback" not in missing.stderr
    junk = tmp_path / "junk.jsonl"
    junk.write_text("this is not json\n")
    bad = wattflow("report", str(junk))
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr


def test_existing_session_file_is_not_overwritten(tmp_path: Path) -> None:
    existing = tmp_path / "s.jsonl"
    existing.write_text("keep me\n")
    out = wattflow("run", "--headless", "--fast", "--session", str(existing))
    assert out.returncode == 2
    assert "already exists" in out.stderr
    assert existing.read_text() == "keep me\n"
