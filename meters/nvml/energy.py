"""Cumulative GPU energy from a sparse exact counter and dense power readings.

NVML's energy counter is exact but expensive to read (3.4 ms of CPU on an H100), while
the power fields are nearly free. So the meter reads power every sample and the
counter about once a second: between counter reads the cumulative energy advances by
the trapezoid integral of instant power; at each counter read it snaps back to the
counter, so errors never accumulate. Without a counter the integral is the energy.

The emitted value never decreases (a cumulative counter's contract): when the
integral ran ahead of the next counter read (the counter itself updates only ~10 times
a second, so it can lag), the value holds until the exact total catches up.
"""

from __future__ import annotations


class EnergyTracker:
    def __init__(self, has_counter: bool) -> None:
        self.has_counter = has_counter
        self._emitted_mj = 0.0
        self._base_mj = 0.0  # exact cumulative energy at the last counter read
        self._since_base_mj = 0.0  # power integral since then
        self._raw_ref: int | None = None  # raw counter value at the last read
        self._last_t: float | None = None
        self._last_p: float | None = None
        self.resets = 0

    @property
    def energy_mj(self) -> float:
        return self._emitted_mj

    @property
    def exact_mj(self) -> float:
        """Energy at the last counter read (exact up to the counter's resolution)."""
        return self._base_mj

    def add_power(self, t_s: float, power_w: float | None) -> None:
        if power_w is None:
            return
        if self._last_t is not None and self._last_p is not None and t_s > self._last_t:
            self._since_base_mj += (power_w + self._last_p) / 2.0 * (t_s - self._last_t) * 1000.0
        if self._last_t is None or t_s >= self._last_t:
            self._last_t, self._last_p = t_s, power_w
        self._emit(self._base_mj + self._since_base_mj)

    def add_counter(self, raw_mj: int) -> str | None:
        """Fold in a counter read; returns a note when the counter went backwards."""
        note = None
        if self._raw_ref is None:
            pass  # the first read is the zero of this run
        elif raw_mj >= self._raw_ref:
            self._base_mj += raw_mj - self._raw_ref
        else:
            # A drop means the counter was reset (driver reload, GPU reset). The energy
            # since the last read is unknown to the counter: the power integral is the
            # best estimate of it; then continue counting from the new raw value.
            self._base_mj += self._since_base_mj
            self.resets += 1
            note = (
                f"energy counter went back from {self._raw_ref} to {raw_mj} mJ (reset); "
                "continuing from the last value"
            )
        self._raw_ref = raw_mj
        self._since_base_mj = 0.0
        self._emit(self._base_mj)
        return note

    def _emit(self, value_mj: float) -> None:
        if value_mj > self._emitted_mj:
            self._emitted_mj = value_mj
