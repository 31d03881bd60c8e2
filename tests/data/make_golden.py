"""Writes tests/data/golden-composite-seed7.jsonl.gz: the session of one seeded run on
virtual time, the reference that tests/core/test_golden_session.py compares today's
runs with. Regenerate only for a change that is meant to alter what runs record (say
so in the commit):

    python -m tests.data.make_golden
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path
from typing import Any

from app.core.clock import run_async
from app.core.knobs import ScheduledChange
from app.core.runner import RunConfig, Runner

GOLDEN = Path(__file__).with_name("golden-composite-seed7.jsonl.gz")
#: The same run in session format version 1 (every field of every event on its own line,
#: as wattflow wrote before compact lines), so that the reader's handling of version 1
#: stays tested against today's recording: written from the version-2 golden's events.
GOLDEN_V1 = Path(__file__).with_name("golden-composite-seed7-v1.jsonl.gz")
#: And in version 2 (compact lines before version 3's device cycle), written by the
#: recorder from the same events: the reader must read version-2 files as it did.
GOLDEN_V2 = Path(__file__).with_name("golden-composite-seed7-v2.jsonl.gz")


def golden_config(session: Path) -> RunConfig:
    return RunConfig(
        workload="composite",
        workload_params={"interactive_rate": 2.0, "sequential_rate": 0.2, "agentic_rate": 0.1},
        engine="sim", meters=["auto"], duration_s=45.0, seed=7, fast=True,
        schedule=[ScheduledChange(15.0, "batch_limit", 8), ScheduledChange(30.0, "power_cap", 400.0)],
        session_path=session,
    )


def record(session: Path) -> Any:
    return run_async(Runner(golden_config(session)).run(), virtual=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        session = Path(d) / "golden.jsonl"
        record(session)
        GOLDEN.write_bytes(gzip.compress(session.read_bytes(), compresslevel=9, mtime=0))
        GOLDEN_V1.write_bytes(gzip.compress(version_1_lines(session), compresslevel=9, mtime=0))
        GOLDEN_V2.write_bytes(gzip.compress(
            version_2_lines(session, Path(d) / "v2.jsonl"), compresslevel=9, mtime=0))
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes), {GOLDEN_V1.name} and"
          f" {GOLDEN_V2.name}")


def version_1_lines(session: Path) -> bytes:
    """The session's records as version 1 wrote them: one whole record a line."""
    import orjson

    from app.core.session_reader import read_session

    s = read_session(session)
    s.header.version = 1
    records = [s.header, *s.events, *([s.end] if s.end is not None else [])]
    return b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in records)


def version_2_lines(session: Path, scratch: Path) -> bytes:
    """The session's events recorded again in version 2 (the recorder writes the version
    its header names): what a version-2 wattflow wrote for this run."""
    from app.core.session_reader import read_session
    from app.core.session_writer import SessionRecorder

    s = read_session(session)
    s.header.version = 2
    rec = SessionRecorder(scratch)
    rec.open(s.header)
    for ev in s.events:
        rec.write(ev)
    assert s.end is not None
    rec.close(s.end)
    return scratch.read_bytes()


if __name__ == "__main__":
    main()
