"""`wattflow sessions [DIR]`: one line per recorded session, newest first."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.core.session_reader import SessionError, SessionSummary, format_summary, summarize


def _started(s: SessionSummary) -> float:
    # The header's start time orders sessions even when files were copied (mtime lost).
    return s.header.started_unix_s or s.path.stat().st_mtime


def run(args: argparse.Namespace) -> int:
    directory = Path(getattr(args, "dir", None) or "sessions")
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "no such directory"
        print(f"wattflow: error: {directory}: {what}", file=sys.stderr)
        return 2
    files = sorted([*directory.glob("*.jsonl"), *directory.glob("*.jsonl.zst")])
    if not files:
        print(f"no sessions in {directory}")
        return 0
    good: list[SessionSummary] = []
    bad: list[tuple[Path, str]] = []
    for path in files:
        try:
            good.append(summarize(path))
        except SessionError as e:
            # One unreadable file must not hide the others: list it with the reason.
            reason = str(e).removeprefix(f"{path}: ").removeprefix(f"{path} ")
            bad.append((path, reason))
        except OSError as e:  # e.g. removed while listing
            bad.append((path, str(e.strerror or e)))
    good.sort(key=_started, reverse=True)
    for s in good:
        print(format_summary(s))
    for path, reason in bad:
        print(f"{path.name:<32} (unreadable: {reason})")
    return 0
