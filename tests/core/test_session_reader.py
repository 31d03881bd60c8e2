"""read_session / iter_events / summary_line: good files, cut files, bad input."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.events import EndEvent, Event, MarkEvent, RequestEvent, Sample, SessionHeader
from app.core.session_reader import (
    NOT_A_SESSION,
    SessionError,
    iter_events,
    open_session,
    read_session,
    summarize,
    summary_line,
)
from app.core.session_writer import SessionRecorder

STARTED = 1_700_000_000.0


def _events() -> list[Event]:
    evs: list[Event] = []
    for i in range(11):
        evs.append(Sample(t_s=i * 1.0, device="gpu0", component="gpu", energy_mj=200_000.0 * i))
    for i in range(3):
        rid = f"r{i}"
        evs.append(RequestEvent(t_s=1.0 + i, request_id=rid, phase="submitted", stage="chat"))
        evs.append(
            RequestEvent(
                t_s=2.0 + i,
                request_id=rid,
                phase="finished",
                stage="chat",
                output_tokens=100,
                latency_s=1.0,
                energy_j={"gpu": 150.0},
            )
        )
    evs.sort(key=lambda e: e.t_s)
    return evs


def write_session(path: Path, *, close: bool = True, name: str = "s") -> list[Event]:
    rec = SessionRecorder(path)
    rec.open(
        SessionHeader(
            t_s=0.0,
            name=name,
            started_unix_s=STARTED,
            engine={"name": "sim"},
            workload={"name": "interactive"},
        )
    )
    events = _events()
    for ev in events:
        rec.write(ev)
    if close:
        rec.close(
            EndEvent(
                t_s=10.0,
                summary={"duration_s": 10.0, "requests_finished": 3, "j_per_output_token": 6.5},
            )
        )
    else:
        rec.abort()
    return events


def error_of(path: Path) -> str:
    with pytest.raises(SessionError) as exc:
        read_session(path)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_reads_back_a_closed_session(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    events = write_session(path)
    data = read_session(path)
    assert data.header.workload == {"name": "interactive"}
    assert data.events == events
    assert data.end is not None and data.end.summary["requests_finished"] == 3
    assert (data.truncated, data.warnings) == (False, [])


def test_cut_last_line_is_accepted_and_flagged(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    events = write_session(path, close=False)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 20])  # cut the last event mid-line
    data = read_session(path)
    assert data.truncated
    assert data.end is None
    assert data.events == events[:-1]
    assert any("incomplete" in w for w in data.warnings)


def test_valid_last_line_without_newline_is_not_truncated(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    events = write_session(path)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    data = read_session(path)
    assert not data.truncated and data.end is not None and data.events == events


def test_malformed_middle_line_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_session(path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"kind": "sample", "t_s": \n'
    path.write_bytes(b"".join(lines))
    assert error_of(path) == f"{path} line 3: not valid JSON"


def test_a_cut_line_followed_by_more_lines_is_an_error(tmp_path: Path) -> None:
    # Only the *last* line may be cut; a broken line with a newline is corruption.
    path = tmp_path / "s.jsonl"
    write_session(path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-10] + b"\n")
    assert "not valid JSON" in error_of(path)


def test_not_a_session(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps({"kind": "sample", "t_s": 0.0}) + b"\n")
    assert error_of(path) == f"{path}: {NOT_A_SESSION}"
    text = tmp_path / "notes.txt"
    text.write_text("hello world\nsecond line\n")
    assert error_of(text) == f"{text}: {NOT_A_SESSION}"
    png = tmp_path / "p.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff")
    assert NOT_A_SESSION in error_of(png)


def test_empty_missing_and_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert "empty file" in error_of(empty)
    assert error_of(tmp_path / "nope.jsonl") == f"no such session file: {tmp_path / 'nope.jsonl'}"
    assert "is a directory" in error_of(tmp_path)


@pytest.mark.parametrize(
    ("version", "expect"),
    [(99, "version 99"), ("1", "unknown session version '1'"), (None, "unknown")],
)
def test_unknown_version(tmp_path: Path, version: object, expect: str) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(orjson.dumps({"kind": "session", "version": version}) + b"\n")
    assert expect in error_of(path)


def test_unknown_kind_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    events = write_session(path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(3, b'{"kind": "hologram", "t_s": 0.5}\n')
    path.write_bytes(b"".join(lines))
    data = read_session(path)
    assert data.events == events
    assert len(data.warnings) == 1 and "'hologram'" in data.warnings[0]


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"kind": "mark", "t_s": "soon"}\n', "t_s is not a number"),
        (b'{"kind": "session", "version": 1}\n', "second session header"),
    ],
)
def test_bad_event_lines(tmp_path: Path, line: bytes, expect: str) -> None:
    path = tmp_path / "s.jsonl"
    write_session(path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(2, line)
    path.write_bytes(b"".join(lines))
    msg = error_of(path)
    assert msg.startswith(f"{path} line 3: ") and expect in msg


def test_iter_events_streams_the_same_events(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    events = write_session(path)
    assert list(iter_events(path)) == events
    stream = open_session(path)
    first = next(iter(stream))
    assert first == events[0]
    assert stream.header.name == "s"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300))
def test_garbage_after_a_header_never_escapes_as_a_traceback(body: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "g.jsonl"
        path.write_bytes(b'{"kind":"session","version":1}\n' + body)
        try:
            data = read_session(path)
        except SessionError as e:
            assert "\n" not in str(e)
        else:
            assert data.header.version == 1


def test_summary_line_of_a_closed_session(tmp_path: Path) -> None:
    path = tmp_path / "closed.jsonl"
    write_session(path)
    s = summarize(path)
    assert (s.complete, s.truncated, s.requests, s.j_per_output_token) == (True, False, 3, 6.5)
    line = summary_line(path)
    assert line.startswith("closed.jsonl")
    for part in ("interactive", "sim", "10.0s", "3 req", "6.500 J/tok"):
        assert part in line
    assert "(cut)" not in line and "(open)" not in line


def test_summary_line_of_an_open_session_recomputes(tmp_path: Path) -> None:
    path = tmp_path / "open.jsonl"
    write_session(path, close=False)
    s = summarize(path)
    assert not s.complete and not s.truncated
    assert s.requests == 3
    # 2000 J of GPU energy over 300 output tokens, from the sample counters.
    assert s.j_per_output_token == pytest.approx(2000.0 / 300)
    assert summary_line(path).endswith("(open)")


def test_summary_line_of_a_cut_session(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    write_session(path, close=False)
    with open(path, "ab") as f:
        f.write(b'{"kind":"sample","t_s":11.0,"dev')
    assert summarize(path).truncated
    assert summary_line(path).endswith("(cut)")


def test_summary_finds_an_end_line_longer_than_the_tail_chunk(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    rec = SessionRecorder(path)
    rec.open(SessionHeader(t_s=0.0, started_unix_s=STARTED))
    rec.write(MarkEvent(t_s=1.0, label="x"))
    big = {"requests_finished": 5, "duration_s": 1.0, "pad": "y" * 300_000}
    rec.close(EndEvent(t_s=1.0, summary=big))
    s = summarize(path)
    assert s.complete and s.requests == 5


def test_wrongly_typed_header_fields(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"kind":"session","version":1,"engine":"sim"}\n')
    assert error_of(path) == f"{path}: bad session header: engine is not an object, got 'sim'"
