"""Signal to exit on a real GPU: the transformers engine under load, measured by NVML.

Run on the lent GPU machine from the repository root (the device tool), e.g.

    python bench/gpu_signals.py --out "$OUT" --repeat 2

For SIGINT and SIGTERM, `--repeat` times each: start `wattflow run --headless --engine
transformers --model llama-1b --workload interactive --meter auto` in a subprocess, wait
until requests are streaming (first tokens in the session) plus `--settle` seconds, send
the signal, and time how long the process takes to exit. Then read the session back:
its `end` record, whether the stop watchdog wrote it (`closed_by` in the summary),
every submitted request ending exactly once. Also once: a signal while the engine is
still loading the model (before any session exists). The card's power limit is read
before and after (NVML, read-only) and must be unchanged. Prints a markdown table and
writes OUT/gpu_signals.json.

It never changes the card's power limit or clocks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _limit_w() -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        return float(pynvml.nvmlDeviceGetEnforcedPowerLimit(h)) / 1000.0
    except Exception:
        return None


def _cmd(session: Path, rate: float, batch: int) -> list[str]:
    return [sys.executable, "-m", "app", "run", "--headless", "--engine", "transformers",
            "--model", "llama-1b", "--workload", "interactive", "--rate", str(rate),
            "--batch-limit", str(batch), "--duration", "3600", "--meter", "auto",
            "--session", str(session)]


def _streaming(session: Path) -> bool:
    if not session.exists():
        return False
    with session.open("rb") as f:
        return any(b'"phase":"first_token"' in line for line in f)


def _check(session: Path) -> dict[str, Any]:
    if not session.exists():
        return {"session": False}
    lines = [json.loads(x) for x in session.read_bytes().splitlines() if x.strip()]
    end = lines[-1] if lines and lines[-1].get("kind") == "end" else None
    ends: Counter[str] = Counter()
    submitted = set()
    for e in lines:
        if e.get("kind") == "request":
            if e["phase"] == "submitted":
                submitted.add(e["request_id"])
            elif e["phase"] in ("finished", "failed"):
                ends[e["request_id"]] += 1
    return {
        "session": True, "end": end is not None,
        "reason": end["reason"] if end else None,
        "watchdog": bool(end and "closed_by" in end["summary"]),
        "submitted": len(submitted),
        "each_ends_once": set(ends) == submitted and set(ends.values()) <= {1},
    }


def one(sig: int, out: Path, tag: str, *, before_stream: bool, settle_s: float, rate: float,
        batch: int) -> dict[str, Any]:
    session = out / f"{tag}.jsonl"
    session.unlink(missing_ok=True)
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(_cmd(session, rate, batch), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t_start = time.monotonic()
    if before_stream:
        time.sleep(3.0)  # the model is loading: no session yet
    else:
        while not _streaming(session):
            if proc.poll() is not None:
                raise SystemExit(f"wattflow exited early: {proc.communicate()[1][-2000:]}")
            if time.monotonic() - t_start > 300:
                proc.kill()
                raise SystemExit("no first token within 300 s")
            time.sleep(0.2)
        time.sleep(settle_s)
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    latency = time.monotonic() - t0
    res = {"tag": tag, "signal": signal.Signals(sig).name, "before_stream": before_stream,
           "latency_s": round(latency, 3), "exit": proc.returncode,
           "stderr_last": err.strip().splitlines()[-1] if err.strip() else "",
           "traceback": "Traceback" in err, **_check(session)}
    print(json.dumps(res), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--settle", type=float, default=15.0,
                    help="seconds of streaming before the signal")
    ap.add_argument("--rate", type=float, default=2.0)
    ap.add_argument("--batch-limit", type=int, default=64)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    limit_before = _limit_w()
    results = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        for i in range(args.repeat):
            results.append(one(sig, args.out, f"{signal.Signals(sig).name}-{i}",
                               before_stream=False, settle_s=args.settle, rate=args.rate,
                               batch=args.batch_limit))
    results.append(one(signal.SIGTERM, args.out, "SIGTERM-loading", before_stream=True,
                       settle_s=0, rate=args.rate, batch=args.batch_limit))
    limit_after = _limit_w()
    print(f"\npower limit before {limit_before} W, after {limit_after} W")
    print("\n| signal | when | latency s (each) | median | exit | end record | by watchdog"
          " | each request ends once | traceback |")
    print("|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["signal"], r["before_stream"]), []).append(r)
    for (name, before), rs in groups.items():
        lat = [r["latency_s"] for r in rs]
        print(f"| {name} | {'loading the model' if before else 'streaming'} | "
              f"{', '.join(f'{x:.2f}' for x in lat)} | {statistics.median(lat):.2f} | "
              f"{sorted({r['exit'] for r in rs})} | "
              f"{'no session (none yet)' if not rs[0]['session'] else all(r['end'] for r in rs)} | "
              f"{[r.get('watchdog') for r in rs]} | {[r.get('each_ends_once') for r in rs]} | "
              f"{any(r['traceback'] for r in rs)} |")
    (args.out / "gpu_signals.json").write_text(json.dumps(
        {"results": results, "limit_before_w": limit_before, "limit_after_w": limit_after},
        indent=1))


if __name__ == "__main__":
    main()
