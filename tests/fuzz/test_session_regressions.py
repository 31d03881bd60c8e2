"""One test per bug the session fuzzing found (or the brief named), with its input."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import orjson
import pytest

from app.core import session_reader
from app.core.session_reader import SessionError, format_duration, read_session
from tests.fuzz._cli import Outcome, check, wattflow

HEADER = b'{"kind":"session","version":1}\n'
END = b'{"kind":"end","t_s":2.0,"reason":"completed","summary":{}}\n'
COMMANDS = (("report",), ("report", "--json"), ("replay", "--headless", "--speed", "max"))


def _all(path: Path) -> list[Outcome]:
    outs = []
    for cmd in COMMANDS:
        o = wattflow(cmd[0], str(path), *cmd[1:])
        check(o, path=str(path))
        outs.append(o)
    check(wattflow("sessions", str(path.parent)))
    return outs


def _refused(path: Path, needle: str) -> None:
    for o in _all(path):
        assert o.code == 2, o.describe()
        assert needle in o.err, o.describe()


@pytest.mark.parametrize(("line", "needle"), [
    # A knob named null made `report --json` crash (a dict key that is not a string).
    (b'{"kind":"knob","t_s":1.5,"knob":null,"value":450.0}',
     "line 2: bad knob event: knob is not a string, got None"),
    (b'{"kind":"request","t_s":1,"phase":"finished","stage":"a","prompt_tokens":"12"}',
     "line 2: bad request event: prompt_tokens is not a whole number from 0 to 2^40, got '12'"),
    (b'{"kind":"request","t_s":1,"phase":"finished","stage":{"a":[1]}}',
     "line 2: bad request event: stage is not a string"),
    (b'{"kind":"request","t_s":1,"phase":"finished","stage":"a","energy_j":{"gpu":"x"}}',
     "line 2: bad request event: energy_j is not an object of numbers or null"),
    (b'{"kind":"stage","t_s":1,"deps":[1, 2]}', "line 2: bad stage event: deps is not a list"),
    (b'{"kind":"sample","t_s":1,"device":"gpu0","energy_mj":true}',
     "line 2: bad sample event: energy_mj is not a number or null, got True"),
    # Counts whose sums leave 64 bits made `report --json` crash in orjson.
    (b'{"kind":"request","t_s":1,"phase":"finished","stage":"a",'
     b'"output_tokens":-9223372036854775808}', "output_tokens is not a whole number from 0"),
    (b'{"kind":"sample","t_s":NaN}', "line 2: not valid JSON"),
    (b'{"kind":"sample","t_s":Infinity}', "line 2: not valid JSON"),
    (b'{"t_s":1}', "line 2: not an event (no kind)"),
    (b'{"kind":["sample"],"t_s":1}', "line 2: not an event (no kind)"),
])
def test_a_line_of_the_wrong_types_is_refused_naming_file_and_line(
        tmp_path: Path, line: bytes, needle: str) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(HEADER + line + b"\n" + END)
    _refused(path, needle)


@pytest.mark.parametrize(("summary", "needle"), [
    # A string in the end record's idle energy crashed the live statistics in replay
    # (the bus logged a traceback and dropped them); `wall_s` crashed the closing lines.
    ({"idle_energy_j": {"gpu": "x"}}, "summary.idle_energy_j is not an object of numbers"),
    ({"wall_s": "soon"}, "summary.wall_s is not a number or null, got 'soon'"),
    ({"duration_s": [1]}, "summary.duration_s is not a number or null"),
])
def test_a_bad_end_record_summary_is_refused(tmp_path: Path, summary: dict[str, object],
                                             needle: str) -> None:
    path = tmp_path / "s.jsonl"
    end = {"kind": "end", "t_s": 2.0, "reason": "completed", "summary": summary}
    path.write_bytes(HEADER + orjson.dumps(end) + b"\n")
    _refused(path, needle)
    # `sessions` lists it, recomputed from the events (the end record is not trusted).
    o = wattflow("sessions", str(tmp_path))
    assert o.code == 0 and "s.jsonl" in o.out, o.describe()


def test_times_at_the_ends_of_the_float_range(tmp_path: Path) -> None:
    # A duration of 1e308 - (-1e308) = inf crashed `report` (round(inf) in format_duration).
    path = tmp_path / "s.jsonl"
    path.write_bytes(HEADER + b'{"kind":"mark","t_s":-1e308,"label":"a"}\n'
                     b'{"kind":"mark","t_s":1e308,"label":"b"}\n' + END)
    # Such times are damage (a run lasts at most 1e7 s), refused on their line; a replay
    # paced up to t = 1e308 would wait for ever.
    for o in _all(path):
        assert o.code == 2 and "line 2: t_s -1e+308 is outside a run" in o.err, o.describe()
    assert format_duration(float("inf")) == format_duration(float("nan")) == "?"


def test_a_bad_line_in_the_middle_is_refused_not_skipped(tmp_path: Path) -> None:
    good = b'{"kind":"mark","t_s":1,"label":"a"}\n'
    path = tmp_path / "s.jsonl"
    path.write_bytes(HEADER + good + b'{"kind":"mark","t_s":\n' + good + END)
    _refused(path, f"{path} line 3: not valid JSON")
    o = wattflow("sessions", str(tmp_path))  # the cheap listing trusts the end record
    assert o.code == 0 and "s.jsonl" in o.out


def test_header_not_first_duplicate_end_and_missing_header(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"kind":"mark","t_s":1,"label":"a"}\n' + HEADER)
    _refused(path, "not a wattflow session (first line is not a session header)")
    path.write_bytes(HEADER + END + END)
    _refused(path, "line 3: a second end record")
    path.write_bytes(HEADER + HEADER)
    _refused(path, "line 2: a second session header")


def test_empty_file_directory_and_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"")
    _refused(path, "empty file")
    path.write_bytes(HEADER + b'{"kind":"mark","t_s":1,"label":"\xff\xfe"}\n')
    _refused(path, "line 2: not valid JSON")
    path.write_bytes(b"\xff\xfe\x00h\x00i\n")
    _refused(path, "not a wattflow session")
    (tmp_path / "dir.jsonl").mkdir()
    for cmd in COMMANDS:
        o = wattflow(cmd[0], str(tmp_path / "dir.jsonl"), *cmd[1:])
        check(o, path=str(tmp_path / "dir.jsonl"))
        assert o.code == 2 and "is a directory" in o.err
    o = wattflow("sessions", str(tmp_path))
    assert o.code == 0 and "dir.jsonl" in o.out and "is a directory" in o.out


def test_a_ten_megabyte_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    label = b"x" * (10 * 1024 * 1024)
    path.write_bytes(HEADER + b'{"kind":"mark","t_s":1,"label":"' + label + b'"}\n' + END)
    for o in _all(path):
        assert o.code == 0, o.describe()
    path.write_bytes(HEADER + b'{"kind":"mark","t_s":1,"label":"' + label)  # cut
    for o in _all(path):
        assert o.code == 0 and "incomplete" in o.out + o.err, o.describe()
    path.write_bytes(label + b"\n" + HEADER)
    _refused(path, "not a wattflow session")


def test_a_line_longer_than_the_limit_is_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A file of no newlines (a binary, a device) was read whole into memory.
    monkeypatch.setattr(session_reader, "MAX_LINE_BYTES", 1024)
    monkeypatch.setattr(session_reader, "_TAIL_CHUNK", 64)
    path = tmp_path / "s.jsonl"
    path.write_bytes(HEADER + b'{"kind":"mark","t_s":1,"label":"' + b"x" * 5000 + b'"}\n')
    with pytest.raises(SessionError, match=r"s\.jsonl line 2: longer than"):
        read_session(path)
    path.write_bytes(b"y" * 5000 + b"\n")
    with pytest.raises(SessionError, match="not a wattflow session"):
        read_session(path)
    # The listing's search for an end record from the file's end gives up at the limit.
    path.write_bytes(HEADER + b"z" * 10_000)
    with pytest.raises(SessionError, match="longer than"):
        session_reader.summarize(path)


def test_a_device_is_refused_without_reading_it() -> None:
    # `report /dev/zero` read one endless line into memory.
    o = wattflow("report", "/dev/zero")
    check(o, path="/dev/zero")
    assert o.code == 2 and "not a regular file" in o.err


@pytest.mark.timeout(30)
def test_a_fifo_does_not_hang_report_or_sessions(tmp_path: Path) -> None:
    # Opening a FIFO for reading waits for a writer: `sessions DIR` hung on one named
    # *.jsonl, and `report FIFO` too.
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    try:
        o = wattflow("report", str(fifo))
        check(o, path=str(fifo))
        assert o.code == 2 and "not a regular file" in o.err
        o = wattflow("sessions", str(tmp_path))
        check(o)
        assert "pipe.jsonl" in o.out and "not a regular file" in o.out
    finally:
        # Should a regression block in open(), a writer unblocks it.
        threading.Thread(target=lambda: _unblock(fifo), daemon=True).start()


def _unblock(fifo: Path) -> None:
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


def test_unknown_kinds_are_skipped_with_a_short_warning(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    kind = "k" * 500
    path.write_bytes(HEADER + orjson.dumps({"kind": kind, "t_s": 1}) + b"\n" + END)
    data = read_session(path)
    assert len(data.warnings) == 1 and len(data.warnings[0]) < 120
    for o in _all(path):
        assert o.code == 0, o.describe()
