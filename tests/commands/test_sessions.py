"""`wattflow sessions [DIR]`: one line per session, newest first, flags, bad input."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from app.commands import sessions
from app.core.events import EndEvent, RequestEvent, Sample, SessionHeader
from app.core.session_writer import SessionRecorder


def record(path: Path, started: float, *, workload: str, end: bool = True) -> None:
    rec = SessionRecorder(path)
    rec.open(
        SessionHeader(
            t_s=0.0,
            started_unix_s=started,
            engine={"name": "vllm"},
            workload={"name": workload},
        )
    )
    rec.write(Sample(t_s=0.0, device="gpu0", component="gpu", energy_mj=0.0))
    rec.write(RequestEvent(t_s=0.5, request_id="a", phase="submitted", stage="s"))
    rec.write(
        RequestEvent(
            t_s=2.0, request_id="a", phase="finished", stage="s", output_tokens=40, latency_s=1.5
        )
    )
    rec.write(Sample(t_s=2.0, device="gpu0", component="gpu", energy_mj=20_000.0))
    if end:
        summary = {"duration_s": 125.0, "requests_finished": 7, "j_per_output_token": 0.25}
        rec.close(EndEvent(t_s=2.0, summary=summary))
    else:
        rec.abort()


def run(d: Path | str) -> int:
    return sessions.run(argparse.Namespace(dir=str(d)))


def test_lists_newest_first_with_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record(tmp_path / "old.jsonl", 1_700_000_000.0, workload="sequential")
    record(tmp_path / "new.jsonl", 1_700_100_000.0, workload="agentic")
    record(tmp_path / "crashed.jsonl", 1_700_050_000.0, workload="composite", end=False)
    record(tmp_path / "running.jsonl", 1_700_060_000.0, workload="interactive", end=False)
    with open(tmp_path / "crashed.jsonl", "ab") as f:
        f.write(b'{"kind":"sample","t_')
    (tmp_path / "notes.txt").write_text("not listed")

    assert run(tmp_path) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [x.split()[0] for x in lines] == [
        "new.jsonl",
        "running.jsonl",
        "crashed.jsonl",
        "old.jsonl",
    ]
    new, running, crashed, old = lines
    assert "sequential" in old
    for part in ("agentic", "vllm", "2m05s", "7 req", "0.250 J/tok"):
        assert part in new
    assert not new.endswith(")")
    # No end record: the numbers are recomputed from the events (20 J / 40 tokens).
    assert running.endswith("(open)") and "1 req" in running and "0.500 J/tok" in running
    assert crashed.endswith("(cut)")


def test_an_unreadable_file_is_listed_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record(tmp_path / "good.jsonl", 1_700_000_000.0, workload="sequential")
    (tmp_path / "junk.jsonl").write_text("hello\n")
    (tmp_path / "empty.jsonl").write_text("")
    assert run(tmp_path) == 0
    out = capsys.readouterr().out
    assert "good.jsonl" in out
    assert "junk.jsonl" in out and "not a wattflow session" in out
    assert "empty.jsonl" in out and "empty file" in out


def test_empty_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path) == 0
    assert capsys.readouterr().out.strip() == f"no sessions in {tmp_path}"


def test_missing_dir_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path / "nope") == 2
    err = capsys.readouterr().err
    assert err.startswith("wattflow: error: ") and "no such directory" in err
    assert err.count("\n") == 1


def test_a_file_given_as_dir_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "x.jsonl"
    f.write_text("")
    assert run(f) == 2
    assert "not a directory" in capsys.readouterr().err


def test_default_dir_is_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sessions").mkdir()
    record(tmp_path / "sessions" / "one.jsonl", 1_700_000_000.0, workload="agentic")
    assert sessions.run(argparse.Namespace(dir=None)) == 0
    assert capsys.readouterr().out.startswith("one.jsonl")
