"""Issue 8's reproduced failures, each as the command a user typed: floods, huge DAGs,
tiny poll intervals, runs started in the same second, an engine that fails every
request, bad knob values, nan and out-of-range flags. Every outcome is exit 0, 1 or 2,
one line on stderr for a failure, no traceback, and no session lost or left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.session_reader import read_session
from tests.fakes.loopback_server import Behaviour, FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def wattflow(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def lines(path: Path) -> list[dict[str, object]]:
    """The session's lines as full records (the reader restores what compact lines
    leave out), header and end record included."""
    data = read_session(path)
    return [data.header.to_dict(), *(e.to_dict() for e in data.events),
            *([data.end.to_dict()] if data.end is not None else [])]


def assert_clean_failure(out: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert out.returncode == code, (out.returncode, out.stderr)
    err = out.stderr.strip().splitlines()
    assert len(err) == 1, out.stderr
    assert needle in err[0], err[0]
    assert "Traceback" not in out.stderr and "never retrieved" not in out.stderr


# -- 1. a flood of arrivals ------------------------------------------------------------------

def test_a_flood_of_arrivals_is_shed_and_the_run_ends(tmp_path: Path) -> None:
    session = tmp_path / "flood.jsonl"
    out = wattflow("run", "--headless", "--fast", "--duration", "5", "--rate", "10000",
                   "--max-backlog", "200", "--session", str(session), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    events = lines(session)
    assert events[-1]["kind"] == "end"
    shed = [e for e in events if e["kind"] == "workflow" and e["phase"] == "shed"]
    started = [e for e in events if e["kind"] == "workflow" and e["phase"] == "started"]
    # 5 s at 10,000/s offers ~50,000 workflows; at most the backlog plus what the twin
    # served may start, the rest are shed and recorded one by one.
    assert len(shed) > 40_000
    assert len(started) < 2_000
    assert len(shed) + len(started) == pytest.approx(50_000, rel=0.05)
    assert any(e["kind"] == "error" and "shed" in str(e["message"]) for e in events)
    assert "Traceback" not in out.stderr


def test_a_rate_beyond_any_client_is_refused() -> None:
    out = wattflow("run", "--headless", "--fast", "--duration", "5", "--rate", "1e9", cwd=ROOT)
    assert_clean_failure(out, 2, "argument --rate: rate must be more than 0 and at most 10000")


def _wait_for_progress(proc: subprocess.Popen[str], session: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if session.exists() and session.stat().st_size > 50_000:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the run never got going")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 0), (signal.SIGTERM, 1)])
def test_a_saturated_run_answers_signals_and_closes_its_session(
        tmp_path: Path, sig: int, code: int) -> None:
    session = tmp_path / "busy.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--headless", "--fast", "--duration", "86400",
         "--rate", "10000", "--session", str(session)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for_progress(proc, session)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)  # the 2 s promise is timed in bench/, not here
    assert proc.returncode == code, err
    assert "Traceback" not in err
    end = lines(session)[-1]
    assert end["kind"] == "end" and end["reason"] == "interrupted"


STUCK_RUN = """
import sys, threading, time
from pathlib import Path
sys.argv = ["wattflow"]
from app import cli
from app.core.runner import RunConfig, Runner
from workloads import create

config = RunConfig(workload="sequential", duration_s=86400.0, fast=True,
                   session_path=Path(sys.argv_session))
runner = Runner(config, create("sequential", {}))
stuck = threading.Event()

def slow_subscriber(ev):
    if ev.kind == "request" and ev.phase == "first_token":
        print("stuck", flush=True)
        time.sleep(3600)  # a subscriber that never returns (a pipe nobody reads...)

