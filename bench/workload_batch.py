"""Throughput and energy per token of each workload at batch limits 1, 4, 16 and 64,
on the simulated H100 twin in virtual time (the study's batch-size finding).

    python bench/workload_batch.py [--duration 600] [--out bench/RESULTS-workloads.md]

Each point is one headless run of `--duration` simulated seconds, seed 0. Loads:
interactive is offered more conversations than any batch limit can serve (Poisson,
`INTERACTIVE_RATE`/s), so its throughput is the engine's; the chain summarizes one
document at a time (its calls are strictly sequential); agentic runs one project of 8
agents at a time; composite runs its default mix. Tokens/s counts output tokens over
the run; J/token is the GPU energy of the run over its output tokens.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.clock import run_async  # noqa: E402
from app.core.runner import RunConfig, Runner  # noqa: E402

BATCH_LIMITS = (1, 4, 16, 64)
INTERACTIVE_RATE = 4.0


@dataclass(frozen=True, slots=True)
class Case:
    label: str
    workload: str
    params: dict[str, Any]
    rate: float | None = None


CASES = (
    Case("interactive", "interactive", {}, rate=INTERACTIVE_RATE),
    Case("sequential (chain)", "sequential",
         {"variant": "chain", "chunks": 8, "chunk_tokens": 1024, "output_tokens": 50}),
    Case("sequential (map-reduce)", "sequential",
         {"variant": "mapreduce", "chunks": 15, "chunk_tokens": 1000, "output_tokens": 50}),
    Case("agentic", "agentic", {"agents": 8, "rounds": 10}),
    Case("composite", "composite", {}),
)


@dataclass(slots=True)
class Point:
    tokens_per_s: float
    j_per_token: float
    requests: int
    wall_s: float


def run_point(case: Case, batch_limit: int, duration_s: float) -> Point:
    cfg = RunConfig(workload=case.workload, workload_params=dict(case.params), engine="sim",
                    meters=["sim"], batch_limit=batch_limit, rate=case.rate,
                    duration_s=duration_s, seed=0, fast=True)
    t0 = time.perf_counter()
    outcome = run_async(Runner(cfg).run(), virtual=True)
    s = outcome.summary
    if outcome.reason != "completed":
        raise SystemExit(f"{case.label} at batch {batch_limit}: {outcome.message}")
    tokens = s["output_tokens"]
    gpu_j = (s.get("energy_j") or {}).get("gpu", 0.0)
    return Point(tokens_per_s=tokens / s["duration_s"], j_per_token=gpu_j / max(1, tokens),
                 requests=s["requests_finished"], wall_s=time.perf_counter() - t0)


def table(results: dict[str, dict[int, Point]]) -> list[str]:
    head = "| workload | " + " | ".join(f"tok/s @{b}" for b in BATCH_LIMITS) + \
        " | " + " | ".join(f"J/tok @{b}" for b in BATCH_LIMITS) + " | tok/s 64 vs 1 |"
    lines = [head, "|" + "---|" * (2 * len(BATCH_LIMITS) + 2)]
    for label, pts in results.items():
        tps = [pts[b].tokens_per_s for b in BATCH_LIMITS]
        jpt = [pts[b].j_per_token for b in BATCH_LIMITS]
        lines.append(f"| {label} | " + " | ".join(f"{x:.0f}" for x in tps) + " | "
                     + " | ".join(f"{x:.3f}" for x in jpt) + f" | {tps[-1] / tps[0]:.2f}x |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="simulated seconds a point")
    ap.add_argument("--out", default=None, help="write the markdown table here too")
    args = ap.parse_args()
    results: dict[str, dict[int, Point]] = {}
    for case in CASES:
        results[case.label] = {}
        for b in BATCH_LIMITS:
            pt = run_point(case, b, args.duration)
            results[case.label][b] = pt
            print(f"{case.label:26s} batch {b:3d}: {pt.tokens_per_s:8.1f} tok/s "
                  f"{pt.j_per_token:.4f} J/tok  {pt.requests} requests  "
                  f"({pt.wall_s:.1f} s wall)", flush=True)
    lines = table(results)
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
