"""Run `wattflow` in-process and check the outcome of hostile input: an exit code of
0, 1 or 2, no traceback anywhere (stdout, stderr, the log), errors of one line, and a
generous bound on time."""

from __future__ import annotations

import io
import logging
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

from app.cli import main

#: Per command: far above what any example needs (tens of milliseconds), far below a
#: hang. Generous because two cores are shared with other work.
TIME_BOUND_S = 30.0


@dataclass
class Outcome:
    argv: list[str]
    code: int
    out: str
    err: str
    elapsed_s: float
    logged: list[str]

    def describe(self) -> str:
        return (f"wattflow {' '.join(self.argv)} -> exit {self.code} in {self.elapsed_s:.1f} s\n"
                f"stdout: {self.out[-2000:]!r}\nstderr: {self.err[-2000:]!r}\n"
                f"log: {self.logged!r}")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def wattflow(*argv: str) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    records = _Records()
    root = logging.getLogger()
    root.addHandler(records)
    start = time.monotonic()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse exits; main itself returns
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        root.removeHandler(records)
    return Outcome(list(argv), code, out.getvalue(), err.getvalue(), time.monotonic() - start,
                   records.lines)


def check(o: Outcome, *, path: str | None = None) -> None:
    """The contract for any input: exit 0/1/2, no traceback, one-line errors that name
    the file, no subscriber dropped with an exception, within the time bound."""
    what = o.describe()
    assert o.code in (0, 1, 2), what
    assert "Traceback" not in o.out and "Traceback" not in o.err, what
    assert not o.logged, what
    assert o.elapsed_s < TIME_BOUND_S, what
    errors = [line for line in o.err.splitlines() if line.startswith("wattflow: error:")]
    if o.code == 2:
        assert len(errors) == 1, what
        if path is not None:
            assert path in errors[0], what
    for line in errors:
        assert len(line) < 2000, what  # a bad value is shown cut, not in full
