"""Live statistics at scale: cost per event and resident memory at 10^3, 10^5 and 10^6
requests, on synthetic events in virtual time.

A steady busy server: RATE requests/s over three stages, each streaming for ~10 s
(so ~500 in flight), one GPU and one CPU sampled at 10 Hz, the client's token counter
read once a second, a knob change every 10 minutes. Each request is three events
(submitted, first token, finished with latency, TTFT, TPOT and energy). Events are
made in batches outside the timed part and fed to one `LiveStats`; each size runs in a
fresh process so that its resident memory is its own.

Reported per size: events fed, the mean cost of one `on_event` over the whole run and
over its first and last tenth (flat cost: they agree), the cost of one `snapshot()` at
the end (what the dashboard pays per repaint), the process's resident memory after
the run and its growth over the baseline (the interpreter and one event batch), the
bytes the `LiveStats` object graph holds (sys.getsizeof over it), and the largest
sketch in bins.

    python bench/stats_scale.py [--sizes 1000,100000,1000000] [--exact] [--no-results]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.events import (  # noqa: E402
    EngineStateEvent,
    Event,
    KnobEvent,
    RequestEvent,
    Sample,
)
from app.core.quantiles import Sketch  # noqa: E402
from app.core.stats import LiveStats  # noqa: E402

RATE = 50.0  # requests per second
GEN_S = 10.0  # seconds each request streams
TOKENS = 256  # output tokens per request
SAMPLE_HZ = 10
KNOB_EVERY_S = 600.0
BATCH = 20_000  # events made per batch, outside the timed part
STAGES = ("map", "reduce", "query")


def synthetic(requests: int, seed: int = 1) -> Iterator[Event]:
    rnd = random.Random(seed)
    ends: deque[tuple[float, RequestEvent]] = deque()
    tick = 0
    tokens = 0
    cap = 700.0
    dt = 1.0 / RATE
    for i in range(requests + int(GEN_S * RATE) + 2):
        t = i * dt
        while ends and ends[0][0] <= t:
            yield ends.popleft()[1]
        while tick / SAMPLE_HZ <= t:
            ts = tick / SAMPLE_HZ
            yield Sample(t_s=ts, meter="sim", device="gpu0", component="gpu",
                         energy_mj=450_000.0 * ts, power_w=450.0)
            yield Sample(t_s=ts, meter="rapl", device="cpu0", component="cpu",
                         energy_mj=80_000.0 * ts, power_w=80.0)
            if tick % SAMPLE_HZ == 0:
                tokens = round(min(t, requests * dt) * RATE * TOKENS)
                yield EngineStateEvent(t_s=ts, source="client", output_tokens_total=tokens)
                if ts and ts % KNOB_EVERY_S == 0:
                    yield KnobEvent(t_s=ts, knob="power_cap", value=cap - 25, previous=cap,
                                    source="schedule")
                    cap -= 25 if cap > 300 else -400
            tick += 1
        if i >= requests:
            continue
        rid = f"r{i}"
        stage = STAGES[i % 3]
        yield RequestEvent(t_s=t, request_id=rid, phase="submitted", workflow_id=rid,
                           stage=stage, prompt_tokens=512, max_tokens=TOKENS)
        ttft = rnd.lognormvariate(-1.5, 0.6)
        yield RequestEvent(t_s=t + ttft, request_id=rid, phase="first_token", workflow_id=rid,
                           stage=stage, ttft_s=ttft)
        latency = GEN_S * rnd.uniform(0.7, 1.3)
        ends.append((t + latency, RequestEvent(
            t_s=t + latency, request_id=rid, phase="finished", workflow_id=rid, stage=stage,
            prompt_tokens=512, output_tokens=TOKENS, latency_s=latency, ttft_s=ttft,
            tpot_s=(latency - ttft) / (TOKENS - 1), energy_j={"gpu": 9.0, "cpu": 1.6},
            reason="length")))


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def sketches(obj: Any, seen: set[int]) -> Iterator[Sketch]:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Sketch):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from sketches(v, seen)
    elif isinstance(obj, list | tuple | deque):
        for x in obj:
            yield from sketches(x, seen)
    else:
        for name in (*getattr(type(obj), "__slots__", ()), *getattr(obj, "__dict__", {})):
            if hasattr(obj, name):
                yield from sketches(getattr(obj, name), seen)


def deep_size(obj: Any, seen: set[int]) -> int:
    """Bytes held by an object graph (containers, slots, instance dicts)."""
    if id(obj) in seen or isinstance(obj, type):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset | deque):
        size += sum(deep_size(x, seen) for x in obj)
    else:
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                size += deep_size(getattr(obj, name), seen)
        if hasattr(obj, "__dict__"):
            size += deep_size(vars(obj), seen)
    return size


def one(requests: int, exact: bool) -> dict[str, Any]:
    """Runs in a child process: one size."""
    gen = synthetic(requests)
    batch = list(itertools.islice(gen, BATCH))  # one batch's memory is in the baseline
    gc.collect()
    base = rss_mib()
    stats = LiveStats(exact=exact)
    times: list[tuple[int, float]] = []  # (events, seconds) per batch
    while batch:
        t0 = time.perf_counter()
        for ev in batch:
            stats.on_event(ev)
        times.append((len(batch), time.perf_counter() - t0))
        del batch
        batch = list(itertools.islice(gen, BATCH))
    n_events = sum(n for n, _ in times)
    total_s = sum(s for _, s in times)
    tenth = max(1, len(times) // 10)

    def per_event_us(part: list[tuple[int, float]]) -> float:
        return sum(s for _, s in part) / sum(n for n, _ in part) * 1e6

    t0 = time.perf_counter()
    reps = 20
    for _ in range(reps):
        snap = stats.snapshot()
    snap_ms = (time.perf_counter() - t0) / reps * 1e3
    gc.collect()
    rss = rss_mib()
    bins = max((s.bins for s in sketches(stats, set())), default=0)
    held_mib = deep_size(stats, set()) / 2**20
    return {
        "requests": requests, "finished": snap.requests_finished, "events": n_events,
        "run_s": snap.duration_s, "segments": len(snap.knob_segments),
        "us_per_event": total_s / n_events * 1e6,
        "us_first_tenth": per_event_us(times[:tenth]),
        "us_last_tenth": per_event_us(times[-tenth:]),
        "snapshot_ms": snap_ms, "rss_mib": rss, "rss_growth_mib": rss - base,
        "max_bins": bins, "stats_mib": held_mib, "p90_latency_s": snap.latency_p90_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000,1000000")
    ap.add_argument("--exact", action="store_true", help="exact quantiles (report --exact)")
    ap.add_argument("--no-results", action="store_true", help="do not write RESULTS-stats.md")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(one(args.child, args.exact)))
        return
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n)] + ["--exact"] * args.exact
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out)
        rows.append(row)
        print(f"{n:>9,} requests  {row['events']:>10,} events  {row['run_s']:>9,.0f} s run"
              f"  {row['us_per_event']:5.2f} us/event (first tenth {row['us_first_tenth']:.2f},"
              f" last {row['us_last_tenth']:.2f})  snapshot {row['snapshot_ms']:.1f} ms"
              f"  RSS {row['rss_mib']:.1f} MiB (+{row['rss_growth_mib']:.1f})"
              f"  stats hold {row['stats_mib']:.2f} MiB"
              f"  max bins {row['max_bins']}", flush=True)
    if args.no_results:
        return
    load = os.getloadavg()
    lines = [
        "# Live statistics at scale (bench/stats_scale.py)", "",
        f"`python bench/stats_scale.py --sizes {args.sizes}{' --exact' if args.exact else ''}`"
        f" on {platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()}),"
        f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; quantiles "
        f"{'exact' if args.exact else 'DDSketch 1%'}.", "",
        f"Synthetic events in virtual time: {RATE:g} requests/s over 3 stages, each streaming"
        f" ~{GEN_S:g} s, 2 devices sampled at {SAMPLE_HZ} Hz, token counter at 1 Hz, a knob"
        f" change every {KNOB_EVERY_S:g} s.", "",
        "| requests | events | run (virtual) | us/event | first tenth | last tenth |"
        " snapshot ms | RSS MiB | RSS growth MiB | stats hold MiB | largest sketch (bins) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['requests']:,} | {r['events']:,} | {r['run_s']:,.0f} s | "
            f"{r['us_per_event']:.2f} | {r['us_first_tenth']:.2f} | {r['us_last_tenth']:.2f} |"
            f" {r['snapshot_ms']:.1f} | {r['rss_mib']:.1f} | {r['rss_growth_mib']:.1f} |"
            f" {r['stats_mib']:.2f} | {r['max_bins']} |")
    out = ROOT / "bench" / "RESULTS-stats.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
