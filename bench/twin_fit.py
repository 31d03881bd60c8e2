"""One fit of the twin's coefficients across every published point (issue 10).

    python bench/twin_fit.py [--evals 4000]

The points: ML.ENERGY leaderboard v3 (vLLM 0.11.1, H100-SXM, bf16): Llama-3.1-8B chat
(shared REFERENCE.md), Qwen3-8B on gpqa and lm-arena-chat, Llama-3.1-70B-Instruct on 4
GPUs (issue 10's table). Nothing else is fitted to, so that the other points of those
families stay a check.

Each point is modelled as ML.ENERGY runs it (all requests at once, max_num_seqs in
flight, the steady state): a full batch whose mean context is the prompt plus the
length-biased age of a running request (E[L^2] / 2E[L] for output lengths L), with the
prompts of the requests that replace finished ones chunked into the steps. The fit
minimises the squared log errors of power, output tokens/s and median ITL (J/token is
power / tokens/s) over the coefficients of engines/sim/roofline.Calibration and
power.PowerCoefficients, within physical bounds, and prints them. The full simulation
through the CLI then checks every point: bench/twin_points.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.sim.fit import Param, apply, minimize, start_values, steady_state
from engines.sim.power import PowerCoefficients
from engines.sim.roofline import Calibration
from engines.sim.specs import GPUS, MODELS
from engines.sim.twin import GpuTwin


@dataclass(frozen=True, slots=True)
class Point:
    model: str
    task: str
    tp: int
    max_num_seqs: int
    j_per_token: float
    power_w: float
    tokens_per_s: float
    itl_ms: float
    prompt_mean: float
    prompt_cv: float
    output_mean: float
    output_cv: float
    output_max: int

    @property
    def label(self) -> str:
        tp = f" TP{self.tp}" if self.tp > 1 else ""
        return f"{self.model} {self.task}{tp} b{self.max_num_seqs}"

    @property
    def ctx_mean(self) -> float:
        # Age of a running request: length-biased, E[L^2] / 2 E[L] = L (1 + cv^2) / 2.
        return self.prompt_mean + self.output_mean * (1 + self.output_cv**2) / 2


def _chat(model: str, tp: int, b: int, jpt: float, w: float, tps: float, itl: float,
          out: float) -> Point:
    # lm-arena-chat: short conversational prompts (~100-200 tokens), heavy-tailed answers.
    return Point(model, "lm-arena-chat", tp, b, jpt, w, tps, itl, 150.0, 0.8, out, 0.7, 8192)


def _gpqa(b: int, jpt: float, w: float, tps: float, itl: float, out: float) -> Point:
    # gpqa: short questions (~250 tokens), long reasoning outputs (up to 32k).
    return Point("qwen3-8b", "gpqa", 1, b, jpt, w, tps, itl, 250.0, 0.4, out, 0.35, 32768)


POINTS: list[Point] = [
    # shared REFERENCE.md: Llama-3.1-8B, ~400 output tokens, short chat prompts.
    _chat("llama-3.1-8b", 1, 8, 0.455, 486, 1070, 7.3, 400),
    _chat("llama-3.1-8b", 1, 64, 0.119, 610, 5147, 11.5, 400),
    _chat("llama-3.1-8b", 1, 512, 0.070, 688, 9806, 47.4, 400),
    # issue 10's table.
    _gpqa(8, 0.6036, 494, 818, 9.70, 7854),
    _gpqa(64, 0.2668, 670, 2510, 26.64, 8367),
    _chat("qwen3-8b", 1, 8, 0.4440, 427, 962, 8.20, 647),
    _chat("qwen3-8b", 1, 64, 0.1192, 514, 4315, 13.95, 645),
    _chat("qwen3-8b", 1, 256, 0.0820, 633, 7719, 31.36, 654),
    _chat("llama-3.1-70b", 4, 8, 3.7587, 1765, 470, 16.57, 350),
    _chat("llama-3.1-70b", 4, 64, 0.7972, 2002, 2511, 22.43, 352),
    _chat("llama-3.1-70b", 4, 512, 0.4210, 2493, 5921, 73.89, 350),
]

PARAMS: list[Param] = [
    Param("calibration", "eff_compute", 0.4, 0.85),
    Param("calibration", "smooth_k", 1.0, 4.0),
    Param("calibration", "eff_mem", 0.6, 0.93),
    Param("calibration", "eff_kv", 0.4, 0.93),
    Param("calibration", "kv_half_tokens", 16.0, 4000.0),
    Param("calibration", "overhead_s", 1e-4, 4e-3),
    Param("calibration", "overhead_per_seq_s", 1e-6, 60e-6),
    Param("calibration", "kernel_gap_s", 1e-7, 8e-6),
    Param("calibration", "allreduce_latency_s", 2e-6, 40e-6),
    Param("calibration", "qk_norm_s", 0.0, 40e-6),
    Param("calibration", "eff_link", 0.2, 0.9),
    Param("power", "gap_w", 0.0, 300.0),
    Param("power", "busy_w", 20.0, 400.0),
    Param("power", "link_pj_per_byte", 0.0, 300.0),
    Param("power", "flop_pj", 0.3, 4.0),
    Param("power", "hbm_pj_per_byte", 5.0, 150.0),
    Param("power", "sm_pj_per_byte", 5.0, 200.0),
    Param("power", "attn_pj_per_byte", 0.0, 200.0),
]


def predict(p: Point, cal: Calibration, power: PowerCoefficients) -> dict[str, float]:
    twin = GpuTwin(GPUS["h100"], MODELS[p.model], calibration=cal, power=power,
                   tensor_parallel_size=p.tp)
    b = p.max_num_seqs
    ss = steady_state(twin, b, p.ctx_mean, p.output_mean, p.prompt_mean)
    return {"power_w": ss.power_w, "tokens_per_s": ss.tokens_per_s,
            "itl_ms": 1000 * ss.median_step_s, "j_per_token": ss.j_per_token}


METRICS = ("power_w", "tokens_per_s", "itl_ms", "j_per_token")
WEIGHTS = {"power_w": 1.0, "tokens_per_s": 1.0, "itl_ms": 1.0, "j_per_token": 1.0}


def biases(path: Path | None) -> dict[str, dict[str, float]]:
    """Per point and metric, full simulation / steady-state model with the current
    defaults (from twin_points.py --json): the fast model's own error, divided out
    (space mapping), so that the fit aims the full simulation at the published values."""
    if path is None:
        return {}
    measured = json.loads(path.read_text())
    out: dict[str, dict[str, float]] = {}
    for p in POINTS:
        if p.label in measured:
            model = predict(p, Calibration(), PowerCoefficients())
            out[p.label] = {k: measured[p.label][k] / model[k] for k in METRICS}
    return out


BIAS: dict[str, dict[str, float]] = {}


def cost(values: list[float]) -> float:
    cal, pw = apply(PARAMS, values, Calibration(), PowerCoefficients())
    total = 0.0
    for p in POINTS:
        r = predict(p, cal, pw)
        bias = BIAS.get(p.label, {})
        for k in METRICS:
            total += WEIGHTS[k] * math.log(r[k] * bias.get(k, 1.0) / getattr(p, k)) ** 2
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--evals", type=int, default=40000)
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--bias", type=Path, default=None, metavar="JSON",
                    help="twin_points.py --json output made with the current defaults")
    args = ap.parse_args()
    BIAS.update(biases(args.bias))
    t0 = time.perf_counter()
    x0 = start_values(PARAMS, Calibration(), PowerCoefficients())
    best, c = minimize(cost, PARAMS, x0, max_evals=args.evals, restarts=args.restarts)
    cal, pw = apply(PARAMS, best, Calibration(), PowerCoefficients())
    print(f"cost {c:.4f} after {time.perf_counter() - t0:.1f} s")
    for prm, v in zip(PARAMS, best, strict=True):
        print(f"  {prm.owner}.{prm.name} = {v:.6g}")
    print("| point | power | tok/s | ITL | J/token |")
    for p in POINTS:
        r = predict(p, cal, pw)
        r = {k: v * BIAS.get(p.label, {}).get(k, 1.0) for k, v in r.items()}
        print(f"| {p.label} | {r['power_w'] / p.power_w - 1:+.1%} | "
              f"{r['tokens_per_s'] / p.tokens_per_s - 1:+.1%} | "
              f"{r['itl_ms'] / p.itl_ms - 1:+.1%} | {r['j_per_token'] / p.j_per_token - 1:+.1%} |")


if __name__ == "__main__":
    main()
