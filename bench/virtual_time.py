"""How fast the simulated twin runs on virtual time.

    python bench/virtual_time.py

One simulated hour of sequential chain summarization on the H100 twin (one chain,
one request at a time: each step's prompt is the previous 50-token summary plus the
next 1024-token chunk, 50 output tokens, EOS ignored), then a batch of 512
concurrent requests x 400 output tokens. Prints wall seconds and the ratio of
simulated to wall seconds, and appends them to bench/RESULTS-twin.md.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.clock import LoopClock, run_async
from engines.base import EngineContext, Request
from engines.sim.engine import SimEngine

RESULTS = Path(__file__).resolve().parent / "RESULTS-twin.md"
CHUNK_TOKENS = 1024
SUMMARY_TOKENS = 50
INSTRUCTION_TOKENS = 30


async def chain_hour(sim_s: float = 3600.0) -> dict[str, float]:
    ctx = EngineContext(clock=LoopClock(), emit=lambda _e: None)
    engine = SimEngine.from_options(ctx, {})
    await engine.start()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    steps = 0
    summary = 0
    while ctx.clock.now() < sim_s:
        prompt = INSTRUCTION_TOKENS + summary + CHUNK_TOKENS
        req = Request(f"chain-{steps}", "", prompt, SUMMARY_TOKENS, workflow_id="chain")
        async for ev in engine.generate(req):
            if ev.finished:
                summary = ev.output_tokens or SUMMARY_TOKENS
        steps += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    sim = ctx.clock.now()
    energy_j = engine.twin.energy_j(sim)
    await engine.stop()
    return {"sim_s": sim, "wall_s": wall, "cpu_s": cpu, "requests": steps,
            "engine_steps": engine.steps, "energy_kj": energy_j / 1000.0}


async def batch_512(n: int = 512, out: int = 400) -> dict[str, float]:
    ctx = EngineContext(clock=LoopClock(), emit=lambda _e: None)
    engine = SimEngine.from_options(ctx, {"max_num_seqs": 512})
    await engine.start()
    wall0, cpu0 = time.perf_counter(), time.process_time()

    async def one(i: int) -> None:
        async for _ev in engine.generate(Request(f"r{i}", "", 150, out)):
            pass

    await asyncio.gather(*(one(i) for i in range(n)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    sim = ctx.clock.now()
    await engine.stop()
    return {"sim_s": sim, "wall_s": wall, "cpu_s": cpu, "requests": n,
            "engine_steps": engine.steps}


def main() -> None:
    chain = run_async(chain_hour(), virtual=True)
    batch = run_async(batch_512(), virtual=True)
    lines = [
        "",
        "## Virtual time",
        "",
        f"Command: `python bench/virtual_time.py` (Python {platform.python_version()}, "
        f"{platform.machine()}, load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs: wall time suffers when the machine is shared; "
        "CPU time does not).",
        "",
        "| run | simulated s | wall s | CPU s | simulated/wall | requests | engine steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in [("sequential chain, 1 h (1024-token chunks, 50 out)", chain),
                    ("512 concurrent x 400 tokens", batch)]:
        lines.append(
            f"| {name} | {r['sim_s']:.0f} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
            f"{r['sim_s'] / r['wall_s']:.0f}x | {r['requests']:.0f} | {r['engine_steps']:.0f} |"
        )
    lines.append("")
    lines.append(f"Chain energy over the hour: {chain['energy_kj']:.0f} kJ.")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    old = RESULTS.read_text() if RESULTS.exists() else "# Simulated twin\n"
    head = old.split("\n## Virtual time", 1)[0].rstrip("\n") + "\n"
    RESULTS.write_text(head + text)


if __name__ == "__main__":
    main()
