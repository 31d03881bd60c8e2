"""RaplMeter against a fake powercap tree (tests/fakes/fake_powercap.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meters.base import MeterUnavailable
from meters.rapl.meter import RaplMeter
from tests.fakes.fake_powercap import FakePowercap


def test_finds_package_and_dram_domains_only(tmp_path: Path) -> None:
    pc = FakePowercap(tmp_path, sockets=2)
    meter = RaplMeter(pc.root)
    meter.open()
    devices = [(d.device, d.component) for d in meter.info().devices]
    # core subzones and the intel-rapl-mmio duplicate are skipped.
    assert devices == [("cpu0", "cpu"), ("dram0", "dram"), ("cpu1", "cpu"), ("dram1", "dram")]
    assert meter.info().blocking


def test_energy_and_power_from_counter_differences(tmp_path: Path) -> None:
    pc = FakePowercap(tmp_path)
    meter = RaplMeter.from_options({"powercap_root": str(pc.root)})
    meter.open()
    first = {s.device: s for s in meter.sample(0.0)}
    assert first["cpu0"].energy_mj == 0.0 and first["cpu0"].power_w is None
    pc.add("cpu0", 40.0)
    pc.add("dram0", 5.0)
    s = {s.device: s for s in meter.sample(0.5)}
    assert s["cpu0"].energy_mj == pytest.approx(40_000.0)
    assert s["cpu0"].power_w == pytest.approx(80.0)
    assert s["dram0"].energy_mj == pytest.approx(5_000.0) and s["dram0"].component == "dram"


def test_counter_wraparound_against_max_energy_range(tmp_path: Path) -> None:
    pc = FakePowercap(tmp_path, max_range_uj=100_000_000)  # 100 J range: wraps fast
    meter = RaplMeter(pc.root)
    meter.open()
    pc.set_uj("cpu0", 90_000_000)
    meter.sample(0.0)
    total = 0.0
    for i in range(1, 6):  # 5 x 30 J: wraps at least once
        pc.add("cpu0", 30.0)
        total += 30.0
        (cpu,) = [s for s in meter.sample(float(i)) if s.device == "cpu0"]
        assert cpu.energy_mj == pytest.approx(total * 1000.0)
        assert cpu.power_w == pytest.approx(30.0)
    assert pc.energy_uj("cpu0") < 90_000_000  # it really wrapped


def test_absent_interface_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable, match=r"^rapl: no powercap interface at ") as e:
        RaplMeter(tmp_path / "nothing").open()
    assert "\n" not in str(e.value)


def test_tree_without_rapl_domains(tmp_path: Path) -> None:
    (tmp_path / "powercap" / "dtpm").mkdir(parents=True)
    with pytest.raises(MeterUnavailable, match="no package or dram domain"):
        RaplMeter(tmp_path / "powercap").open()


def test_permission_problem_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pc = FakePowercap(tmp_path)
    pc.make_root_only()
    import os

    if os.geteuid() == 0:
        # root reads 0400 files anyway: make the read fail the way it does for a user.
        from meters.rapl import zones

        def denied(self: zones.Zone) -> int:
            raise PermissionError(13, "Permission denied", str(self.energy_file))

        monkeypatch.setattr(zones.Zone, "read_uj", denied)
    with pytest.raises(MeterUnavailable, match="readable only by root") as e:
        RaplMeter(pc.root).open()
    assert "\n" not in str(e.value)


def test_domain_that_vanishes_is_reported_and_others_go_on(tmp_path: Path) -> None:
    pc = FakePowercap(tmp_path)
    meter = RaplMeter(pc.root)
    meter.open()
    meter.sample(0.0)
    (pc.zones["dram0"] / "energy_uj").unlink()
    assert [s.device for s in meter.sample(0.1)] == ["cpu0"]
    errors = meter.drain_errors()
    assert len(errors) == 1 and errors[0].startswith("dram0: cannot read")
    assert [s.device for s in meter.sample(0.2)] == ["cpu0"] and meter.drain_errors() == []
