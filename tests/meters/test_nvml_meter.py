"""NvmlMeter against a fake NVML that behaves like GPUs (tests/fakes/fake_pynvml.py)."""

from __future__ import annotations

import itertools

import pytest

from meters.base import MeterUnavailable, PowerCapError
from meters.nvml.meter import NvmlMeter
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml, NVMLError_DriverNotLoaded, install

DT = 0.05
ENERGY_CALL = "nvmlDeviceGetTotalEnergyConsumption"


def _run(meter: NvmlMeter, fake: FakeNvml, seconds: float, t0: float = 0.0) -> list:
    """Sample every DT for `seconds`, time passing on the fake between samples."""
    out = []
    n = round(seconds / DT)
    for i in range(n + 1):
        if i:
            fake.advance(DT)
        out.append(meter.sample(t0 + i * DT))
    return out


def _open(monkeypatch: pytest.MonkeyPatch, fake: FakeNvml, **kw: object) -> NvmlMeter:
    install(monkeypatch, fake)
    meter = NvmlMeter(**kw)  # type: ignore[arg-type]
    meter.open()
    return meter


def test_info_lists_every_gpu_with_its_channels_and_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(
        [FakeGpu(), FakeGpu(name="NVIDIA A100", min_limit_w=100, max_limit_w=400, limit_w=400)]
    )
    info = _open(monkeypatch, fake).info()
    assert [d.device for d in info.devices] == ["gpu0", "gpu1"]
    assert info.blocking and info.poll_interval_s == pytest.approx(0.05)
    d0, d1 = info.devices
    assert d0.power_limit_range_w == (200.0, 700.0) and d0.power_limit_w == 700.0
    assert d1.power_limit_range_w == (100.0, 400.0) and d1.name == "NVIDIA A100"
    for ch in (
        "energy_mj",
        "power_w",
        "power_avg_w",
        "util_pct",
        "mem_used_mib",
        "sm_clock_mhz",
        "temp_c",
        "power_limit_w",
    ):
        assert ch in d0.channels


def test_sample_reads_every_channel_in_watts_and_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(
        [
            FakeGpu(
                power_w=312.5,
                power_avg_w=290.0,
                util_pct=87,
                temp_c=61,
                sm_clock_mhz=1755,
                mem_used_bytes=2048 * 1048576,
            )
        ]
    )
    (s,) = _open(monkeypatch, fake).sample(1.25)
    assert (s.device, s.component, s.meter, s.t_s) == ("gpu0", "gpu", "nvml", 1.25)
    assert s.power_w == pytest.approx(312.5) and s.power_avg_w == pytest.approx(290.0)
    assert (s.util_pct, s.temp_c, s.sm_clock_mhz, s.mem_used_mib) == (87, 61, 1755, 2048)
    assert s.power_limit_w == 700.0 and s.energy_mj == 0.0  # the first sample is the zero


def test_energy_counter_is_read_about_once_a_second_and_totals_are_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeNvml([FakeGpu(power_w=300.0)])
    meter = _open(monkeypatch, fake)
    probes = fake.calls[ENERGY_CALL]
    samples = _run(meter, fake, 3.0)
    assert len(samples) == 61
    # t = 0, 1, 2, 3: four expensive reads instead of 61.
    assert fake.calls[ENERGY_CALL] - probes == 4
    assert samples[-1][0].energy_mj == pytest.approx(300.0 * 3.0 * 1000.0)
    # Between counter reads the power integral fills in: t = 1.5 s reads ~450 J.
    assert samples[30][0].energy_mj == pytest.approx(450_000.0, rel=1e-6)


def test_interpolation_is_corrected_at_each_counter_read_and_never_decreases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeNvml([FakeGpu(power_w=100.0)])
    meter = _open(monkeypatch, fake)
    base = fake.gpus[0].energy_mj
    energies: list[float] = []
    exact: dict[int, float] = {}
    for i in range(81):  # 4 s: power ramps up for 2 s, then down
        if i:
            fake.gpus[0].power_w = 100.0 + 200.0 * min(i, 80 - i) / 40.0
            fake.advance(DT)
        (s,) = meter.sample(i * DT)
        assert s.energy_mj is not None
        energies.append(s.energy_mj)
        if i % 20 == 0:
            exact[i] = fake.gpus[0].energy_mj - base
    assert all(b >= a for a, b in itertools.pairwise(energies))
    # Rising power: the trapezoid lags the counter, so each read snaps up to exact.
    assert energies[20] == pytest.approx(exact[20], abs=1.0)
    assert energies[40] == pytest.approx(exact[40], abs=1.0)
    # Falling power: the trapezoid runs ahead; the value may hold but stays within
    # one interval's interpolation error of the exact total.
    assert energies[80] >= exact[80] - 1.0
    assert energies[80] == pytest.approx(exact[80], rel=0.01)
    # And the final, forced read is exact once the counter has caught up.
    fake.advance(1.0)
    (s,) = meter.sample(5.0, exact=True)
    assert s.energy_mj == pytest.approx(fake.gpus[0].energy_mj - base, abs=1.0)


