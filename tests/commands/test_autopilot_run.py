"""`wattflow run --autopilot` as a user runs it: on the twin, on virtual time, the session
records the objective, each decision (an `autopilot` event) and each knob change (source
`autopilot`, with its reason), inside the user's bounds; report and the reader take it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.core.events import AutopilotEvent, KnobEvent
from app.core.session_reader import read_session

ROOT = Path(__file__).resolve().parents[2]


def test_autopilot_run_is_recorded_and_stays_in_bounds(tmp_path: Path) -> None:
    session = tmp_path / "ap.jsonl"
    out = subprocess.run(
        [sys.executable, "-m", "app", "run", "--headless", "--fast", "--workload", "sequential",
         "--duration", "600", "--autopilot", "ttft_p90=2s,tpot_p90=80ms",
         "--autopilot-bound", "power_cap=400..650", "--session", str(session)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    s = read_session(session)
    assert s.header.config["autopilot"] == "ttft_p90=2s,tpot_p90=80ms"
    pilot = [e for e in s.events if isinstance(e, AutopilotEvent)]
    assert pilot and pilot[0].objective == "ttft_p90=2s,tpot_p90=80ms"
    assert pilot[0].grid is not None and pilot[0].grid["power_cap"][0] == 400.0
    changes = [e for e in s.events if isinstance(e, KnobEvent) and e.source == "autopilot"]
    assert changes, "the autopilot changed nothing in 10 minutes"
    assert changes[0].knob == "power_cap" and changes[0].value == 650.0  # into the bounds
    for e in changes:
        assert e.reason
        if e.knob == "power_cap":
            assert e.value is not None and 400.0 <= e.value <= 650.0
    rep = subprocess.run([sys.executable, "-m", "app", "report", str(session)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert rep.returncode == 0, rep.stderr
    assert "autopilot" in rep.stdout


@pytest.mark.parametrize("mode", [["--headless", "--fast"], []])
def test_a_stage_the_workload_lacks_is_refused_before_the_run(tmp_path: Path,
                                                              mode: list[str]) -> None:
    # Without --headless too: refused before the dashboard opens, not shown as a run
    # that ended with no reason.
    session = tmp_path / "st.jsonl"
    out = subprocess.run(
        [sys.executable, "-m", "app", "run", *mode, "--workload", "sequential",
         "--duration", "60", "--autopilot", "summarise:ttft_p90=3s", "--session", str(session)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "'summarise'" in lines[0] and "did you mean 'summarize'" in lines[0]
    assert not session.exists()


def test_a_composite_stage_is_known_before_the_run(tmp_path: Path) -> None:
    # A composite's agentic projects are ~1% of its workflows: drawn until seen.
    session = tmp_path / "st.jsonl"
    out = subprocess.run(
        [sys.executable, "-m", "app", "run", "--headless", "--fast", "--workload", "composite",
         "--duration", "20", "--autopilot", "agentic.reviser:tpot_p90=80ms",
         "--session", str(session)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert session.exists()
