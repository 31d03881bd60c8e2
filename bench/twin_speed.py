"""How long one simulated hour takes end to end, through the CLI (issue 10).

    python bench/twin_speed.py [--repeats 5] [--duration 3600] [--workload composite ...]

Runs `wattflow run --headless --fast --duration 3600 --session TMP` for the composite
workload (the default) and for `--workload sequential`, each N times, one after the
other, and prints per workload the median wall time, the median CPU time of the child,
the recorded events per wall second (lines of the session file) and the load average
before and after, since the development machine is shared. Run by hand, never by CI;
the figures go to bench/RESULTS.md ("Twin speed (issue 10)").
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(workload: str, duration_s: float, seed: int | None) -> tuple[float, float, int]:
    """(wall s, child CPU s, events recorded) of one run."""
    with tempfile.TemporaryDirectory() as d:
        session = Path(d) / "run.jsonl"
        cmd = [sys.executable, "-m", "app.cli", "run", "--headless", "--fast",
               "--duration", f"{duration_s:g}", "--session", str(session)]
        if workload != "composite":
            cmd += ["--workload", workload]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       cwd=Path(__file__).resolve().parents[1])
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        with session.open("rb") as f:
            events = sum(1 for _ in f)
    return wall, cpu, events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workload", action="append",
                    help="workload to time (repeatable); default composite and sequential")
    args = ap.parse_args()
    workloads = args.workload or ["composite", "sequential"]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average before {os.getloadavg()[0]:.2f}")
    print("| workload | simulated s | wall s (median) | wall s (min-max) | CPU s (median) |"
          " events | events/s | x real time |")
    print("|---|---|---|---|---|---|---|---|")
    for w in workloads:
        runs = [one_run(w, args.duration, args.seed) for _ in range(args.repeats)]
        walls = [r[0] for r in runs]
        wall = statistics.median(walls)
        cpu = statistics.median(r[1] for r in runs)
        events = int(statistics.median(r[2] for r in runs))
        print(f"| {w} | {args.duration:g} | {wall:.2f} | {min(walls):.2f}-{max(walls):.2f} |"
              f" {cpu:.2f} | {events} | {events / wall:,.0f} | {args.duration / wall:,.0f}x |",
              flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f} (N = {args.repeats})")


if __name__ == "__main__":
    main()
