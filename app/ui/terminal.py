"""Whether the dashboard can run here (no Textual import: the headless path asks too)."""

from __future__ import annotations

import sys


def has_terminal() -> bool:
    """Textual reads keys from stdin, sizes itself from stdout and draws on stderr: all
    three must be a terminal, or the dashboard would draw into a file at 80x24."""
    streams = (sys.stdin, sys.stdout, sys.stderr)
    return all(s is not None and s.isatty() for s in streams)
