"""SessionRecorder: round trip, timely flushing, crash safety, secrets, refusals."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import orjson
import pytest

from app.core.events import (
    EVENT_KINDS,
    SESSION_VERSION,
    EndEvent,
    ErrorEvent,
    Event,
    MarkEvent,
    Sample,
    SessionHeader,
)
from app.core.session_reader import read_session
from app.core.session_writer import SessionError, SessionRecorder, is_secret_key

REPO = Path(__file__).resolve().parents[2]


def header(**config: object) -> SessionHeader:
    return SessionHeader(
        t_s=0.0,
        name="t",
        started_unix_s=1_700_000_000.5,
        clock="virtual",
        config=dict(config),
        engine={"name": "sim", "model": "llama-8b"},
        workload={"name": "composite"},
        meters=[{"name": "sim", "devices": ["gpu0"]}],
        knobs={"power_cap": 700.0, "batch_limit": 64},
    )


def _value_for(annotation: str, name: str, i: int) -> object:
    """A non-default value of the annotated type (annotations are strings here)."""
    a = annotation.replace(" ", "")
    if a.startswith("dict"):
        return {"gpu": 1.5 + i, "cpu": 0.25} if "float" in a else {"k": name, "n": i}
    if a.startswith("list"):
        return [f"{name}-a", f"{name}-b"]
    if a.startswith("bool"):
        return True
    if a.startswith("str"):
        return f"{name}-{i}"
    if a.startswith("int"):
        return 1000 + i
    if a.startswith("float"):
        # Exact in binary and within the session's resolution (0.1 of a unit for
        # power, percentages, clocks, temperatures; docs/session-format.md), so
        # equality is fair.
        return 0.5 + i
    raise AssertionError(f"no test value for {annotation}")


def one_of_each_kind() -> list[Event]:
    """Every registered event kind (bar header and end) with every field set to a
    non-default value, so a field that does not survive the round trip shows up.
    Built from the registry so kinds and fields added later are covered too."""
    events: list[Event] = []
    for i, (kind, cls) in enumerate(sorted(EVENT_KINDS.items())):
        if kind in ("session", "end"):
            continue
        values = {
            f.name: _value_for(str(f.type), f.name, i)
            for f in dataclasses.fields(cls)
            if f.name != "t_s"
        }
        events.append(cls(t_s=0.5 * i, **values))
    return events


def test_the_round_trip_covers_the_kinds_the_design_names() -> None:
    kinds = {e.kind for e in one_of_each_kind()}
    assert {
        "sample",
        "request",
        "stage",
        "workflow",
        "knob",
        "engine_state",
        "mark",
        "error",
    } <= kinds


def test_every_event_kind_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    events = one_of_each_kind()
    rec = SessionRecorder(path)
    rec.open(header(seed=7))
    for ev in events:
        rec.write(ev)
    end = EndEvent(t_s=1.0, reason="completed", summary={"requests_finished": 1})
    rec.close(end)

    data = read_session(path)
    assert data.header == header(seed=7)
    assert data.events == events
    assert data.end == end
    assert not data.truncated
    assert data.warnings == []
    assert rec.events_written == len(events)


def test_version_1_lines_are_the_events_to_dict(tmp_path: Path) -> None:
    # A version-1 header gets version-1 lines: exactly what Event.to_dict says.
    path = tmp_path / "s.jsonl"
    events = one_of_each_kind()
    rec = SessionRecorder(path)
    h = header()
    h.version = 1
    rec.open(h)
    for ev in events:
        rec.write(ev)
    rec.close(EndEvent(t_s=1.0))
    lines = path.read_bytes().splitlines()
    assert orjson.loads(lines[0])["version"] == 1
    assert [orjson.loads(x) for x in lines[1:-1]] == [
        orjson.loads(orjson.dumps(e.to_dict())) for e in events
    ]
    assert read_session(path).events == events


def test_compact_lines_leave_out_defaults_and_read_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    events: list[Event] = [
        MarkEvent(t_s=1.0, label="x"),
        ErrorEvent(t_s=2.0, source="meters", message="m"),  # fatal False: the default
        Sample(t_s=3.0, meter="sim", device="gpu0", power_w=100.0),
    ]
    rec = SessionRecorder(path)
    rec.open(header())
    for ev in events:
        rec.write(ev)
    rec.close(EndEvent(t_s=4.0))
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert lines[0]["version"] == SESSION_VERSION
    assert lines[1:4] == [
        {"kind": "mark", "t_s": 1.0, "label": "x"},
        {"kind": "error", "t_s": 2.0, "source": "meters", "message": "m"},
        {"kind": "sample", "t_s": 3.0, "meter": "sim", "device": "gpu0", "power_w": 100.0},
    ]
    assert read_session(path).events == events


@pytest.mark.parametrize("version", [2, 3])
def test_a_header_of_an_older_compact_version_gets_its_lines(tmp_path: Path,
                                                             version: int) -> None:
    # Version 2 names the device of every sample; version 3 only where it is not the
    # next of the devices seen in turn (here: the first line of each).
    path = tmp_path / "s.jsonl"
    events: list[Event] = [Sample(t_s=t / 10, meter="sim", device=d, energy_mj=t * 1.5)
                           for t in range(3) for d in ("gpu0", "gpu1")]
    rec = SessionRecorder(path)
    h = header()
    h.version = version
    rec.open(h)
    for ev in events:
        rec.write(ev)
    rec.close(EndEvent(t_s=4.0))
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert lines[0]["version"] == version
    named = [x.get("device") for x in lines[1:-1]]
    assert named == (["gpu0", "gpu1"] * 3 if version == 2 else ["gpu0", "gpu1"] + [None] * 4)
    assert read_session(path).events == events


def _lines_seen(path: Path) -> int:
    with open(path, "rb") as f:  # a separate handle, as another process would read it
        return f.read().count(b"\n")


def test_buffer_reaches_the_file_within_a_second_without_more_writes(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rec = SessionRecorder(path)
    rec.open(header())
    assert _lines_seen(path) == 1  # the header is written at once
    for i in range(5):
        rec.write(Sample(t_s=float(i), device="gpu0", energy_mj=float(i)))
    deadline = time.monotonic() + 1.0
    while _lines_seen(path) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _lines_seen(path) == 6
    rec.close(EndEvent(t_s=5.0))
    assert _lines_seen(path) == 7


def test_flushes_while_the_loop_thread_is_blocked(tmp_path: Path) -> None:
    # The loop thread writes, then stays busy (no timers run): the flusher thread must
    # still move the data out. Here the "loop" is this thread, sleeping.
    path = tmp_path / "s.jsonl"
    rec = SessionRecorder(path, flush_interval_s=0.1)
    rec.open(header())
    rec.write(MarkEvent(t_s=0.0, label="x"))
    time.sleep(0.5)
    assert _lines_seen(path) == 2
    rec.close(EndEvent(t_s=0.0))


def test_close_stops_the_flusher_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rec = SessionRecorder(path)
    rec.open(header())
    rec.close(EndEvent(t_s=0.0))
    rec.close(EndEvent(t_s=1.0))
    names = [t.name for t in threading.enumerate()]
    assert not any(n.startswith("session-flusher:s.jsonl") for n in names)
    assert path.read_bytes().count(b'"kind":"end"') == 1
    with pytest.raises(SessionError):
        rec.write(MarkEvent(t_s=2.0))


def test_open_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "s.jsonl"
    rec = SessionRecorder(path)
    rec.open(header())
    rec.close(EndEvent(t_s=0.0))
    assert read_session(path).end is not None


def test_open_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"precious\n")
    rec = SessionRecorder(path)
    with pytest.raises(SessionError) as exc:
        rec.open(header())
    msg = str(exc.value)
    assert "already exists" in msg and str(path) in msg and "\n" not in msg
    assert path.read_bytes() == b"precious\n"


def test_write_before_open_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SessionError):
        SessionRecorder(tmp_path / "s.jsonl").write(MarkEvent(t_s=0.0))


def test_secrets_never_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rec = SessionRecorder(path)
    h = header(
        api_key="sk-live-123",
        max_tokens=256,
        prompt_tokens=1000,
        engine={"url": "http://x", "OPENAI_API_KEY": "sk-env-456", "hf_token": "hf_789"},
        headers={"Authorization": "Bearer abc", "X-Api-Key": "k-1", "Accept": "json"},
        parrot=[{"session_auth": "pa-1", "password": "hunter2", "Secret": {"a": "s-2"}}],
        raw_headers=["Authorization: Bearer zzz"],
    )
    rec.open(h)
    rec.close(EndEvent(t_s=0.0))
    text = path.read_text()
    for secret in (
        "sk-live-123",
        "sk-env-456",
        "hf_789",
        "abc",
        "k-1",
        "pa-1",
        "hunter2",
        "s-2",
        "zzz",
    ):
        assert secret not in text, secret
    config = read_session(path).header.config
    assert config["api_key"] == "***"
    assert config["max_tokens"] == 256 and config["prompt_tokens"] == 1000
    assert config["engine"]["url"] == "http://x"
    assert config["headers"]["Accept"] == "json"
    assert config["parrot"][0]["Secret"] == "***"
    # The caller's header is not modified.
    assert h.config["api_key"] == "sk-live-123"


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("api_key", True),
        ("API-KEY", True),
        ("apikey", True),
        ("Authorization", True),
        ("access_token", True),
        ("token", True),
        ("db.password", True),
        ("client_secret", True),
        ("max_tokens", False),
        ("output_tokens", False),
        ("tokenizer", False),
        ("author", False),
        ("model", False),
    ],
)
def test_secret_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_odd_config_values_are_written_as_text(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rec = SessionRecorder(path)
    rec.open(header(out_dir=Path("/tmp/x"), levels={1: "a"}))
    rec.close(EndEvent(t_s=0.0))
    config = read_session(path).header.config
    assert config["out_dir"] == "/tmp/x"
    assert config["levels"] == {"1": "a"}


_CHILD = textwrap.dedent(
    """
    import sys, time
    from app.core.events import SessionHeader, Sample
    from app.core.session_writer import SessionRecorder
    T0 = float(sys.argv[2])  # seconds since the run started, as a run writes them
    rec = SessionRecorder(sys.argv[1])
    rec.open(SessionHeader(t_s=0.0, name="kill"))
    print("open", flush=True)
    while True:
        rec.write(Sample(t_s=time.time() - T0, device="gpu0", energy_mj=1.0))
        time.sleep(0.001)
    """
)


def test_sigkill_loses_at_most_the_last_second(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    t0 = time.time()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), repr(t0)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"open"
        time.sleep(1.5)
        killed_at = time.time()
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    data = read_session(path)
    assert data.end is None
    assert len(data.events) > 100
    last = max(e.t_s for e in data.events)
    assert (killed_at - t0) - last < 1.0


def test_header_to_dict_is_not_mutated_by_redaction() -> None:
    # Redaction works on a copy: dataclasses hold the live config the runner uses.
    h = header(token="t-1")
    before = dataclasses.replace(h, config=dict(h.config))
    from app.core.session_writer import redact_secrets

    redacted = redact_secrets(h.to_dict())
    assert redacted["config"]["token"] == "***"
    assert h == before


_EXITING_CHILD = textwrap.dedent(
    """
    import sys
    from app.core.events import SessionHeader, MarkEvent
    from app.core.session_writer import SessionRecorder
    rec = SessionRecorder(sys.argv[1], flush_interval_s=60.0)
    rec.open(SessionHeader(t_s=0.0, name="exit"))
    rec.write(MarkEvent(t_s=1.0, label="last words"))
    raise SystemExit(3)  # no close(): the interpreter exits with the event buffered
    """
)


def test_buffer_is_flushed_when_the_interpreter_exits_without_close(tmp_path: Path) -> None:
    path = tmp_path / "exit.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", _EXITING_CHILD, str(path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert proc.returncode == 3
    data = read_session(path)
    assert [e.label for e in data.events if isinstance(e, MarkEvent)] == ["last words"]
    assert data.end is None


def test_an_unserialisable_event_becomes_an_error_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rec = SessionRecorder(path)
    rec.open(header())
    rec.write(MarkEvent(t_s=1.0, label="before"))
    rec.write(Sample(t_s=2.0, device="gpu0", energy_mj=2**70))
    rec.write(MarkEvent(t_s=3.0, label="after"))
    rec.close(EndEvent(t_s=3.0))
    events = read_session(path).events
    assert [e.kind for e in events] == ["mark", "error", "mark"]
    err = events[1]
    assert isinstance(err, ErrorEvent) and err.source == "recorder" and "sample" in err.message
