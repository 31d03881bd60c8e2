"""EnergyTracker: sparse exact counter + dense power, monotonic, exact at counter reads."""

from __future__ import annotations

import pytest

from meters.nvml.energy import EnergyTracker


def test_without_counter_the_trapezoid_is_the_energy() -> None:
    e = EnergyTracker(has_counter=False)
    for t, p in [(0.0, 100.0), (1.0, 300.0), (2.0, 300.0), (2.0, 999.0), (1.5, 5.0)]:
        e.add_power(t, p)  # a repeated or backwards timestamp adds nothing
    assert e.energy_mj == pytest.approx((200.0 + 300.0) * 1000.0)


def test_counter_read_snaps_to_exact_and_overshoot_holds() -> None:
    e = EnergyTracker(has_counter=True)
    e.add_power(0.0, 100.0)
    e.add_counter(5_000)  # zero of the run
    e.add_power(1.0, 100.0)
    assert e.energy_mj == pytest.approx(100_000.0)
    e.add_counter(5_000 + 120_000)  # the counter says more: exact wins
    assert e.energy_mj == pytest.approx(120_000.0) == e.exact_mj
    e.add_power(2.0, 100.0)
    assert e.energy_mj == pytest.approx(220_000.0)
    e.add_counter(5_000 + 200_000)  # the counter says less: hold, never go back
    assert e.energy_mj == pytest.approx(220_000.0) and e.exact_mj == pytest.approx(200_000.0)
    e.add_power(3.0, 100.0)  # 200 + 100 = 300 J > 220 J held: moves again
    assert e.energy_mj == pytest.approx(300_000.0)


def test_reset_counts_the_gap_from_power() -> None:
    e = EnergyTracker(has_counter=True)
    e.add_power(0.0, 200.0)
    e.add_counter(1_000_000)
    e.add_power(1.0, 200.0)
    note = e.add_counter(3_000)  # went back: a reset
    assert note is not None and "reset" in note and e.resets == 1
    assert e.exact_mj == pytest.approx(200_000.0)
    e.add_power(2.0, 200.0)
    assert e.add_counter(3_000 + 200_000) is None
    assert e.energy_mj == pytest.approx(400_000.0)
