"""Crashes the fuzz tests found outside the session reader, each kept as the exact input
that triggered it (both fixed: the headless printer and the report's tables)."""

from __future__ import annotations

from pathlib import Path

from tests.fuzz._cli import check, wattflow

HEADER = b'{"kind":"session","version":1}\n'


def test_replay_of_an_error_event_with_an_empty_message(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(HEADER + b'{"kind":"error","t_s":1.0,"source":"engine","message":""}\n')
    o = wattflow("replay", str(path), "--headless", "--speed", "max")
    check(o, path=str(path))
    assert o.code == 0 and "(no message)" in o.out


def test_report_of_a_stage_label_that_looks_like_markup(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(HEADER + b'{"kind":"request","t_s":1.0,"phase":"finished",'
                     b'"stage":"[/bold]","output_tokens":3,"latency_s":1.0}\n')
    o = wattflow("report", str(path))
    check(o, path=str(path))
    assert o.code == 0 and "[/bold]" in o.out  # printed as written, not as markup
