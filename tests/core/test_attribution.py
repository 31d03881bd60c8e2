from __future__ import annotations

import pytest

from app.core.attribution import EnergyAttributor
from app.core.events import Sample


def _s(t: float, mj: float, device: str = "gpu0", component: str = "gpu") -> Sample:
    return Sample(t_s=t, device=device, component=component, energy_mj=mj)


def test_interval_energy_split_by_weighted_tokens_and_idle_kept_apart() -> None:
    a = EnergyAttributor(prefill_weight=0.5)
    a.on_sample(_s(0.0, 0.0))
    a.on_sample(_s(1.0, 100_000.0))  # 100 J with nobody in the engine: idle
    a.on_admit("r1", 100)
    a.on_admit("r2", 100)
    a.on_work("r1", prefill_tokens=100, decode_tokens=0)  # work 50
    a.on_work("r2", prefill_tokens=0, decode_tokens=150)  # work 150
    a.on_sample(_s(2.0, 300_000.0))  # 200 J
    assert a.take("r1") == {"gpu": pytest.approx(50.0)}
    assert a.take("r2") == {"gpu": pytest.approx(150.0)}
    assert a.idle_j["gpu"] == pytest.approx(100.0)
    assert a.idle_j["gpu"] + a.attributed_j["gpu"] == pytest.approx(a.measured_j()["gpu"])


def test_prefill_in_progress_is_not_idle() -> None:
    a = EnergyAttributor()
    a.on_sample(_s(0.0, 0.0))
    a.on_admit("long", 6000)
    a.on_admit("short", 2000)
    a.on_sample(_s(1.0, 80_000.0))  # no token reported yet: both are prefilling
    assert a.idle_j["gpu"] == 0.0
    assert a.take("long")["gpu"] == pytest.approx(60.0)
    assert a.take("short")["gpu"] == pytest.approx(20.0)
    a.on_done("long")
    a.on_done("short")
    a.on_sample(_s(2.0, 130_000.0))
    assert a.idle_j["gpu"] == pytest.approx(50.0)


def test_each_component_is_attributed_separately_and_ready_waits_for_all() -> None:
    a = EnergyAttributor()
    a.on_sample(_s(0.0, 0.0))
    a.on_sample(_s(0.0, 0.0, "cpu0", "cpu"))
    a.on_admit("r", 10)
    a.on_work("r", 0, 10)
    a.on_sample(_s(1.0, 10_000.0))
    assert not a.ready_before(0.5)  # the CPU has not been read since
    a.on_sample(_s(1.0, 4_000.0, "cpu0", "cpu"))
    assert a.ready_before(0.5)
    assert a.take("r") == {"gpu": pytest.approx(10.0), "cpu": pytest.approx(4.0)}
