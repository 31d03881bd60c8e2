"""A real `wattflow serve` process on loopback, for tests: started on a free port, its
URL read from its first line, stopped (SIGTERM) or killed (SIGKILL) on demand."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class ServeProcess:
    def __init__(self, *args: str, start_timeout_s: float = 20.0) -> None:
        self.args = ["--port", "0", *args]
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> ServeProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", *self.args], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                m = re.search(r"(http://127\.0\.0\.1:\d+)/v1", line)
                assert m, (line, self.proc.communicate(timeout=5))
                self.url = m.group(1)
                return self
            assert self.proc.poll() is None, self.proc.communicate(timeout=5)
        self.kill()
        raise AssertionError("wattflow serve did not start in time")

    def terminate(self, timeout_s: float = 10.0) -> tuple[int, str, str]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=timeout_s)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        if self.proc is not None:
            for f in (self.proc.stdout, self.proc.stderr):
                if f is not None:
                    f.close()
