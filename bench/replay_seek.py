"""Replay seek latency on a one-hour composite session.

Records (once; kept under bench/out/) the session a user gets from

    wattflow run --headless --fast --duration 3600 --session bench/out/replay-hour.jsonl
        --at 600:power_cap=400 --at 1200:batch_limit=32 --at 2400:power_cap=500

then builds the replay seek index (app/core/replay_index.py: the file read once,
checkpoints of the live statistics every 60 s of session time) and times seeks: the
statistics rebuilt as of a time and their snapshot taken (what the dashboard does on
`g 5:30`, an arrow key or a click on the timeline), at random times and at the worst
case (just before a checkpoint: the most events fed after it); and the whole seek of
the dashboard (the statistics, the panels' feed rebuilt, a frame). Also the index's
build time and the resident memory it adds.

    python bench/replay_seek.py [--seeks 50] [--checkpoint-s 60] [--no-results]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.bus import EventBus  # noqa: E402
from app.core.replay_index import ReplayIndex  # noqa: E402
from app.core.stats import LiveStats  # noqa: E402
from app.ui.feed import Feed  # noqa: E402
from app.ui.replay_seek import rebuild_feed  # noqa: E402

SESSION = ROOT / "bench" / "out" / "replay-hour.jsonl"
GOAL_S = 0.5


def record(path: Path) -> float:
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "app", "run", "--headless", "--fast", "--duration", "3600",
         "--at", "600:power_cap=400", "--at", "1200:batch_limit=32",
         "--at", "2400:power_cap=500", "--session", str(path)],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeks", type=int, default=50)
    ap.add_argument("--checkpoint-s", type=float, default=60.0)
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args()
    if not SESSION.exists():
        print(f"recording {SESSION} ...", flush=True)
        print(f"  recorded in {record(SESSION):.1f} s", flush=True)
    size_mib = SESSION.stat().st_size / 2**20
    base = rss_mib()
    t0 = time.perf_counter()
    index = ReplayIndex.build(SESSION, checkpoint_s=args.checkpoint_s)
    build_s = time.perf_counter() - t0
    grown = rss_mib() - base
    dur = index.duration_s
    rng = random.Random(1)
    times = [rng.uniform(0, dur) for _ in range(args.seeks)]
    # worst case: just before a checkpoint time, the most events after the one before
    worst_t = [k * args.checkpoint_s - 1e-3 for k in range(1, int(dur // args.checkpoint_s))]
    worst_t = rng.sample(worst_t, min(len(worst_t), 10))

    def timed(ts: list[float]) -> list[float]:
        out = []
        for t in ts:
            s = time.perf_counter()
            index.stats_at(t).snapshot()
            out.append(time.perf_counter() - s)
        return out

    random_s = timed(times)
    worst_s = timed(worst_t)
    feed = Feed(EventBus(), LiveStats())
    dashboard_s = []
    for t in times[:20]:
        s = time.perf_counter()
        stats = index.stats_at(t)
        rebuild_feed(feed, index, index.count_at(t), t, stats)
        feed.frame(t)
        dashboard_s.append(time.perf_counter() - s)
    load = os.getloadavg()[0]
    rows = [
        ("session", f"{SESSION.name}: {dur:,.0f} s, {len(index.events):,} events,"
                    f" {size_mib:.0f} MiB"),
        ("index build (read + checkpoints)", f"{build_s:.2f} s, {index.checkpoints}"
                                             f" checkpoints, +{grown:,.0f} MiB peak RSS"),
        (f"seek, {len(random_s)} random times: median / max",
         f"{statistics.median(random_s) * 1000:.0f} ms / {max(random_s) * 1000:.0f} ms"),
        (f"seek, {len(worst_s)} just before a checkpoint: median / max",
         f"{statistics.median(worst_s) * 1000:.0f} ms / {max(worst_s) * 1000:.0f} ms"),
        (f"dashboard seek (statistics, feed rebuilt, frame), {len(dashboard_s)} random"
         " times: median / max",
         f"{statistics.median(dashboard_s) * 1000:.0f} ms / {max(dashboard_s) * 1000:.0f} ms"),
        ("goal", f"under {GOAL_S} s per seek: "
                 f"{'met' if max(random_s + worst_s + dashboard_s) < GOAL_S else 'MISSED'}"),
        ("machine", f"{platform.node() or '?'}, {os.cpu_count()} CPUs, Python"
                    f" {platform.python_version()}, load average {load:.1f}"),
    ]
    for k, v in rows:
        print(f"{k}: {v}")
    if not args.no_results:
        out = ROOT / "bench" / "out" / "replay_seek.md"
        out.write_text("| measure | value |\n|---|---|\n"
                       + "".join(f"| {k} | {v} |\n" for k, v in rows))
        print(f"table written to {out}")


if __name__ == "__main__":
    main()
