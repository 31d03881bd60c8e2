"""Two sessions played together (`wattflow replay A B`): how they line up.

Both play on one clock, A's: at common time `t`, A is at its own `t` and B at
`t - offset`. Aligned on their starts the offset is 0; aligned on a mark (`--align
MARK`), it is the time of A's first mark of that label minus B's, so the two marks
pass at the same moment (B starts `offset` seconds late, or early when negative).
"""

from __future__ import annotations

from app.core.replay_index import ReplayIndex
from app.core.session_reader import SessionError


def mark_time(index: ReplayIndex, label: str) -> float:
    """The time of the session's first mark labelled `label`; SessionError if none."""
    for lm in index.landmarks:
        if lm.kind == "mark" and lm.label == label:
            return lm.t_s
    labels = sorted({lm.label for lm in index.landmarks if lm.kind == "mark"})
    where = index.path if index.path is not None else "the session"
    have = f"its marks: {', '.join(labels)}" if labels else "it has no marks"
    raise SessionError(f"{where}: no mark {label!r} to align on ({have})")


def align_offset(a: ReplayIndex, b: ReplayIndex, mark: str | None) -> float:
    """B's time is the common time minus this."""
    if mark is None:
        return 0.0
    return mark_time(a, mark) - mark_time(b, mark)
