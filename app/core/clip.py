"""Free text from a session (a mark's label, a reason) as shown to a person: a label of
megabytes is a session's to keep, not a screen's or a report's to wrap (wrapping 10 MB
took the report 45 s)."""

from __future__ import annotations


def clip_text(text: str, limit: int, note: str = "") -> str:
    """`text` up to `limit` characters; longer, its first `limit` and its length (and
    `note`)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters{note})"


__all__ = ["clip_text"]