runner.bus.subscribe(slow_subscriber)
cli._execute(runner, headless=True, fast=True)
"""


def test_a_stuck_subscriber_cannot_keep_the_run_from_stopping(tmp_path: Path) -> None:
    """The loop is blocked inside a subscriber: the watchdog closes the session from its
    own thread (end record written, reason interrupted) and exits."""
    session = tmp_path / "stuck.jsonl"
    script = STUCK_RUN.replace("sys.argv_session", repr(str(session)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "stuck"
    time.sleep(0.5)  # let the recorder's flusher write what came before
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 1, err
    assert "did not stop in time" in err and str(session) in err
    end = lines(session)[-1]
    assert end["kind"] == "end" and end["reason"] == "interrupted"
    assert "watchdog" in str(end["summary"]["closed_by"])  # type: ignore[index]


# -- 2, 3. a DAG or a poll interval that would eat the machine ------------------------------

@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--workload", "sequential", "-p", "chunks=100000000"],
         "parameter chunks = 100000000 is out of range (1-1023)"),
        (["--workload", "sequential", "-p", "chunks=abc"], "parameter chunks must be an integer, got 'abc'"),
        (["--workload", "sequential", "-p", "chunk_tokens=nan"], "chunk_tokens must be an integer"),
        (["--poll-interval", "1e-9"], "--poll-interval: 1e-9 is out of range (0.01-60 s); GPU"),
        (["--duration", "nan"], "argument --duration: nan is out of range"),
        (["--duration", "inf"], "argument --duration: inf is out of range"),
        (["--rate", "nan"], "argument --rate: rate must be a number, got nan"),
        (["--rate", "0"], "argument --rate: rate must be more than 0 and at most 10000, got 0"),
        (["--batch-limit", "99999999999"], "batch_limit must be between 1 and 65536"),
        (["--max-tokens", "0"], "max_tokens must be between 1 and"),
        (["--request-timeout", "-1"], "--request-timeout: -1 is out of range"),
        (["--workflows", "0"], "--workflows: 0 is out of range"),
        (["--at", "-5:power_cap=300"], "the time must be 0 or more seconds"),
        (["--duration", "5", "--at", "100:power_cap=300"],
         "100 s is not before the end of the run (--duration 5)"),
        (["--at", "10:power_cap=nan"], "power_cap must be a number"),
        (["--power-cap", "50"], "--power-cap: 50 W is out of range for this GPU (200-700 W)"),
        (["--power-cap", "5000"], "power_cap must be between 1 and 2000"),
        (["--power-cap", "nan"], "power_cap must be a number"),
        (["--max-backlog", "0"], "--max-backlog: 0 is out of range"),
        (["--gpus", "-1"], "--gpus '-1': expected distinct indices 0-1023"),
        (["--seed", "-1"], "argument --seed: -1 is out of range (0-9223372036854775807)"),
        (["-E", "max_num_seqs=1000000000"],
         "option max_num_seqs = 1000000000 is out of range (1-65536)"),
    ],
)
def test_bad_values_are_one_line_and_leave_no_file(args: list[str], needle: str,
                                                   tmp_path: Path) -> None:
    out = wattflow("run", "--headless", "--fast", *args, cwd=tmp_path, timeout=60)
    assert_clean_failure(out, 2, needle)
    assert not list(tmp_path.rglob("*.jsonl")), "validation before the run must leave no file"


# -- 4. default names never collide ------------------------------------------------------

def test_runs_started_together_get_their_own_sessions(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "app", "run", "--headless", "--fast", "--duration", "1",
           "--workload", "sequential"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    again = wattflow("run", "--headless", "--fast", "--duration", "1", "--workload",
                     "sequential", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    files = sorted((tmp_path / "sessions").glob("*.jsonl"))
    assert len(files) == 4
    printed = {line.split("session: ", 1)[1] for o, _ in outs for line in o.splitlines()
               if line.startswith("session: ")}
    assert len(printed) == 3
    for f in files:  # each is a whole session whose header names its own file
        events = lines(f)
        assert events[0]["name"] == f.stem and events[-1]["kind"] == "end"


def test_an_explicit_session_that_exists_is_still_refused(tmp_path: Path) -> None:
    taken = tmp_path / "taken.jsonl"
    taken.write_text("keep me\n")
    out = wattflow("run", "--headless", "--fast", "--duration", "1", "--session", str(taken),
                   cwd=tmp_path)
    assert_clean_failure(out, 2, "already exists")
    assert taken.read_text() == "keep me\n"


# -- 5, 6. an engine that fails every request, or never starts -----------------------------

@pytest.fixture
def failing_server() -> Iterator[str]:
    """A real loopback server answering HTTP 500 to every completion, on its own thread."""
    loop = asyncio.new_event_loop()
    srv = FakeOpenAIServer(Behaviour(fault="http500"))
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(srv.start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    yield srv.url
    asyncio.run_coroutine_threadsafe(srv.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


@pytest.mark.parametrize("duration", ["3", "60"])
def test_an_engine_that_fails_every_request_exits_1_naming_its_error(
        failing_server: str, tmp_path: Path, duration: str) -> None:
    session = tmp_path / "fail.jsonl"
    out = wattflow("run", "--headless", "--engine", "openai", "--url", failing_server,
                   "--workload", "interactive", "--rate", "20", "--duration", duration,
                   "--meter", "none", "--session", str(session), cwd=tmp_path)
    assert_clean_failure(out, 1, "HTTP 500")
    assert str(session) in out.stderr  # says where the session is
    end = lines(session)[-1]
    assert end["kind"] == "end" and end["reason"] == "failed"
    assert "HTTP 500" in str(end["summary"]["message"])  # type: ignore[index]


def test_a_closed_port_exits_1_with_the_connection_error(tmp_path: Path) -> None:
    out = wattflow("run", "--headless", "--engine", "openai", "--url", "http://127.0.0.1:9/v1",
                   "--duration", "5", "--meter", "none", "--session",
                   str(tmp_path / "s.jsonl"), cwd=tmp_path)
    assert_clean_failure(out, 1, "connection refused")


def test_an_engine_that_cannot_start_prints_no_session(tmp_path: Path) -> None:
    session = tmp_path / "never.jsonl"
    out = wattflow("run", "--headless", "--engine", "parrot", "--url", "http://127.0.0.1:9",
                   "--duration", "5", "--meter", "none", "--session", str(session), cwd=tmp_path)
    assert_clean_failure(out, 1, "engine parrot failed to start")
    assert "session:" not in out.stdout
    assert not session.exists()


def test_a_recorded_run_counts_every_request_once(tmp_path: Path) -> None:
    """Under overload and a stop in the middle, each submitted request ends exactly once,
    and the end record's counts match the events."""
    session = tmp_path / "count.jsonl"
    out = wattflow("run", "--headless", "--fast", "--duration", "30", "--workload",
                   "interactive", "--rate", "50", "--batch-limit", "8", "--max-backlog", "20",
                   "--session", str(session), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    events = lines(session)
    ends: Counter[str] = Counter()
    submitted = set()
    for e in events:
        if e["kind"] == "request" and e["phase"] == "submitted":
            submitted.add(e["request_id"])
        elif e["kind"] == "request" and e["phase"] in ("finished", "failed"):
            ends[str(e["request_id"])] += 1
    assert set(ends) == submitted and set(ends.values()) == {1}
    summary = events[-1]["summary"]
    assert isinstance(summary, dict)
    assert summary["requests_submitted"] == len(submitted)
    assert (summary["requests_finished"] + summary["requests_failed"]
            + summary["requests_cancelled"]) == len(submitted)
    assert summary["drain_s"] >= 0 and summary["window_end_s"] == pytest.approx(30, abs=0.5)
