"""The twin's roofline, power model and energy timeline."""

from __future__ import annotations

import dataclasses

import pytest

from engines.sim.power import PowerCoefficients
from engines.sim.roofline import Calibration
from engines.sim.specs import GPUS, MODELS, resolve_gpu, resolve_model
from engines.sim.twin import GpuTwin

H100, LLAMA = GPUS["h100"], MODELS["llama-3.1-8b"]


def twin() -> GpuTwin:
    return GpuTwin(H100, LLAMA)


def test_datasheet_specs() -> None:
    assert LLAMA.kv_bytes_per_token == 128 * 1024
    assert H100.peak_flops == 989e12 and H100.mem_bw_bps == 3.35e12 and H100.tdp_w == 700
    a100 = resolve_gpu("A100")
    assert a100.peak_flops == 312e12 and a100.tdp_w == 400
    assert resolve_model("meta-llama/Llama-3.1-8B-Instruct") is LLAMA


def test_fitted_parameters_stay_physical() -> None:
    cal = Calibration()
    for f in ("eff_compute", "eff_mem", "eff_attn", "eff_kv"):
        assert 0.3 <= getattr(cal, f) <= 0.95, f  # H100 streams ~93% of peak HBM
    assert 1.0 <= cal.smooth_k <= 4.0
    assert cal.overhead_s < 5e-3
    p = PowerCoefficients()
    assert all(getattr(p, f.name) >= 0 for f in dataclasses.fields(p))


def test_small_batch_decode_is_memory_bound_and_clock_insensitive() -> None:
    t = twin()
    work = t.roofline.decode_work(1, 500)
    full = t.roofline.times(work, 1.0)
    weights_s = LLAMA.weight_bytes / (H100.mem_bw_bps * Calibration().eff_mem)
    assert full.total_s == pytest.approx(weights_s, rel=0.35)
    slow = t.roofline.times(work, 0.7)
    assert slow.total_s / full.total_s < 1.05  # memory-bound: barely slower


def test_prefill_is_compute_bound_and_slows_with_the_clock() -> None:
    t = twin()
    work = t.roofline.decode_work(0, 0)
    t.roofline.add_chunk(work, 0, 8192)
    full = t.roofline.times(work, 1.0)
    slow = t.roofline.times(work, 0.7)
    assert full.compute_s > 5 * full.memory_s
    assert slow.total_s / full.total_s == pytest.approx(1 / 0.7, rel=0.05)


def test_power_cap_lowers_the_clock_until_power_fits() -> None:
    t = twin()
    work = t.roofline.decode_work(0, 0)
    t.roofline.add_chunk(work, 0, 4096)
    free = t.power.solve(work, 10_000)
    assert free.times.clock == 1.0 and free.power_w > 700  # prefill wants more than TDP
    prev = free.power_w
    for cap in (700, 500, 300):
        sp = t.power.solve(work, cap)
        assert sp.power_w <= cap and sp.power_w < prev
        assert sp.times.clock < 1.0
        prev = sp.power_w
    # In the DVFS range energy per step falls as the clock drops (dynamic power ~ f V^2);
    # below the voltage floor static power over a longer step wins (race to idle).
    e = {cap: t.power.solve(work, cap).energy_j for cap in (700, 550, 250)}
    assert e[550] < e[700] < e[250]


def test_idle_power_and_energy_is_the_exact_integral() -> None:
    t = twin()
    assert t.energy_j(10.0) == pytest.approx(10.0 * H100.idle_w)
    t.record_segment(10.0, 12.0, 500.0, 1.0, 1.0)
    t.record_segment(13.0, 14.0, 300.0, 0.8, 0.5)
    e10 = 10.0 * H100.idle_w
    assert t.energy_j(11.0) == pytest.approx(e10 + 500.0)  # linear inside a step
    assert t.energy_j(12.5) == pytest.approx(e10 + 1000.0 + 0.5 * H100.idle_w)
    assert t.energy_j(14.0) == pytest.approx(e10 + 1000.0 + H100.idle_w + 300.0)
    assert t.power_w(11.0) == 500.0 and t.power_w(12.5) == H100.idle_w
    assert t.busy_fraction(12.0, 14.0) == pytest.approx(0.25)
    t.truncate(13.0)  # withdraw the planned step
    assert t.energy_j(14.0) == pytest.approx(e10 + 1000.0 + 2 * H100.idle_w)
    t.prune(100.0)
    assert t.energy_j(101.0) == pytest.approx(e10 + 1000.0 + 89 * H100.idle_w)


def test_set_power_limit_validates_and_notifies() -> None:
    t = twin()
    seen: list[float] = []
    t.on_change(lambda: seen.append(t.power_limit_w))
    t.set_power_limit(450)
    assert seen == [450.0]
    with pytest.raises(ValueError, match="outside"):
        t.set_power_limit(150)
