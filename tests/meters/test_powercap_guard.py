"""PowerCapGuard: the limit in force is on disk before the first change, and comes back
on every exit path. In-process tests first, then real child processes that end
normally, get SIGINT / SIGTERM, raise, or are SIGKILLed (then `wattflow restore`)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.commands import restore as restore_cmd
from meters.base import PowerCapError
from meters.nvml.meter import NvmlMeter
from meters.powercap.guard import (
    PowerCapGuard,
    StateFileError,
    default_state_path,
    read_state,
)
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml, install

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("_powercap_child.py")


def _meter(monkeypatch: pytest.MonkeyPatch, fake: FakeNvml) -> NvmlMeter:
    install(monkeypatch, fake)
    m = NvmlMeter()
    m.open()
    return m


def test_state_is_on_disk_before_the_limit_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvml([FakeGpu(limit_w=650.0)], root=True)
    meter = _meter(monkeypatch, fake)
    state = tmp_path / "st" / "powercap.json"
    seen: list[dict] = []
    real_set = fake.nvmlDeviceSetPowerManagementLimit

    def spy(h: object, mw: int) -> None:
        seen.append(json.loads(state.read_text()))  # must exist already
        real_set(h, mw)  # type: ignore[arg-type]

    monkeypatch.setattr(fake, "nvmlDeviceSetPowerManagementLimit", spy)
    guard = PowerCapGuard(state)
    assert guard.apply(meter, "gpu0", 300.0) == 650.0
    assert seen[0]["entries"][0]["limit_w"] == 650.0
    assert seen[0]["entries"][0]["uuid"] == "GPU-fake-0000"
    assert seen[0]["pid"] == os.getpid()
    assert fake.gpus[0].limit_w == 300.0
    # A second change keeps the original, and reports the cap it replaced.
    assert guard.apply(meter, "gpu0", 250.0) == 300.0
    assert guard.original_limit_w("nvml", "gpu0") == 650.0
    assert guard.original_limit_w("nvml", "gpu1") is None
    assert read_state(state)["entries"][0]["limit_w"] == 650.0  # type: ignore[index]
    results = guard.restore()
    assert [r.ok for r in results] == [True] and results[0].limit_w == 650.0
    assert "restored to 650 W" in results[0].line()
    assert fake.gpus[0].limit_w == 650.0 and not state.exists()
    assert guard.restore() == []  # idempotent


def test_failed_change_leaves_no_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvml([FakeGpu()], root=False)
    meter = _meter(monkeypatch, fake)
    guard = PowerCapGuard(tmp_path / "powercap.json")
    with pytest.raises(PowerCapError, match="needs root"):
        guard.apply(meter, "gpu0", 300.0)
    fake.root = True
    with pytest.raises(PowerCapError, match="outside"):
        guard.apply(meter, "gpu0", 9000.0)
    assert not (tmp_path / "powercap.json").exists() and not guard.active


def test_context_manager_restores_on_exception_and_meter_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvml([FakeGpu(), FakeGpu(limit_w=600.0)], root=True)
    meter = _meter(monkeypatch, fake)
    state = tmp_path / "powercap.json"
    with pytest.raises(RuntimeError, match="boom"), PowerCapGuard(state) as guard:
        guard.apply(meter, "gpu0", 300.0)
        guard.apply(meter, "gpu1", 400.0)
        meter.close()  # restore must still work: it falls back to a fresh NVML session
        raise RuntimeError("boom")
    assert [g.limit_w for g in fake.gpus] == [700.0, 600.0]
    assert not state.exists() and all(r.ok for r in guard.results)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(
        signal.getsignal(signal.SIGTERM)
    )
    assert signal.getsignal(signal.SIGTERM) != guard._on_signal


def test_failed_restore_keeps_the_entry_for_wattflow_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvml([FakeGpu()], root=True)
    meter = _meter(monkeypatch, fake)
    state = tmp_path / "powercap.json"
    guard = PowerCapGuard(state)
    guard.apply(meter, "gpu0", 300.0)
    fake.root = False  # e.g. privileges dropped
    (r,) = guard.restore()
    assert not r.ok and "needs root" in r.line()
    assert read_state(state)["entries"][0]["limit_w"] == 700.0  # type: ignore[index]


def test_a_killed_runs_originals_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    state = tmp_path / "powercap.json"
    # A killed run capped gpu0 from 700 to 300 W: 300 is in force now, 700 is the truth.
    state.write_text(
        json.dumps(
            {
                "version": 1,
                "pid": int(dead.stdout),
                "entries": [
                    {
                        "meter": "nvml",
                        "device": "gpu0",
                        "index": 0,
                        "uuid": "GPU-fake-0000",
                        "limit_w": 700.0,
                    }
                ],
            }
        )
    )
    fake = FakeNvml([FakeGpu(limit_w=300.0)], root=True)
    meter = _meter(monkeypatch, fake)
    with PowerCapGuard(state) as guard:
        assert guard.apply(meter, "gpu0", 250.0) == 300.0
        assert read_state(state)["entries"][0]["limit_w"] == 700.0  # type: ignore[index]
    assert fake.gpus[0].limit_w == 700.0


def test_a_live_run_holding_caps_is_not_overridden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "powercap.json"
    state.write_text(
        json.dumps(
            {
                "version": 1,
                "pid": os.getppid(),
                "entries": [{"meter": "nvml", "device": "gpu0", "limit_w": 700.0}],
            }
        )
    )
    meter = _meter(monkeypatch, FakeNvml([FakeGpu()], root=True))
    with pytest.raises(PowerCapError, match=r"another wattflow run \(pid"):
        PowerCapGuard(state).apply(meter, "gpu0", 300.0)


def test_state_path_and_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTFLOW_STATE_DIR", str(tmp_path / "s"))
    assert default_state_path() == tmp_path / "s" / "powercap.json"
    monkeypatch.delenv("WATTFLOW_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "x"))
    assert default_state_path() == tmp_path / "x" / "wattflow" / "powercap.json"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(StateFileError, match="not a wattflow power-cap state file"):
        read_state(bad)
    assert read_state(tmp_path / "missing.json") is None


def test_meter_without_power_control_is_refused(tmp_path: Path) -> None:
    from meters.rapl.meter import RaplMeter

    with pytest.raises(PowerCapError, match="no power-cap control"):
        PowerCapGuard(tmp_path / "p.json").apply(RaplMeter(tmp_path), "cpu0", 100.0)


# -- real processes ---------------------------------------------------------------------


def _spawn(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], Path, Path]:
    fake_state = tmp_path / "gpus.json"
    FakeNvml([FakeGpu(), FakeGpu(limit_w=500.0)], root=True, state_path=fake_state)
    guard_state = tmp_path / "state" / "powercap.json"
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(fake_state), str(guard_state), mode],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "capped", proc.stderr.read() if proc.stderr else ""
    assert FakeNvml.read_state(fake_state)[0].limit_w == 300.0
    assert guard_state.exists()
    return proc, fake_state, guard_state


@pytest.mark.parametrize(
    ("mode", "sig", "rc"),
    [
        ("normal", None, 0),
        ("exception", None, 1),
        ("wait", signal.SIGINT, None),
        ("wait", signal.SIGTERM, 128 + signal.SIGTERM),
    ],
    ids=["normal-end", "engine-exception", "sigint", "sigterm"],
)
def test_original_limit_is_back_after_the_process_ends(
    tmp_path: Path, mode: str, sig: int | None, rc: int | None
) -> None:
    proc, fake_state, guard_state = _spawn(tmp_path, mode)
    if sig is not None:
        proc.send_signal(sig)
    _, err = proc.communicate("go\n", timeout=30)
    if rc is not None:
        assert proc.returncode == rc, err
    else:  # Ctrl-C: KeyboardInterrupt, exit 1 or -SIGINT depending on how it unwinds
        assert proc.returncode != 0
    gpus = FakeNvml.read_state(fake_state)
    assert [g.limit_w for g in gpus] == [700.0, 500.0], err
    assert not guard_state.exists(), err
    if mode == "exception":
        assert "engine died" in err


def test_after_sigkill_wattflow_restore_puts_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    proc, fake_state, guard_state = _spawn(tmp_path, "wait")
    proc.kill()
    proc.communicate("", timeout=30)
    assert FakeNvml.read_state(fake_state)[0].limit_w == 300.0  # left capped
    assert guard_state.exists()
    install(monkeypatch, FakeNvml(state_path=fake_state))
    assert restore_cmd.run(argparse.Namespace(state=str(guard_state))) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["restore: gpu0 (GPU-fake-0000): power limit restored to 700 W"]
    assert [g.limit_w for g in FakeNvml.read_state(fake_state)] == [700.0, 500.0]
    assert not guard_state.exists()
    # Running it again: nothing to do.
    assert restore_cmd.run(argparse.Namespace(state=str(guard_state))) == 0
    assert "nothing to restore" in capsys.readouterr().out
