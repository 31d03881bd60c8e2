"""What putting one saved power limit back came to (a leaf module: the guard and every
meter's restorer use it without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestoreResult:
    device: str
    limit_w: float
    ok: bool
    message: str

    def line(self) -> str:
        if self.ok:
            return f"{self.device}: power limit restored to {self.limit_w:g} W"
        return f"{self.device}: could not restore {self.limit_w:g} W: {self.message}"
