"""Crashes the fuzz tests found in code owned elsewhere, each with the exact input that
triggers it. They are strict xfails: when a bug is fixed the test passes, xfail(strict)
turns that into a failure, and whoever fixed it removes the marker (and the matching
steering in the fuzz test's `_around_known_bugs` / `_without_known_bugs`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.errors import MarkupError

from tests.fuzz._cli import check, wattflow

HEADER = b'{"kind":"session","version":1}\n'


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "app/headless.py HeadlessPrinter.on_event: `ev.message.splitlines()[0]` raises "
    "IndexError for an error event whose message is empty (or only a newline); the bus "
    "logs the traceback and drops the printer. A live run can emit such an event too "
    "(str() of an exception without a message is '')."))
def test_replay_of_an_error_event_with_an_empty_message(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(HEADER + b'{"kind":"error","t_s":1.0,"source":"engine","message":""}\n')
    check(wattflow("replay", str(path), "--headless", "--speed", "max"), path=str(path))


@pytest.mark.xfail(strict=True, raises=MarkupError, reason=(
    "app/commands/report.py: strings from the session (stage labels, knob names, failure "
    "reasons, engine and workload names, warnings) are printed as rich markup; a closing "
    "tag such as '[/bold]' raises rich.errors.MarkupError. A TOML workflow may legitimately "
    "label a stage so. Fix: rich.markup.escape() them, or Text objects."))
def test_report_of_a_stage_label_that_looks_like_markup(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(HEADER + b'{"kind":"request","t_s":1.0,"phase":"finished",'
                     b'"stage":"[/bold]","output_tokens":3,"latency_s":1.0}\n')
    check(wattflow("report", str(path)), path=str(path))
