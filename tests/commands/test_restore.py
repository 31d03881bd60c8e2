"""`wattflow restore` (the SIGKILL path end to end is in tests/meters/test_powercap_guard.py)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from app.commands import restore
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml, NVMLError_DriverNotLoaded, install


def _state(path: Path, pid: int | None = None, **entry: object) -> Path:
    e = {
        "meter": "nvml",
        "device": "gpu0",
        "index": 0,
        "uuid": "GPU-fake-0000",
        "limit_w": 700.0,
        **entry,
    }
    path.write_text(json.dumps({"version": 1, "pid": pid, "entries": [e]}))
    return path


def _run(path: Path) -> int:
    return restore.run(argparse.Namespace(state=str(path)))


def test_nothing_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path / "none.json") == 0
    assert capsys.readouterr().out.startswith("restore: nothing to restore")


def test_default_path_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WATTFLOW_STATE_DIR", str(tmp_path))
    _state(tmp_path / "powercap.json")
    fake = install(monkeypatch, FakeNvml([FakeGpu(limit_w=250.0)], root=True))
    assert restore.run(argparse.Namespace()) == 0
    assert fake.gpus[0].limit_w == 700.0 and not (tmp_path / "powercap.json").exists()


def test_gpu_found_by_uuid_even_if_indices_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _state(tmp_path / "p.json", uuid="GPU-fake-0001", index=0)
    fake = install(
        monkeypatch, FakeNvml([FakeGpu(limit_w=300.0), FakeGpu(limit_w=300.0)], root=True)
    )
    assert _run(p) == 0
    assert [g.limit_w for g in fake.gpus] == [300.0, 700.0]


def test_failure_keeps_the_file_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    p = _state(tmp_path / "p.json")
    install(monkeypatch, FakeNvml([FakeGpu(limit_w=300.0)], root=False))
    assert _run(p) == 1
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0] == "restore: gpu0 (GPU-fake-0000): could not restore 700 W: "
        "setting the power limit needs root (or CAP_SYS_ADMIN)"
    )
    assert p.exists()
    install(monkeypatch, FakeNvml(init_error=NVMLError_DriverNotLoaded))
    assert _run(p) == 1
    assert "no NVIDIA driver" in capsys.readouterr().out


def test_bad_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "p.json"
    p.write_text("[1, 2")
    assert _run(p) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "not a wattflow power-cap state file" in out


def test_a_running_holder_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    p = _state(tmp_path / "p.json", pid=os.getppid())
    fake = install(monkeypatch, FakeNvml([FakeGpu(limit_w=300.0)], root=True))
    assert _run(p) == 1
    assert "still running" in capsys.readouterr().out
    assert fake.gpus[0].limit_w == 300.0 and p.exists()
