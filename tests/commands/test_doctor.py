"""`wattflow doctor` lists every meter and control, with why not."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from app.commands import doctor
from tests.fakes.fake_powercap import FakePowercap
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml, NVMLError_LibraryNotFound, install


def _doctor(capsys: pytest.CaptureFixture[str], **kw: object) -> list[str]:
    assert doctor.run(argparse.Namespace(**kw)) == 0
    return capsys.readouterr().out.splitlines()


def test_everything_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, FakeNvml([FakeGpu(), FakeGpu(has_energy_counter=False)]))
    pc = FakePowercap(tmp_path)
    monkeypatch.setattr(doctor, "_can_admin", lambda: False)
    lines = _doctor(capsys, powercap_root=str(pc.root), state=str(tmp_path / "p.json"))
    text = "\n".join(lines)
    assert any(ln.split()[:3] == ["meter", "nvml", "ok"] and "gpu0" in ln for ln in lines)
    assert "gpu1: no energy counter" in text
    assert any(
        ln.split()[:3] == ["meter", "rapl", "ok"] and "cpu0" in ln and "dram0" in ln for ln in lines
    )
    caps = [ln for ln in lines if ln.startswith("control")]
    assert len(caps) == 2 and all("200-700 W" in c and "needs root" in c for c in caps)
    assert lines[-1].startswith("state") and "no caps left behind" in lines[-1]


def test_nothing_readable_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, FakeNvml(init_error=NVMLError_LibraryNotFound))
    state = tmp_path / "p.json"
    state.write_text(
        json.dumps(
            {
                "version": 1,
                "pid": None,
                "entries": [{"meter": "nvml", "device": "gpu0", "limit_w": 700.0}],
            }
        )
    )
    lines = _doctor(capsys, powercap_root=str(tmp_path / "none"), state=str(state), gpus="0")
    by_name = {(ln.split()[0], ln.split()[1]): ln for ln in lines}
    assert "NVML Shared Library Not Found" in by_name[("meter", "nvml")]
    assert by_name[("meter", "nvml")].split()[2] == "no"
    assert "no powercap interface" in by_name[("meter", "rapl")]
    assert by_name[("control", "power")].split()[3] == "no"
    assert "wattflow restore" in by_name[("state", "power")]
    assert all("\n" not in ln and "Traceback" not in ln for ln in lines)


def test_root_can_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, FakeNvml([FakeGpu(limit_w=450.0)]))
    monkeypatch.setattr(doctor, "_can_admin", lambda: True)
    lines = _doctor(capsys, powercap_root=str(tmp_path), state=str(tmp_path / "p.json"))
    (cap,) = [ln for ln in lines if ln.startswith("control")]
    assert cap.split()[3] == "ok" and "now 450 W; with --allow-power-cap" in cap


def test_options_of_every_engine_and_meter_are_listed_from_their_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, FakeNvml([FakeGpu()]))
    lines = _doctor(capsys, powercap_root=str(tmp_path), state=str(tmp_path / "p.json"))
    options = [ln for ln in lines if ln.startswith("option")]
    assert "option    engine sim: max_num_seqs (int 1-65536; default 1024): requests in one " \
           "batch (vLLM's max_num_seqs)" in options
    assert any(ln.startswith("option    engine vllm: model (str; required): ") for ln in options)
    assert any(ln.startswith("option    engine openai: api (str completions|chat; default "
                             "'completions'): ") for ln in options)
    assert any(ln.startswith("option    meter nvml: gpus (list[int]; optional): ")
               for ln in options)
    assert "option    meter sim: none" in options
    for engine in ("sim", "openai", "parrot", "transformers", "vllm"):
        assert any(f" engine {engine}: seed " in ln for ln in options)
    assert lines[-1].startswith("state")