def test_exact_sample_forces_a_counter_read(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([FakeGpu(power_w=200.0)])
    meter = _open(monkeypatch, fake)
    meter.sample(0.0)
    before = fake.calls[ENERGY_CALL]
    fake.advance(0.1)
    meter.sample(0.1)
    assert fake.calls[ENERGY_CALL] == before
    meter.sample(0.1, exact=True)
    assert fake.calls[ENERGY_CALL] == before + 1


def test_gpu_without_energy_counter_integrates_power(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([FakeGpu(power_w=250.0, has_energy_counter=False)])
    meter = _open(monkeypatch, fake)
    assert any("no energy counter" in n for n in meter.info().notes)
    samples = _run(meter, fake, 2.0)
    assert samples[-1][0].energy_mj == pytest.approx(250.0 * 2.0 * 1000.0)
    assert fake.calls[ENERGY_CALL] == 1  # the probe at open, never again


def test_gpu_without_power_fields_falls_back_to_power_usage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeNvml([FakeGpu(power_w=180.0, has_power_fields=False)])
    meter = _open(monkeypatch, fake)
    (s,) = meter.sample(0.0)
    assert s.power_w == pytest.approx(180.0) and s.power_avg_w is None
    assert "power_avg_w" not in meter.info().devices[0].channels
    assert fake.calls["nvmlDeviceGetPowerUsage"] >= 1


def test_counter_reset_is_noted_and_energy_continues(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([FakeGpu(power_w=400.0)])
    meter = _open(monkeypatch, fake)
    _run(meter, fake, 1.5)
    fake.reset_counter(0)
    samples = _run(meter, fake, 1.5, t0=1.5)
    notes = meter.drain_notes()
    assert len(notes) == 1 and "gpu0" in notes[0] and "reset" in notes[0]
    energies = [float(s[0].energy_mj or 0.0) for s in samples]
    assert all(b >= a for a, b in itertools.pairwise(energies))
    # Nothing lost: the reset's gap is covered by the power integral.
    assert energies[-1] == pytest.approx(400.0 * 3.0 * 1000.0, rel=0.01)
    assert meter.drain_notes() == []


def test_lost_gpu_is_reported_once_and_the_others_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([FakeGpu(power_w=300.0), FakeGpu(power_w=150.0)])
    meter = _open(monkeypatch, fake)
    assert len(meter.sample(0.0)) == 2
    fake.lose(1)
    fake.advance(DT)
    samples = meter.sample(DT)
    assert [s.device for s in samples] == ["gpu0"]
    errors = meter.drain_errors()
    assert len(errors) == 1 and errors[0].startswith("gpu1") and "GPU is lost" in errors[0]
    assert "\n" not in errors[0]
    fake.advance(DT)
    assert [s.device for s in meter.sample(2 * DT)] == ["gpu0"]
    assert meter.drain_errors() == []
    with pytest.raises(PowerCapError, match="lost"):
        meter.set_power_limit("gpu1", 300.0)


def test_subset_of_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([FakeGpu(), FakeGpu(), FakeGpu()])
    meter = _open(monkeypatch, fake, gpus=[2, 0])
    assert sorted(s.device for s in meter.sample(0.0)) == ["gpu0", "gpu2"]


def test_unavailable_says_why_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, FakeNvml(init_error=NVMLError_DriverNotLoaded))
    with pytest.raises(
        MeterUnavailable, match=r"^nvml: no NVIDIA driver here \(Driver Not Loaded\)$"
    ):
        NvmlMeter().open()
    fake = install(monkeypatch, FakeNvml([FakeGpu(), FakeGpu()]))
    with pytest.raises(MeterUnavailable, match=r"no GPU 5 here \(2 GPUs: 0-1\)"):
        NvmlMeter(gpus=[5]).open()
    assert fake.initialized == 0  # the failed open shut NVML down again
    fake.lose(1)
    with pytest.raises(MeterUnavailable, match=r"^nvml: cannot read the GPUs \(GPU is lost\)$"):
        NvmlMeter().open()
    assert fake.initialized == 0


def test_from_options_validates() -> None:
    with pytest.raises(ValueError, match="gpus"):
        NvmlMeter.from_options({"gpus": "0,1"})
    with pytest.raises(ValueError, match="poll_interval_s = 0 is out of range"):
        NvmlMeter.from_options({"poll_interval_s": 0})
    with pytest.raises(ValueError, match="energy_interval_s must be a finite number"):
        NvmlMeter.from_options({"energy_interval_s": float("nan")})
    m = NvmlMeter.from_options({"gpus": [1], "energy_interval_s": 0.5, "twin": object()})
    assert m.energy_interval_s == 0.5


def test_set_power_limit_checks_constraints_and_permission(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeNvml([FakeGpu()], root=False)
    meter = _open(monkeypatch, fake)
    with pytest.raises(PowerCapError, match="needs root"):
        meter.set_power_limit("gpu0", 300.0)
    fake.root = True
    with pytest.raises(PowerCapError, match="outside 200-700 W"):
        meter.set_power_limit("gpu0", 150.0)
    with pytest.raises(PowerCapError, match="outside"):
        meter.set_power_limit("gpu0", float("nan"))
    with pytest.raises(PowerCapError, match="no GPU 'gpu7'"):
        meter.set_power_limit("gpu7", 300.0)
    assert fake.gpus[0].limit_w == 700.0
    meter.set_power_limit("gpu0", 325.0)
    assert fake.gpus[0].limit_w == 325.0 and fake.set_calls == [(0, 325_000)]
    (s,) = meter.sample(0.0)
    assert s.power_limit_w == 325.0
    assert meter.info().devices[0].power_limit_w == 325.0
    assert meter.power_limit_record("gpu0")["limit_w"] == 325.0


def test_enforced_limit_is_what_samples_report(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([FakeGpu(limit_w=700.0, external_limit_w=550.0)])
    meter = _open(monkeypatch, fake)
    (s,) = meter.sample(0.0)
    assert s.power_limit_w == 550.0
    assert meter.power_limit_record("gpu0")["limit_w"] == 700.0  # what to restore


def test_close_shuts_nvml_down_and_open_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([FakeGpu()])
    meter = _open(monkeypatch, fake)
    meter.open()
    assert fake.initialized == 1
    meter.close()
    assert fake.initialized == 0
    with pytest.raises(RuntimeError, match="before open"):
        meter.sample(0.0)
