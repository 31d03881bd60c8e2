"""`wattflow replay --follow`: a session tailed while another wattflow records it.

The real thing first (a headless run writing the file in one process, the follower in
another), then the follower's edges: a file that is not a session, a writer that dies
(with and without a cut line), a file that never appears, a damaged line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from app.core.events import EndEvent, SessionHeader
from app.core.replay_follow import FollowedSession, FollowTimeout
from app.core.session_reader import SessionError, read_session
from app.core.stats import LiveStats

ROOT = Path(__file__).resolve().parents[2]


def wattflow(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "app", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def lines_with_times(proc: subprocess.Popen[str]) -> list[tuple[float, str]]:
    """The process's stdout lines, each with the monotonic time it was read."""
    assert proc.stdout is not None
    return [(time.monotonic(), line.rstrip("\n")) for line in proc.stdout]


def test_follow_shows_a_headless_run_progressing_and_ends_with_its_end_record(
        tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    writer = wattflow("run", "--headless", "--workload", "sequential", "--duration", "5",
                      "--session", str(path))
    follower = wattflow("replay", "--follow", str(path), "--follow-timeout", "60")
    writer_done: list[float] = []

    def wait_writer() -> None:
        writer.wait(timeout=120)
        writer_done.append(time.monotonic())

    waiter = threading.Thread(target=wait_writer)
    waiter.start()
    try:
        got = lines_with_times(follower)
        assert follower.wait(timeout=60) == 0, follower.stderr.read() if follower.stderr else ""
    finally:
        waiter.join(timeout=120)
        for p in (writer, follower):
            if p.poll() is None:
                p.kill()
    assert writer.returncode == 0
    text = [line for _, line in got]
    assert text[0].startswith(f"following {path}")
    progress = [(t, line) for t, line in got if line.startswith("t=")]
    # the run was watched as it went: progress lines a second apart, several of them
    # before the writer had finished
    assert len(progress) >= 3, text
    times = [float(line.split("s")[0].removeprefix("t=")) for _, line in progress]
    assert times == sorted(times) and times[-1] - times[0] >= 2.0
    assert sum(1 for t, _ in progress if t < writer_done[0]) >= 3
    assert text[-1] == "the run ended (completed)"
    # the follower's summary is the finished file's
    data = read_session(path)
    assert data.end is not None
    stats = LiveStats()
    for ev in [data.header, *data.events, data.end]:
        stats.on_event(ev)
    snap = stats.snapshot()
    assert f"requests {snap.requests_finished} finished" in "\n".join(text)
    assert f"J/token {snap.j_per_output_token:.4f}" in "\n".join(text)


def test_a_killed_writer_is_reported_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "dies.jsonl"
    writer = wattflow("run", "--headless", "--workload", "sequential", "--duration", "60",
                      "--session", str(path))
    follower = wattflow("replay", "--follow", str(path), "--follow-timeout", "1.5")
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()  # "following ...": the header is in
        assert first.startswith("following")
        follower.stdout.readline()  # a progress line: events are flowing
        os.kill(writer.pid, signal.SIGKILL)
        t0 = time.monotonic()
        rc = follower.wait(timeout=30)
        waited = time.monotonic() - t0
    finally:
        for p in (writer, follower):
            if p.poll() is None:
                p.kill()
            p.wait()
    assert rc == 1
    err = follower.stderr.read() if follower.stderr else ""
    assert err.count("\n") == 1 and "no new data for 1.5 s and no end record" in err
    assert "Traceback" not in err
    assert 1.0 < waited < 15.0


def test_a_file_that_is_not_a_session_is_one_line_at_once(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello\nworld\n")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "app", "replay", "--follow", str(p)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"wattflow: error: {p}: not a wattflow session" \
        " (first line is not a session header)"
    assert time.monotonic() - t0 < 20  # refused at once, not after the follow timeout
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"kind": "session", "version": 1}\n')
    proc = subprocess.run([sys.executable, "-m", "app", "replay", "--follow", str(bad),
                           "--follow-timeout", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--follow-timeout" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the follower itself, on a file written under its eyes ----------------------------


class Writer:
    """Appends prepared byte chunks to a file, one per poll of the follower: its
    `sleep` (the follower waits at the end of the file, the writer writes)."""

    def __init__(self, path: Path, chunks: list[bytes]) -> None:
        self.path, self.chunks = path, list(chunks)
        self.now = 0.0
        self.polls = 0

    def sleep(self, s: float) -> None:
        self.now += s
        self.polls += 1
        if self.chunks:
            with open(self.path, "ab") as f:
                f.write(self.chunks.pop(0))

    def clock(self) -> float:
        return self.now


def _session_bytes(tmp_path: Path) -> bytes:
    """A real session's bytes: a short run on the twin."""
    p = tmp_path / "src.jsonl"
    subprocess.run([sys.executable, "-m", "app", "run", "--headless", "--fast", "--workload",
                    "sequential", "--duration", "20", "--session", str(p)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    return p.read_bytes()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _session_bytes(tmp_path_factory.mktemp("follow"))


def _events_of(tmp_path: Path, lines: list[bytes]) -> list[object]:
    """The events the reader gives for these lines as a file of their own (a line of a
    compact session may hold several)."""
    p = tmp_path / "expected.jsonl"
    p.write_bytes(b"".join(lines))
    return list(read_session(p).events)


def test_events_come_as_lines_complete_in_any_chunking(tmp_path: Path, source: bytes) -> None:
    path = tmp_path / "s.jsonl"
    # cut anywhere, lines split across writes (the recorder's flushes need not end lines)
    chunks = [source[i:i + 997] for i in range(0, len(source), 997)]
    w = Writer(path, chunks)
    fs = FollowedSession(path, timeout_s=5.0, poll_s=0.01, sleep=w.sleep, clock=w.clock)
    assert isinstance(fs.header, SessionHeader)
    events = list(fs)
    whole = read_session(path)
    assert events == whole.events and fs.end == whole.end
    assert isinstance(fs.end, EndEvent) and not fs.truncated
    assert w.polls >= len(chunks) - 1  # it waited for the writer, chunk after chunk


def test_a_writer_that_stops_gives_a_timeout_and_keeps_what_came(tmp_path: Path,
                                                                 source: bytes) -> None:
    path = tmp_path / "s.jsonl"
    lines = source.splitlines(keepends=True)
    w = Writer(path, [b"".join(lines[:1]), *lines[1:40]])  # no end record, ever
    fs = FollowedSession(path, timeout_s=2.0, poll_s=0.1, sleep=w.sleep, clock=w.clock)
    got = []
    with pytest.raises(FollowTimeout, match="no new data for 2 s and no end record"):
        for ev in fs:
            got.append(ev)
    assert got == _events_of(tmp_path, lines[:40]) and fs.end is None
    assert 2.0 < w.now - 0.1 * 40 < 2.5  # gave up after the timeout, not before


def test_a_line_cut_by_a_dying_writer_flags_the_session(tmp_path: Path, source: bytes) -> None:
    path = tmp_path / "s.jsonl"
    lines = source.splitlines(keepends=True)
    w = Writer(path, [lines[0], *lines[1:10], lines[10][:15]])
    fs = FollowedSession(path, timeout_s=1.0, poll_s=0.1, sleep=w.sleep, clock=w.clock)
    assert list(fs) == _events_of(tmp_path, lines[:10])
    assert fs.truncated and fs.end is None


def test_waits_for_the_file_and_its_header(tmp_path: Path, source: bytes) -> None:
    path = tmp_path / "later.jsonl"
    header = source.splitlines(keepends=True)[0]
    w = Writer(path, [b"", header[:20], header[20:]])  # created empty, header in two writes
    path.unlink(missing_ok=True)
    fs = FollowedSession(path, timeout_s=5.0, poll_s=0.1, sleep=w.sleep, clock=w.clock)
    assert fs.header.kind == "session" and w.polls == 3
    with pytest.raises(FollowTimeout, match="did not appear within 1 s"):
        w2 = Writer(tmp_path / "never.jsonl", [])
        FollowedSession(tmp_path / "never.jsonl", timeout_s=1.0, sleep=w2.sleep,
                        clock=w2.clock)


def test_a_damaged_line_is_refused_as_in_a_finished_file(tmp_path: Path,
                                                         source: bytes) -> None:
    path = tmp_path / "s.jsonl"
    lines = source.splitlines(keepends=True)
    bad = orjson.dumps({"kind": "request", "t_s": 1.0, "prompt_tokens": "many"}) + b"\n"
    w = Writer(path, [lines[0], *lines[1:5], bad, *lines[5:]])
    fs = FollowedSession(path, timeout_s=1.0, poll_s=0.1, sleep=w.sleep, clock=w.clock)
    with pytest.raises(SessionError, match="line 6: bad request event: prompt_tokens"):
        list(fs)


def test_a_compressed_or_binary_file_is_refused_at_once(tmp_path: Path) -> None:
    z = tmp_path / "s.jsonl.zst"
    z.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 100)
    with pytest.raises(SessionError, match="compressed session is written whole"):
        FollowedSession(z, timeout_s=1.0)
    b = tmp_path / "bin"
    b.write_bytes(b"\x00\x01\x02")
    with pytest.raises(SessionError, match="not a wattflow session"):
        FollowedSession(b, timeout_s=1.0)


# -- the dashboard following a session ---------------------------------------------------


def test_the_dashboard_follows_a_session_as_it_is_written(tmp_path: Path, source: bytes) -> None:
    import asyncio

    from app.core.bus import EventBus
    from app.core.replay_follow import FollowPlayer
    from app.ui.app import DashboardApp
    from app.ui.backends import ReplayBackend

    path = tmp_path / "live.jsonl"
    lines = source.splitlines(keepends=True)
    path.write_bytes(lines[0])
    stop = threading.Event()

    def write() -> None:  # the recording run: a few lines every 20 ms, for about a second
        step = max(1, len(lines) // 50)
        for i in range(1, len(lines), step):
            if stop.wait(0.02):
                return
            with open(path, "ab") as f:
                f.write(b"".join(lines[i:i + step]))

    bus = EventBus()
    stats = LiveStats()
    bus.subscribe(stats.on_event)
    player = FollowPlayer(FollowedSession(path, timeout_s=10.0), bus)
    backend = ReplayBackend(player, stats)
    app = DashboardApp(backend, handle_signals=False)
    seen: list[float] = []

    async def main() -> None:
        writer = threading.Thread(target=write)
        async with app.run_test(size=(140, 44)) as pilot:
            writer.start()
            for _ in range(400):
                await pilot.pause(0.05)
                if app.frame is not None:
                    seen.append(app.frame.snapshot.t_s)
                if backend.done:
                    break
            await pilot.pause(0.2)
        stop.set()
        writer.join()

    asyncio.run(main())
    assert backend.done and backend.finished and backend.error is None
    # the panels moved while the file grew: several distinct times before the end
    assert len(set(seen)) >= 5 and seen == sorted(seen)
    whole = read_session(path)
    ref = LiveStats()
    for ev in [whole.header, *whole.events]:
        ref.on_event(ev)
    assert whole.end is not None
    ref.on_event(whole.end)
    assert app.frame is not None and app.frame.ended is not None
    assert app.frame.snapshot.output_tokens == ref.snapshot().output_tokens > 0
    assert app.frame.snapshot.energy_j == ref.snapshot().energy_j


def test_a_dead_writer_under_the_dashboard_is_said_in_its_event_log(tmp_path: Path,
                                                                   source: bytes) -> None:
    import asyncio

    from app.core.bus import EventBus
    from app.core.events import ErrorEvent
    from app.core.replay_follow import FollowPlayer

    path = tmp_path / "dies.jsonl"
    path.write_bytes(b"".join(source.splitlines(keepends=True)[:30]))  # and no more
    bus = EventBus()
    seen: list[object] = []
    bus.subscribe(seen.append)
    player = FollowPlayer(FollowedSession(path, timeout_s=0.3, poll_s=0.05), bus)
    with pytest.raises(FollowTimeout):
        asyncio.run(player.run())
    errors = [ev for ev in seen if isinstance(ev, ErrorEvent)]
    assert len(errors) == 1 and errors[0].source == "follow" and errors[0].fatal
    assert "no new data for 0.3 s" in errors[0].message
    assert seen[1:-1] == _events_of(tmp_path, source.splitlines(keepends=True)[:30])
