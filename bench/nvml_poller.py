"""Accuracy and cost of the NVML poller on a real GPU, under a real load. Read only:
it never changes the card's power limit or clocks.

    python bench/nvml_poller.py --out $OUT [--seconds 60] [--gpu 0]

1. Starts a GPU load in a child process (torch matmuls in phases of different
   intensity, so power moves) and a reference reader in another child (a tight loop
   reading the instant-power field ~2000 times a second: the "every value the GPU
   reports" yardstick, in its own process so it cannot steal the poller's GIL).
2. Per-call CPU cost of every NVML read the meter uses (time.thread_time).
3. For each poll interval (the default 0.05 s, and 0.01 s = 100 Hz): runs NvmlMeter
   from a poller thread for --seconds and reports
   - energy from the energy counter vs energy integrated from instant power (target
     within 2%), and the meter's own cumulative energy vs the counter,
   - distinct power values captured vs the reference reader (target >= 99%),
   - the poller thread's CPU time / wall time (target <= 2% of one core).
4. For contrast, a naive poller that reads every channel and the energy counter on
   every sample.
Writes nvml_poller.json and nvml_poller.md to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

from meters.nvml.meter import (
    DEFAULT_POLL_INTERVAL_S,
    FI_POWER_AVERAGE,
    FI_POWER_INSTANT,
    NvmlMeter,
)

FI_TOTAL_ENERGY = 83  # NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION


# -- children ------------------------------------------------------------------------------
def load_child(gpu: int, seconds: float) -> None:
    """Matmuls in a 12 s cycle: 5 s flat out, 2 s idle, 5 s at about half duty."""
    import torch

    dev = torch.device(f"cuda:{gpu}")
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(dev)
    print("ready", flush=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        phase = (time.monotonic() - t0) % 12.0
        if phase < 5.0:
            for _ in range(8):
                a @ b
            torch.cuda.synchronize(dev)
        elif phase < 7.0:
            time.sleep(0.05)
        else:
            t = time.monotonic()
            for _ in range(4):
                a @ b
            torch.cuda.synchronize(dev)
            time.sleep(time.monotonic() - t)  # ~50% duty


def reference_child(gpu: int, seconds: float, out: str) -> None:
    import pynvml

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(gpu)
    ts: list[float] = []
    vals: list[int] = []
    stamps: list[int] = []
    print("ready", flush=True)
    t_end = time.monotonic() + seconds
    while (now := time.monotonic()) < t_end:
        (fv,) = pynvml.nvmlDeviceGetFieldValues(h, [FI_POWER_INSTANT])
        if fv.nvmlReturn == 0:
            ts.append(now)
            vals.append(int(fv.value.uiVal))
            stamps.append(int(fv.timestamp))
        time.sleep(0.0005)
    Path(out).write_text(json.dumps({"t": ts, "mw": vals, "stamp_us": stamps}))


# -- measurements --------------------------------------------------------------------------
def per_call_cost(nv: Any, h: Any) -> dict[str, Any]:
    def cost(fn: Any, n: int) -> float:
        fn()
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        return (time.thread_time() - t0) / n * 1000.0

    out: dict[str, Any] = {
        "energy_counter_ms": cost(lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h), 30),
        "field_values_instant_avg_ms": cost(
            lambda: nv.nvmlDeviceGetFieldValues(h, [FI_POWER_INSTANT, FI_POWER_AVERAGE]), 500
        ),
        "power_usage_ms": cost(lambda: nv.nvmlDeviceGetPowerUsage(h), 500),
        "utilization_ms": cost(lambda: nv.nvmlDeviceGetUtilizationRates(h), 500),
        "memory_ms": cost(lambda: nv.nvmlDeviceGetMemoryInfo(h), 500),
        "sm_clock_ms": cost(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM), 500),
        "temperature_ms": cost(
            lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU), 500
        ),
        "enforced_limit_ms": cost(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h), 500),
    }
    try:
        (fv,) = nv.nvmlDeviceGetFieldValues(h, [FI_TOTAL_ENERGY])
        out["energy_field83_return"] = int(fv.nvmlReturn)
        out["energy_field83_ms"] = cost(
            lambda: nv.nvmlDeviceGetFieldValues(h, [FI_TOTAL_ENERGY]), 30
        )
        out["energy_field83_value_mj"] = int(fv.value.ullVal)
        out["energy_counter_value_mj"] = int(nv.nvmlDeviceGetTotalEnergyConsumption(h))
    except nv.NVMLError as exc:
        out["energy_field83_error"] = str(exc)
    # Units check: the instant field (mW) against GetPowerUsage (mW).
    fi, fa = nv.nvmlDeviceGetFieldValues(h, [FI_POWER_INSTANT, FI_POWER_AVERAGE])
    out["units_check"] = {
        "instant_field": int(fi.value.uiVal),
        "instant_type": int(fi.valueType),
        "average_field": int(fa.value.uiVal),
        "average_type": int(fa.valueType),
        "power_usage_mw": int(nv.nvmlDeviceGetPowerUsage(h)),
    }
    return out


def poll(
    meter_sample: Any, interval_s: float, seconds: float, t0: float
) -> tuple[list[tuple[float, float | None, float | None]], float, float]:
    """Poll from a thread on an absolute schedule; (samples, cpu_s, wall_s)."""
    samples: list[tuple[float, float | None, float | None]] = []
    result: dict[str, float] = {}

    def run() -> None:
        cpu0, wall0 = time.thread_time(), time.monotonic()
        nxt = wall0
        end = wall0 + seconds
        while True:
            now = time.monotonic()
            if now >= end:
                break
            for s in meter_sample(now - t0):
                samples.append((now, s.power_w, s.energy_mj))
            nxt += interval_s
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.monotonic()  # fell behind: do not burst to catch up
        result["cpu"] = time.thread_time() - cpu0
        result["wall"] = time.monotonic() - wall0

    th = threading.Thread(target=run, name="poller")
    th.start()
    th.join()
    return samples, result["cpu"], result["wall"]


def coverage(ref: dict[str, list[Any]], polled: list[tuple[float, float]]) -> dict[str, Any]:
    """Share of the reference's distinct-value segments that the poller saw."""
    t, v = ref["t"], ref["mw"]
    lo, hi = polled[0][0], polled[-1][0]
    segs: list[tuple[float, float, int]] = []  # (start, end, mW)
    for i in range(len(t)):
        if not lo <= t[i] <= hi:
            continue
        if segs and segs[-1][2] == v[i]:
            segs[-1] = (segs[-1][0], t[i], v[i])
        else:
            if segs:
                segs[-1] = (segs[-1][0], t[i], segs[-1][2])
            segs.append((t[i], t[i], v[i]))
    import bisect

    times = [p[0] for p in polled]
    caught = 0
    for start, end, mw in segs:
        # The value was there from (about) `start` until the next segment's start.
        a = bisect.bisect_left(times, start - 0.002)
        b = bisect.bisect_right(times, end + 0.002)
        if any(round(polled[k][1] * 1000) == mw for k in range(a, b)):
            caught += 1
    durations = sorted(e - s for s, e, _ in segs)
    n = len(segs)
    stamps = [s for s, tt in zip(ref["stamp_us"], t, strict=True) if lo <= tt <= hi]
    return {
        "reference_segments": n,
        "captured": caught,
        "captured_pct": 100.0 * caught / n if n else None,
        "reference_reads": sum(1 for tt in t if lo <= tt <= hi),
        "reference_distinct_field_timestamps": len(set(stamps)),
        "segment_ms_median": 1000 * durations[n // 2] if n else None,
        "segment_ms_p1": 1000 * durations[n // 100] if n else None,
        "poller_distinct_values": len({round(p[1] * 1000) for p in polled}),
    }


def trapezoid_j(points: list[tuple[float, float]]) -> float:
    return sum((p0 + p1) / 2.0 * (t1 - t0) for (t0, p0), (t1, p1) in itertools.pairwise(points))


def phase(
    nv: Any, h: Any, gpu: int, interval_s: float, seconds: float, ref_path: Path
) -> dict[str, Any]:
    ref_proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--reference-child",
            str(seconds + 3),
            str(ref_path),
            "--gpu",
            str(gpu),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert ref_proc.stdout is not None
    ref_proc.stdout.readline()
    meter = NvmlMeter([gpu], poll_interval_s=interval_s)
    meter.open()
    t0 = time.monotonic()
    raw0 = int(nv.nvmlDeviceGetTotalEnergyConsumption(h))
    tc0 = time.monotonic()
    samples, cpu_s, wall_s = poll(meter.sample, interval_s, seconds, t0)
    raw1 = int(nv.nvmlDeviceGetTotalEnergyConsumption(h))
    tc1 = time.monotonic()
    (last,) = meter.sample(tc1 - t0, exact=True)
    meter.close()
    ref_proc.wait(timeout=60)
    ref = json.loads(ref_path.read_text())
    pts = [(t, p) for t, p, _ in samples if p is not None]
    # Counter read just before and just after the poll window; integrate instant power
    # over the same window (samples start right after tc0 and end right before tc1).
    counter_j = (raw1 - raw0) / 1000.0
    integrated_j = trapezoid_j([(tc0, pts[0][1]), *pts, (tc1, pts[-1][1])])
    ref_pts = [
        (t, mw / 1000.0) for t, mw in zip(ref["t"], ref["mw"], strict=True) if tc0 <= t <= tc1
    ]
    ref_j = trapezoid_j(ref_pts)
    first_e = samples[0][2] or 0.0
    return {
        "poll_interval_s": interval_s,
        "samples": len(samples),
        "achieved_hz": len(samples) / wall_s,
        "wall_s": wall_s,
        "poller_cpu_s": cpu_s,
        "poller_cpu_pct_of_core": 100.0 * cpu_s / wall_s,
        "energy_counter_j": counter_j,
        "energy_integrated_instant_j": integrated_j,
        "integrated_vs_counter_pct": 100.0 * (integrated_j - counter_j) / counter_j,
        "energy_reference_integrated_j": ref_j,
        "meter_energy_j": ((last.energy_mj or 0.0) - first_e) / 1000.0,
        "avg_power_w": counter_j / (tc1 - tc0),
        "coverage": coverage(ref, pts),
    }


def naive_cost(nv: Any, h: Any, interval_s: float, seconds: float) -> dict[str, Any]:
    """Everything, the energy counter included, on every sample (what not to do)."""

    def read_all(_t: float) -> list[Any]:
        nv.nvmlDeviceGetTotalEnergyConsumption(h)
        nv.nvmlDeviceGetFieldValues(h, [FI_POWER_INSTANT, FI_POWER_AVERAGE])
        nv.nvmlDeviceGetUtilizationRates(h)
        nv.nvmlDeviceGetMemoryInfo(h)
        nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)
        nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)
        nv.nvmlDeviceGetEnforcedPowerLimit(h)
        return []

    _, cpu_s, wall_s = poll(read_all, interval_s, seconds, time.monotonic())
    return {"poll_interval_s": interval_s, "poller_cpu_pct_of_core": 100.0 * cpu_s / wall_s}


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"## NVML poller on {r['gpu_name']} (driver {r['driver']}, nvidia-ml-py {r['nvml_py']})",
        "",
        f"Load: torch bf16 8192² matmuls in a 12 s cycle (5 s full, 2 s idle, 5 s ~50% duty), "
        f"{r['seconds']:.0f} s per rate. Reference: a separate process reading the instant "
        "power field every ~0.5 ms.",
        "",
        "| poll interval | achieved Hz | counter J | integrated instant J | diff | "
        "meter J | distinct values captured | poller CPU (% of a core) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in r["phases"]:
        c = p["coverage"]
        lines.append(
            f"| {p['poll_interval_s']:g} s | {p['achieved_hz']:.1f} | {p['energy_counter_j']:.1f}"
            f" | {p['energy_integrated_instant_j']:.1f} | {p['integrated_vs_counter_pct']:+.2f}%"
            f" | {p['meter_energy_j']:.1f} | {c['captured']}/{c['reference_segments']} "
            f"({c['captured_pct']:.2f}%) | {p['poller_cpu_pct_of_core']:.2f}% |"
        )
    lines += ["", "Naive poller (every read, energy counter included, each sample):", ""]
    for n in r["naive"]:
        lines.append(f"- {n['poll_interval_s']:g} s: {n['poller_cpu_pct_of_core']:.1f}% of a core")
    lines += ["", "CPU per call (ms, thread time, under load):", ""]
    for k, v in r["per_call"].items():
        if k.endswith("_ms"):
            lines.append(f"- {k.removesuffix('_ms')}: {v:.4f}")
    lines.append(f"- units check: {r['per_call'].get('units_check')}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/out"))
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--rates", default=f"{DEFAULT_POLL_INTERVAL_S},0.01")
    ap.add_argument("--load-child", type=float)
    ap.add_argument("--reference-child", nargs=2)
    a = ap.parse_args()
    if a.load_child is not None:
        load_child(a.gpu, a.load_child)
        return 0
    if a.reference_child:
        reference_child(a.gpu, float(a.reference_child[0]), a.reference_child[1])
        return 0

    import pynvml as nv

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(a.gpu)
    intervals = [float(x) for x in a.rates.split(",")]
    total = len(intervals) * (a.seconds + 8) + 40
    load = subprocess.Popen(
        [sys.executable, __file__, "--load-child", str(total), "--gpu", str(a.gpu)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert load.stdout is not None
    load.stdout.readline()
    time.sleep(3.0)
    result: dict[str, Any] = {
        "gpu_name": str(nv.nvmlDeviceGetName(h)),
        "driver": str(nv.nvmlSystemGetDriverVersion()),
        "nvml_py": _version("nvidia-ml-py"),
        "host": platform.node(),
        "cpu": platform.processor(),
        "seconds": a.seconds,
        "power_limit_w": nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
    }
    try:
        result["per_call"] = per_call_cost(nv, h)
        result["phases"] = []
        for i, iv in enumerate(intervals):
            result["phases"].append(phase(nv, h, a.gpu, iv, a.seconds, out / f"ref{i}.json"))
            print(json.dumps(result["phases"][-1]), flush=True)
        result["naive"] = [naive_cost(nv, h, iv, 8.0) for iv in (0.05, 0.01)]
    finally:
        load.terminate()
        load.wait(timeout=30)
        nv.nvmlShutdown()
    for i in range(len(intervals)):
        (out / f"ref{i}.json").unlink(missing_ok=True)  # big; the summary has what matters
    (out / "nvml_poller.json").write_text(json.dumps(result, indent=1))
    md = markdown(result)
    (out / "nvml_poller.md").write_text(md)
    print(md)
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
