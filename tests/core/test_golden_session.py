"""The same seeded run records the same session: today's run of the golden configuration
(composite on the H100 twin, virtual time, two scheduled knob changes) against the
session kept in tests/data. Refactors of the core must not change what a run records;
knob events and the header (host, pid, start time) are set aside, numbers are compared
to 1e-9 relative. A change meant to alter recordings regenerates the golden file
(`python -m tests.data.make_golden`) and says so."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import orjson

from tests.data.make_golden import GOLDEN, record

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
    assert len(golden) > 2000
    for i, (a, b) in enumerate(zip(now, golden, strict=False)):
        diff = _same(a, b, f"event {i} ({b.get('kind')})")
        assert diff is None, diff
    assert len(now) == len(golden)
