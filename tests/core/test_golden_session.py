"""The same seeded run records the same session: today's run of the golden configuration
(composite on the H100 twin, virtual time, two scheduled knob changes) against the
session kept in tests/data. Refactors of the core must not change what a run records;
knob events and the header (host, pid, start time) are set aside, numbers are compared
to 1e-9 relative. A change meant to alter recordings regenerates the golden file
(`python -m tests.data.make_golden`) and says so.

The same run recorded in format versions 1 and 2 is kept too (golden-composite-seed7-v1,
-v2): they must still read, and read back as the same events as today's recording."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.core.events import SESSION_VERSION, Event
from app.core.session_reader import read_session
from tests.data.make_golden import GOLDEN, GOLDEN_V1, GOLDEN_V2, record

#: Summary entries that depend on the machine, not on the run; and the knobs in force at
#: the end, set aside like knob events (a new knob adds a key, not a change to the run).
_MACHINE_KEYS = {"wall_s", "knobs"}


def _events(data: bytes) -> list[dict[str, Any]]:
    out = []
    for line in data.splitlines():
        d = orjson.loads(line)
        if d["kind"] in ("session", "knob"):
            continue
        if d["kind"] == "end":
            d["summary"] = {k: v for k, v in d["summary"].items() if k not in _MACHINE_KEYS}
        out.append(d)
    return out


def _same(a: Any, b: Any, where: str) -> str | None:
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(
                a, b, rel_tol=1e-9, abs_tol=1e-12):
            return None
        return f"{where}: {a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where}: keys differ: {sorted(a.keys() ^ b.keys())}"
        for k in a:
            if (diff := _same(a[k], b[k], f"{where}.{k}")) is not None:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if (diff := _same(x, y, f"{where}[{i}]")) is not None:
                return diff
        return None
    return None if a == b else f"{where}: {a!r} != {b!r}"


def test_a_seeded_run_records_what_the_golden_session_holds(tmp_path: Path) -> None:
    session = tmp_path / "now.jsonl"
    record(session)
    now = _events(session.read_bytes())
    golden = _events(gzip.decompress(GOLDEN.read_bytes()))
    assert len(golden) > 1000
    for i, (a, b) in enumerate(zip(now, golden, strict=False)):
        diff = _same(a, b, f"event {i} ({b.get('kind')})")
        assert diff is None, diff
    assert len(now) == len(golden)


def _by_subject(events: list[Event]) -> list[dict[str, Any]]:
    """Events as dicts in a canonical order: a version-2 session reads back a one-call
    stage's `finished` and a request's `first_token` next to its request's last line,
    where version 1 had them in the order they happened."""
    out = [{"kind": e.kind, **e.to_dict()} for e in events if e.kind != "knob"]
    names = ("kind", "request_id", "workflow_id", "node", "phase", "device", "source")
    return sorted(out, key=lambda d: (*(str(d.get(k, "")) for k in names), d["t_s"]))


def _close(a: Any, b: Any, where: str) -> str | None:
    """Equal, numbers to the resolution of a version-2 session (docs/session-format.md:
    1 us for times, 0.1 of a unit for power, percentages, clocks, temperatures)."""
    if isinstance(a, float) or isinstance(b, float):
        tol = 1.6e-6 if where.endswith("_s") else 0.0501
        if isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(
                a, b, rel_tol=1e-9, abs_tol=tol):
            return None
        return f"{where}: {a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where}: keys differ: {sorted(a.keys() ^ b.keys())}"
        for k in a:
            if (diff := _close(a[k], b[k], f"{where}.{k}")) is not None:
                return diff
        return None
    return None if a == b else f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def now_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("golden") / "now.jsonl"
    record(path)
    return path


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_golden_session_reads_as_todays_recording(tmp_path: Path, now_path: Path,
                                                            version: int) -> None:
    old_path = tmp_path / f"v{version}.jsonl"
    old_path.write_bytes(gzip.decompress((GOLDEN_V1 if version == 1 else GOLDEN_V2)
                                         .read_bytes()))
    old = read_session(old_path)
    assert old.header.version == version and old.end is not None and not old.warnings
    now = read_session(now_path)
    assert now.header.version == SESSION_VERSION
    a, b = _by_subject(now.events), _by_subject(old.events)
    assert len(a) == len(b) > 2000
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        diff = _close(x, y, f"event {i} ({y.get('kind')})")
        assert diff is None, diff
    size, old_size = now_path.stat().st_size, old_path.stat().st_size
    if version == 1:  # compact lines are the smaller by far, for the same events
        assert size < 0.5 * old_size
    else:  # version 2 names the device of every sample line, version 3 rarely
        lines = [orjson.loads(x) for x in old_path.read_bytes().splitlines()]
        assert all("device" in x for x in lines if x["kind"] == "sample")
        assert size < old_size
