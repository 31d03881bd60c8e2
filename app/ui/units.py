"""Numbers with their units, short enough for a dashboard cell. `-` means not known yet."""

from __future__ import annotations

import math

DASH = "-"


def seconds(v: float | None) -> str:
    if v is None or math.isnan(v):
        return DASH
    if v < 1.0:
        return f"{v * 1000:.0f} ms" if v >= 0.01 else f"{v * 1000:.1f} ms"
    return f"{_sig(v)} s"


def joules(v: float | None) -> str:
    if v is None:
        return DASH
    for scale, unit in ((1e9, "GJ"), (1e6, "MJ"), (1e3, "kJ")):
        if abs(v) >= scale:
            return f"{_sig(v / scale)} {unit}"
    return f"{_sig(v)} J"


def _sig(v: float) -> str:
    """Three significant figures at most, never in exponent form: 3.42, 24.6, 141."""
    a = abs(v)
    return f"{v:.2f}" if a < 10 else f"{v:.1f}" if a < 100 else f"{v:.0f}"


def tokens(v: int | None) -> str:
    if v is None:
        return DASH
    if v >= 1_000_000:
        return f"{_sig(v / 1e6)}M"
    if v >= 10_000:
        return f"{_sig(v / 1e3)}k"
    return f"{v:,}"


def watts(v: float | None) -> str:
    return DASH if v is None else f"{v:.0f} W"


def per_token(v: float | None) -> str:
    if v is None:
        return DASH
    return f"{v:.3f} J" if v >= 0.01 else f"{v * 1000:.2f} mJ"


def rate(v: float | None, unit: str) -> str:
    if v is None:
        return DASH
    return f"{v:,.0f} {unit}" if v >= 100 else f"{v:.1f} {unit}"


def count(v: int | None) -> str:
    return DASH if v is None else f"{v:,}"


def duration(v: float) -> str:
    """Run time as h:mm:ss.s (or m:ss.s)."""
    m, s = divmod(round(max(0.0, v), 1), 60.0)  # 59.97 s is 1:00.0, not 0:60.0
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"
