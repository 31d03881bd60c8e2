"""`--meter auto` (meters/auto.py) picks the real meters this machine can read."""

from __future__ import annotations

from pathlib import Path

import pytest

from meters.auto import available_meters
from tests.fakes.fake_powercap import FakePowercap
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml, NVMLError_LibraryNotFound, install


def test_gpu_and_rapl_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch, FakeNvml([FakeGpu(), FakeGpu()]))
    pc = FakePowercap(tmp_path)
    meters, reasons = available_meters({"gpus": [1], "powercap_root": str(pc.root)})
    assert [m.name for m in meters] == ["nvml", "rapl"] and reasons == []
    # Returned open: they sample right away.
    assert [s.device for s in meters[0].sample(0.0)] == ["gpu1"]
    assert {s.device for s in meters[1].sample(0.0)} == {"cpu0", "dram0"}
    for m in meters:
        m.close()
    assert fake.initialized == 0


def test_machine_with_neither_explains_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, FakeNvml(init_error=NVMLError_LibraryNotFound))
    meters, reasons = available_meters({"powercap_root": str(tmp_path / "none")})
    assert meters == []
    assert len(reasons) == 2
    assert reasons[0].startswith("nvml: ") and "Library Not Found" in reasons[0]
    assert reasons[1].startswith("rapl: no powercap interface")


def test_bad_gpu_choice_is_a_reason_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, FakeNvml([FakeGpu()]))
    pc = FakePowercap(tmp_path)
    meters, reasons = available_meters({"gpus": [3], "powercap_root": str(pc.root)})
    assert [m.name for m in meters] == ["rapl"]
    assert reasons == ["nvml: no GPU 3 here (1 GPU: 0-0)"]
