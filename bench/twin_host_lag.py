"""Idle readings of a busy simulated GPU on the wall clock (issue 10): runs the twin in
real time on this (loaded) host and counts GPU samples that read idle power while a
request was decoding. Host lag must not leak into the simulated GPU.

    python bench/twin_host_lag.py --duration 30 [--repeat 3] [--load 2]

Prints, per run, samples inside busy intervals and how many read idle.
"""

from __future__ import annotations

import argparse
import bisect
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]


def idle_fraction(session: Path) -> tuple[int, int]:
    events = [orjson.loads(x) for x in session.read_bytes().splitlines() if x.strip()]
    idle_w = 75.0
    first: dict[str, float] = {}
    spans: list[tuple[float, float]] = []
    for e in events:
        if e["kind"] == "request" and e["phase"] == "first_token":
            first[e["request_id"]] = e["t_s"]
        elif e["kind"] == "request" and e["phase"] == "finished" and e["request_id"] in first:
            spans.append((first[e["request_id"]], e["t_s"]))
    spans.sort()
    starts = [s for s, _ in spans]
    busy = idle = 0
    for e in events:
        if e["kind"] != "sample" or e.get("power_w") is None:
            continue
        t = e["t_s"]
        i = bisect.bisect_right(starts, t)
        # A request's finish is stamped when the client sees it, a few ms after the GPU's
        # last step: the margin keeps that honest boundary out of the count.
        if any(s < t < f - 0.02 for s, f in spans[max(0, i - 64):i]):
            busy += 1
            idle += e["power_w"] <= idle_w + 1e-6
    return busy, idle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--load", type=int, default=0, help="busy-loop processes beside it")
    args = ap.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.load)]
    try:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as d:
                s = Path(d) / "lag.jsonl"
                subprocess.run([sys.executable, "-m", "app", "run", "--headless", "--workload",
                                "sequential", "-p", "concurrency=4", "--duration",
                                str(args.duration), "--session", str(s)], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, check=True)
                busy, idle = idle_fraction(s)
                print(f"samples while decoding {busy}, read idle {idle} "
                      f"({100.0 * idle / max(busy, 1):.1f}%); load average "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for h in hogs:
            h.kill()


if __name__ == "__main__":
    main()
