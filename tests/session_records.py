"""A recorded session as whole records (dicts with every field, as version 1 wrote them),
read through the session reader: tests look at sessions this way, whatever the encoding
on disk (version 2 leaves defaults and repeated values out of its lines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.core.session_reader import read_session


def session_records(path: Path | str) -> list[dict[str, Any]]:
    s = read_session(path)
    out = [s.header.to_dict(), *(e.to_dict() for e in s.events)]
    if s.end is not None:
        out.append(s.end.to_dict())
    return out
