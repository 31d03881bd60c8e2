"""vLLM's processes leave semaphores to multiprocessing's resource tracker, which warns
of them at its exit, after wattflow's last line. The vllm engine silences that warning
before vLLM starts the tracker: shown here with a child process that leaks a semaphore
the way vLLM's workers do (no vLLM needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_LEAK = """
import multiprocessing as mp, os, sys
sys.path.insert(0, {root!r})

def child():
    held = mp.get_context("spawn").Semaphore()  # registered with the tracker...
    os._exit(0 if held else 1)  # ...and never released: no finalizer runs

if __name__ == "__main__":
    if {quiet!r}:
        from engines.vllm.engine import quiet_resource_tracker
        quiet_resource_tracker()
    p = mp.get_context("spawn").Process(target=child)
    p.start()
    p.join()
    print("wattflow's last line", flush=True)
"""


def _run(tmp_path: Path, quiet: bool) -> subprocess.CompletedProcess[str]:
    script = tmp_path / f"leak_{quiet}.py"
    script.write_text(_LEAK.format(root=str(ROOT), quiet=quiet))
    # The tracker inherits stderr: the pipe closes (and run returns) only once it exited.
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_resource_trackers_leak_warning_is_silenced(tmp_path: Path) -> None:
    loud = _run(tmp_path, quiet=False)
    assert loud.returncode == 0, loud.stderr
    assert "leaked semaphore" in loud.stderr  # the warning this is about
    quiet = _run(tmp_path, quiet=True)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "wattflow's last line"
    assert "leaked" not in quiet.stderr and quiet.stderr.strip() == ""


def test_silencing_twice_adds_one_filter() -> None:
    from engines.vllm.engine import TRACKER_FILTER, quiet_resource_tracker

    before = list(sys.warnoptions)
    try:
        quiet_resource_tracker()
        quiet_resource_tracker()
        assert sys.warnoptions.count(TRACKER_FILTER) == 1
    finally:
        sys.warnoptions[:] = before
