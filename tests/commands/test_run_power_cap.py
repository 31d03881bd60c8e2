"""`wattflow run` on a (fake) real GPU: the power limit in force before the run is back
after every way a run can end, and `wattflow restore` mends what a SIGKILL left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.core.events import KnobEvent
from app.core.session_reader import read_session
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml

ROOT = Path(__file__).resolve().parents[2]
CHILD = ROOT / "tests" / "commands" / "_run_with_fake_gpu.py"


def _limit(fake_state: Path) -> float:
    return float(json.loads(fake_state.read_text())["gpus"][0]["limit_w"])


def _start(tmp_path: Path, *args: str, stuck: bool = False
           ) -> tuple[subprocess.Popen[str], Path]:
    fake_state = tmp_path / "gpu.json"
    FakeNvml([FakeGpu(limit_w=650.0)], root=True, state_path=fake_state)
    env = {**os.environ, "WATTFLOW_STATE_DIR": str(tmp_path / "state"),
           "FAKE_STUCK_SUBSCRIBER": "1" if stuck else "0"}
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(fake_state), "run", "--headless", "--meter", "nvml",
         "--allow-power-cap", "--power-cap", "300", "--workload", "sequential",
         "--session", str(tmp_path / "s.jsonl"), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    return proc, fake_state


def _wait_capped(proc: subprocess.Popen[str], fake_state: Path) -> None:
    deadline = time.monotonic() + 30
    while _limit(fake_state) != 300.0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the cap was never applied"
        time.sleep(0.05)


def test_limit_is_back_after_a_normal_end(tmp_path: Path) -> None:
    proc, fake_state = _start(tmp_path, "--duration", "1.5")
    _wait_capped(proc, fake_state)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert _limit(fake_state) == 650.0
    assert not (tmp_path / "state" / "powercap.json").exists()
    knobs = [e for e in read_session(tmp_path / "s.jsonl").events
             if isinstance(e, KnobEvent) and e.knob == "power_cap"]
    assert [(k.value, k.source) for k in knobs] == [(300.0, "cli"), (650.0, "restore")]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 0), (signal.SIGTERM, 1)])
def test_limit_is_back_after_a_signal(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    proc, fake_state = _start(tmp_path, "--duration", "120")
    _wait_capped(proc, fake_state)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert _limit(fake_state) == 650.0


def test_limit_is_back_when_the_loop_is_stuck_and_the_watchdog_closes(tmp_path: Path) -> None:
    proc, fake_state = _start(tmp_path, "--duration", "120", stuck=True)
    _wait_capped(proc, fake_state)
    assert proc.stderr is not None
    assert proc.stderr.readline().strip() == "stuck"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "did not stop in time" in err and "Traceback" not in err
    assert _limit(fake_state) == 650.0
    assert not (tmp_path / "state" / "powercap.json").exists()
    end = json.loads((tmp_path / "s.jsonl").read_text().splitlines()[-1])
    assert end["kind"] == "end" and "closed_by" in end["summary"]


def test_limit_is_back_when_the_engine_dies(tmp_path: Path) -> None:
    proc, fake_state = _start(tmp_path, "--engine", "crash", "--duration", "120")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "illegal memory access" in err or "in a row" in err
    assert "Traceback" not in err
    assert _limit(fake_state) == 650.0


def test_wattflow_restore_after_sigkill(tmp_path: Path) -> None:
    proc, fake_state = _start(tmp_path, "--duration", "120")
    _wait_capped(proc, fake_state)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _limit(fake_state) == 300.0  # what a killed run leaves behind
    env = {**os.environ, "WATTFLOW_STATE_DIR": str(tmp_path / "state")}
    out = subprocess.run([sys.executable, str(CHILD), str(fake_state), "restore"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert _limit(fake_state) == 650.0
    assert "650" in out.stdout + out.stderr
