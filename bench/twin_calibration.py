"""Calibration of the simulated H100 twin against the ML.ENERGY Llama-3.1-8B series.

    python bench/twin_calibration.py

Drives SimEngine directly on virtual time the way the ML.ENERGY benchmark drives
vLLM: all requests sent at once, at most max_num_seqs in flight (engine limit and a
client semaphore), short chat prompts (100-200 tokens), ~400 output tokens (uniform
200-600, EOS ignored), num_requests = max(64, 4 * max_num_seqs). J/token, power and
tokens/s are measured over the steady state as ML.ENERGY does: from when
max_num_seqs requests have their first token until num_requests - max_num_seqs
have finished, with the GPU energy read from the SimMeter. Median ITL is over every
output token (coalesced token events spread evenly over their interval).

Prints two markdown tables (the batch-size series beside the published values, and a
power-cap series) and writes them to bench/RESULTS-twin.md.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.clock import LoopClock, run_async
from engines.base import EngineContext, Request
from engines.sim.engine import SimEngine
from engines.sim.power import PowerCoefficients
from engines.sim.roofline import Calibration
from engines.sim.specs import GPUS, MODELS
from engines.sim.twin import GpuTwin
from meters.sim.meter import SimMeter

# ML.ENERGY leaderboard v3 (vLLM 0.11.1), Llama-3.1-8B on one H100-SXM: REFERENCE.md.
PUBLISHED: dict[int, tuple[float, float, float, float]] = {
    8: (0.455, 486.0, 1070.0, 7.3),
    64: (0.119, 610.0, 5147.0, 11.5),
    512: (0.070, 688.0, 9806.0, 47.4),
}
SERIES = [8, 16, 32, 64, 128, 256, 512]
CAPS_W = [700.0, 560.0, 420.0]
RESULTS = Path(__file__).resolve().parent / "RESULTS-twin.md"


async def _run(
    max_num_seqs: int,
    *,
    seed: int = 0,
    num_requests: int | None = None,
    prompt_range: tuple[int, int] = (100, 200),
    output_range: tuple[int, int] = (200, 600),
    cap_w: float | None = None,
    calibration: Calibration | None = None,
    power: PowerCoefficients | None = None,
) -> dict[str, float]:
    ctx = EngineContext(clock=LoopClock(), emit=lambda _e: None)
    twin = GpuTwin(GPUS["h100"], MODELS["llama-3.1-8b"], calibration=calibration, power=power)
    engine = SimEngine(ctx, twin, max_num_seqs=max_num_seqs, seed=seed)
    meter = SimMeter.from_options({"engine": engine})
    if cap_w is not None:
        meter.set_power_limit("gpu0", cap_w)
    n = num_requests or max(64, 4 * max_num_seqs)
    rng = random.Random(seed)
    reqs = [
        Request(f"r{i}", "", rng.randint(*prompt_range), rng.randint(*output_range))
        for i in range(n)
    ]
    first_t: list[float] = []
    finish_t: list[float] = []
    marks: dict[str, tuple[float, float]] = {}  # window edge -> (t, energy J)
    tokens: list[tuple[float, int]] = []
    itls: list[float] = []
    sem = asyncio.Semaphore(max_num_seqs)

    def mark(name: str) -> None:
        t = ctx.clock.now()
        marks[name] = (t, (meter.sample(t)[0].energy_mj or 0.0) / 1000.0)

    async def one(req: Request) -> None:
        async with sem:
            prev: float | None = None
            async for ev in engine.generate(req):
                if prev is None:
                    first_t.append(ev.t_s)
                    if len(first_t) == max_num_seqs:
                        mark("start")
                elif ev.decode_tokens:
                    itls.extend([(ev.t_s - prev) / ev.decode_tokens] * ev.decode_tokens)
                prev = ev.t_s
                tokens.append((ev.t_s, ev.decode_tokens))
            finish_t.append(ev.t_s)
            if len(finish_t) == n - max_num_seqs:
                mark("end")

    await engine.start()
    wall0 = time.perf_counter()
    await asyncio.gather(*(one(r) for r in reqs))
    wall = time.perf_counter() - wall0
    await engine.stop()
    (ta, ea), (tb, eb) = marks["start"], marks["end"]
    toks = sum(d for t, d in tokens if ta < t <= tb)
    energy = eb - ea
    return {
        "j_per_token": energy / toks,
        "power_w": energy / (tb - ta),
        "tokens_per_s": toks / (tb - ta),
        "itl_ms": 1000.0 * statistics.median(itls),
        "wall_s": wall,
        "sim_s": ctx.clock.now(),
        "preempted": float(engine.sched.preempted_total),
    }


def run_point(max_num_seqs: int, **kw: Any) -> dict[str, float]:
    result: dict[str, float] = run_async(_run(max_num_seqs, **kw), virtual=True)
    return result


def _pct(got: float, want: float) -> str:
    return f"{100.0 * (got - want) / want:+.1f}%"


def series_table(rows: dict[int, dict[str, float]]) -> str:
    lines = [
        "| max_num_seqs | J/token twin | J/token pub | err | power W twin | pub | err "
        "| tok/s twin | pub | err | median ITL ms twin | pub | err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b, r in rows.items():
        pub = PUBLISHED.get(b)
        cells = [str(b)]
        for i, (key, fmt) in enumerate([("j_per_token", "{:.3f}"), ("power_w", "{:.0f}"),
                                        ("tokens_per_s", "{:.0f}"), ("itl_ms", "{:.1f}")]):
            cells.append(fmt.format(r[key]))
            cells.append(fmt.format(pub[i]) if pub else "—")
            cells.append(_pct(r[key], pub[i]) if pub else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cap_table(rows: dict[float, dict[str, float]]) -> str:
    base = rows[CAPS_W[0]]
    lines = [
        "| power cap W | avg power W | J/token | tok/s | median ITL ms | vs 700 W: power "
        "| J/token | tok/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cap, r in rows.items():
        lines.append(
            f"| {cap:.0f} | {r['power_w']:.0f} | {r['j_per_token']:.4f} | "
            f"{r['tokens_per_s']:.0f} | {r['itl_ms']:.1f} | "
            f"{_pct(r['power_w'], base['power_w'])} | "
            f"{_pct(r['j_per_token'], base['j_per_token'])} | "
            f"{_pct(r['tokens_per_s'], base['tokens_per_s'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    t0 = time.perf_counter()
    rows = {b: run_point(b) for b in SERIES}
    # Decode-heavy batch of 64 under power caps: short prompts, long outputs.
    caps = {
        c: run_point(64, cap_w=c, num_requests=256, prompt_range=(100, 200),
                     output_range=(800, 1200))
        for c in CAPS_W
    }
    wall = time.perf_counter() - t0
    text = "\n".join([
        "# Simulated twin: calibration",
        "",
        "Command: `python bench/twin_calibration.py` (virtual time; "
        f"{wall:.1f} s of wall time for both tables on this machine).",
        "",
        "## Llama-3.1-8B on the H100 twin vs ML.ENERGY v3 (vLLM 0.11.1, H100-SXM)",
        "",
        "All requests at once, max_num_seqs in flight, prompts 100-200 tokens, outputs "
        "200-600 (mean 400), num_requests = max(64, 4 x max_num_seqs); steady-state "
        "window as ML.ENERGY measures it. Published values for 8, 64 and 512 from "
        "shared/REFERENCE.md; \"—\" where none is listed.",
        "",
        series_table(rows),
        "",
        "## Power cap: decode-heavy batch of 64 (prompts 100-200, outputs 800-1200)",
        "",
        cap_table(caps),
        "",
    ])
    print(text)
    old = RESULTS.read_text() if RESULTS.exists() else ""
    keep = old.split("\n## Virtual time", 1)
    tail = "\n## Virtual time" + keep[1] if len(keep) == 2 else ""
    RESULTS.write_text(text + tail)


if __name__ == "__main__":
    main()
