"""One wattflow process driving a fleet: requests/s and client CPU per request.

N `wattflow serve` processes (the simulated H100 twin, `-E max_num_seqs` = the load per
endpoint, every token its own SSE event as vLLM streams by default) stand for N GPU
servers; one wattflow client keeps `--per-endpoint` requests in flight on each of them
(N x per-endpoint in all) through the openai engine's `least_outstanding` policy, the
full Runner (admission, stats, event bus, a session file), one-call workflows in a
closed loop. Optionally the dcgm meter scrapes every server's /metrics each second.

CPU = this (client) process's user+system time over the measured requests, after a
warm-up; the servers run in their own processes and are not counted. The servers' own
pace (the twin's step times: ~12 ms per token at 64 in flight on an H100) bounds the
rate, so the figure to compare across clients is CPU per request.

    python bench/fleet_client.py --endpoints 16 --per-endpoint 64 --requests 8192
    python bench/fleet_client.py --endpoints 2 --per-endpoint 16 --requests 256   # smoke

Writes a markdown table to stdout (bench/RESULTS-fleet.md has the numbers measured).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT_WORDS = 48  # ~64 tokens as the twin counts words


def start_servers(n: int, per_endpoint: int, cpus: list[int] | None) -> list[tuple[Any, str]]:
    out = []
    for i in range(n):
        cmd = [sys.executable, "-m", "app", "serve", "--port", "0", "--node", f"node-{i}",
               "-E", f"max_num_seqs={per_endpoint}"]
        if cpus:
            cmd = ["taskset", "-c", str(cpus[i % len(cpus)]), *cmd]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+)/v1", line)
        if not m:
            raise SystemExit(f"server {i} did not start: {line!r}")
        out.append((proc, m.group(1)))
    return out


def run_client(urls: list[str], per_endpoint: int, n: int, warmup: int, output_tokens: int,
               meter: str) -> dict[str, Any]:
    from app.core.clock import run_async
    from app.core.runner import RunConfig, Runner
    from workloads.base import Arrival, Call, StageInputs, StageSpec, WorkflowSpec

    prompt = " ".join(f"w{i}" for i in range(PROMPT_WORDS))
    concurrency = per_endpoint * len(urls)

    class OneCall:
        name = "bench-fleet"

        def params(self) -> dict[str, Any]:
            return {"output_tokens": output_tokens}

        def arrival(self) -> Arrival:
            return Arrival(concurrency=concurrency)

        def workflow(self, index: int, rng: random.Random) -> WorkflowSpec:
            def build(_: StageInputs) -> list[Call]:
                return [Call(prompt=prompt + f" {index}", prompt_tokens=64,
                             max_tokens=output_tokens)]

            return WorkflowSpec(workflow_id=f"b{index}", workload=self.name,
                                stages=[StageSpec(node="call", stage="call", build=build)])

    def one(count: int, path: Path | None) -> tuple[dict[str, Any], float, float]:
        cfg = RunConfig(engine="openai", engine_options={
            "url": urls, "policy": "least_outstanding", "metrics_interval_s": 1.0},
            meters=[meter], meter_options={"exporter_interval_s": 1},
            batch_limit=concurrency, workflows=count, session_path=path)
        cpu0, t0 = time.process_time(), time.perf_counter()
        out = run_async(Runner(cfg, workload=OneCall()).run(), virtual=False)
        return out.summary, time.perf_counter() - t0, time.process_time() - cpu0

    with tempfile.TemporaryDirectory() as tmp:
        one(warmup, None)
        path = Path(tmp) / "fleet.jsonl"
        summary, wall, cpu = one(n, path)
        size = path.stat().st_size
    done = summary.get("requests_finished", 0)
    return {"requests": done, "failed": summary.get("requests_failed", 0),
            "tokens": summary.get("output_tokens", 0), "wall_s": wall, "cpu_s": cpu,
            "req_per_s": done / wall if wall else 0.0,
            "cpu_ms_per_req": 1000 * cpu / done if done else float("nan"),
            "session_mb": size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoints", type=int, default=16)
    ap.add_argument("--per-endpoint", type=int, default=64)
    ap.add_argument("--requests", type=int, default=8192)
    ap.add_argument("--warmup", type=int, default=0, help="default: one request per slot")
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument("--meters", default="none,dcgm", help="client runs, one per meter")
    ap.add_argument("--pin", action="store_true",
                    help="client on CPU 0, servers on the other CPUs (taskset)")
    args = ap.parse_args()
    cpus = list(range(1, os.cpu_count() or 2)) if args.pin else None
    if args.pin:
        os.sched_setaffinity(0, {0})
    servers = start_servers(args.endpoints, args.per_endpoint, cpus)
    urls = [u for _, u in servers]
    rows = []
    try:
        for meter in args.meters.split(","):
            r = run_client(urls, args.per_endpoint, args.requests,
                           args.warmup or args.endpoints * args.per_endpoint,
                           args.output_tokens, meter)
            rows.append((meter, r))
    finally:
        for proc, _ in servers:
            proc.terminate()
        for proc, _ in servers:
            proc.wait(10)
    print(f"{args.endpoints} endpoints x {args.per_endpoint} in flight "
          f"({args.endpoints * args.per_endpoint}), {args.requests} requests of "
          f"{args.output_tokens} tokens, {os.cpu_count()} CPUs"
          f"{', client pinned to CPU 0' if args.pin else ''}\n")
    print("| meter | requests/s | output tok/s | client CPU ms/request | client CPU % | failed |"
          " session MB |")
    print("|---|---|---|---|---|---|---|")
    for meter, r in rows:
        print(f"| {meter} | {r['req_per_s']:,.0f} | {r['tokens'] / r['wall_s']:,.0f} | "
              f"{r['cpu_ms_per_req']:.3f} | {100 * r['cpu_s'] / r['wall_s']:.0f} | "
              f"{r['failed']} | {r['session_mb']:.1f} |")


if __name__ == "__main__":
    main()
