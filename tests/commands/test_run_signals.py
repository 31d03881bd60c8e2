"""A real `wattflow run` process, stopped by a signal, leaves a readable session."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]


def _start(session: Path) -> tuple[subprocess.Popen[str], float]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--headless", "--workload", "sequential",
         "--duration", "120", "--session", str(session)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while not session.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "session file never appeared"
        time.sleep(0.02)
    return proc, time.monotonic()


def _events(session: Path) -> list[dict[str, object]]:
    out = []
    for line in session.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):  # a cut last line
            out.append(orjson.loads(line))
    return out


def test_sigkill_leaves_a_session_missing_at_most_the_last_second(tmp_path: Path) -> None:
    session = tmp_path / "killed.jsonl"
    proc, t_open = _start(session)
    time.sleep(4.0)
    ran_s = time.monotonic() - t_open
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    events = _events(session)
    assert events[0]["kind"] == "session"
    assert all(e["kind"] != "end" for e in events)
    last_t = max(float(e["t_s"]) for e in events[1:])  # type: ignore[arg-type]
    # The run's clock starts a little after the file is opened; allow for that.
    assert last_t >= ran_s - 1.0 - 0.5, (last_t, ran_s)
    rep = subprocess.run([sys.executable, "-m", "app", "report", str(session)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "200"})
    assert rep.returncode == 0, rep.stderr
    assert "did not close cleanly" in rep.stdout + rep.stderr or "cut" in rep.stdout + rep.stderr
    assert "summarize" in rep.stdout


def test_ctrl_c_and_sigterm_close_the_session(tmp_path: Path) -> None:
    for sig, code in ((signal.SIGINT, 0), (signal.SIGTERM, 1)):
        session = tmp_path / f"{sig.name}.jsonl"
        proc, _ = _start(session)
        time.sleep(2.0)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == code, err
        assert "Traceback" not in err
        events = _events(session)
        assert events[-1]["kind"] == "end"
        assert events[-1]["reason"] == "interrupted"
        kinds = {e["kind"] for e in events}
        assert {"sample", "request", "stage", "workflow"} <= kinds
