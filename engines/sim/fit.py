"""Fitting the twin's coefficients: a bounded Nelder-Mead in log space (no SciPy in the
core's dependencies) and the steady state of a decode batch, the fast model of a
benchmark point that the fits minimise over before a full simulation checks them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engines.sim.power import PowerCoefficients, StepPower
from engines.sim.roofline import Calibration
from engines.sim.twin import GpuTwin


@dataclass(frozen=True, slots=True)
class Param:
    """One fitted coefficient: where it lives, its start and its physical bounds."""

    owner: str  # "calibration" or "power"
    name: str
    lo: float
    hi: float


def apply(params: Sequence[Param], values: Sequence[float], cal: Calibration,
          power: PowerCoefficients) -> tuple[Calibration, PowerCoefficients]:
    c_kw = {p.name: v for p, v in zip(params, values, strict=True) if p.owner == "calibration"}
    p_kw = {p.name: v for p, v in zip(params, values, strict=True) if p.owner == "power"}
    return dataclasses.replace(cal, **c_kw), dataclasses.replace(power, **p_kw)


def start_values(params: Sequence[Param], cal: Calibration,
                 power: PowerCoefficients) -> list[float]:
    out = []
    for p in params:
        v = getattr(cal if p.owner == "calibration" else power, p.name)
        out.append(min(p.hi, max(p.lo, v)))
    return out


def minimize(f: Callable[[list[float]], float], params: Sequence[Param], x0: Sequence[float],
             *, max_evals: int = 2000, restarts: int = 2,
             step: float = 0.15) -> tuple[list[float], float]:
    """Nelder-Mead over log(value) clipped to each parameter's bounds (a parameter whose
    bound is 0 is searched linearly); `step` is the first simplex's size (in log units,
    or as a fraction of the range). Returns (best values, best cost)."""
    logs = [p.lo > 0 for p in params]

    def to_x(v: Sequence[float]) -> list[float]:
        return [math.log(a) if lg else a for a, lg in zip(v, logs, strict=True)]

    def to_v(x: Sequence[float]) -> list[float]:
        out = []
        for a, lg, p in zip(x, logs, params, strict=True):
            v = math.exp(a) if lg else a
            out.append(min(p.hi, max(p.lo, v)))
        return out

    def cost(x: Sequence[float]) -> float:
        return f(to_v(x))

    best_x = to_x(x0)
    best = cost(best_x)
    evals = 1
    budget = max_evals // max(1, restarts + 1)
    for _ in range(restarts + 1):
        n = len(best_x)
        simplex = [list(best_x)]
        for i in range(n):
            x = list(best_x)
            p = params[i]
            x[i] += step if logs[i] else 0.15 * step * (p.hi - p.lo)
            simplex.append(x)
        vals = [cost(x) for x in simplex]
        evals += n
        used = 0
        while used < budget:
            order = sorted(range(n + 1), key=vals.__getitem__)
            simplex = [simplex[i] for i in order]
            vals = [vals[i] for i in order]
            if vals[-1] - vals[0] < 1e-9 * (1.0 + abs(vals[0])):
                break
            centroid = [sum(x[j] for x in simplex[:-1]) / n for j in range(n)]
            worst = simplex[-1]
            refl = [c + (c - w) for c, w in zip(centroid, worst, strict=True)]
            fr = cost(refl)
            used += 1
            if fr < vals[0]:
                exp = [c + 2 * (c - w) for c, w in zip(centroid, worst, strict=True)]
                fe = cost(exp)
                used += 1
                simplex[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
            elif fr < vals[-2]:
                simplex[-1], vals[-1] = refl, fr
            else:
                con = [c + 0.5 * (w - c) for c, w in zip(centroid, worst, strict=True)]
                fc = cost(con)
                used += 1
                if fc < vals[-1]:
                    simplex[-1], vals[-1] = con, fc
                else:
                    b = simplex[0]
                    simplex = [b] + [[bj + 0.5 * (xj - bj) for bj, xj in zip(b, x, strict=True)]
                                     for x in simplex[1:]]
                    vals = [vals[0]] + [cost(x) for x in simplex[1:]]
                    used += n
        i = min(range(n + 1), key=vals.__getitem__)
        if vals[i] < best:
            best, best_x = vals[i], simplex[i]
        evals += used
    return to_v(best_x), best


@dataclass(frozen=True, slots=True)
class SteadyState:
    """One GPU group decoding a full batch in steady state."""

    step_s: float  # mean step
    median_step_s: float  # the median inter-token latency
    power_w: float  # all GPUs together
    tokens_per_s: float
    j_per_token: float


def _with_prefill(twin: GpuTwin, n: int, ctx_sum: float, prefill: float,
                  prompt_mean: float) -> StepPower:
    rf = twin.roofline
    work = rf.decode_work(n, round(ctx_sum))
    if prefill > 0:
        m = rf.model
        # Prompts of prompt_mean tokens: their linear work, attention over the prompt
        # (half of it on average) and their KV written.
        work.n_tokens += round(prefill)
        work.lin_flops += 2.0 * m.body_params * prefill
        work.attn_flops += m.attn_flops_per_ctx_token * prefill * prompt_mean / 2
        work.kv_bytes += m.kv_bytes_per_token * prefill
    return twin.plan_step(work)


def steady_state(twin: GpuTwin, batch: float, ctx_mean: float, output_mean: float,
                 prompt_mean: float) -> SteadyState:
    """A batch of `batch` sequences whose mean context is `ctx_mean`; each step a
    Poisson number (mean batch / output_mean) of finished requests is replaced by new
    ones whose prompts (`prompt_mean`) are prefilled within the step (chunked prefill),
    at the twin's power cap. Tokens/s and power come from the mean step, the median
    ITL from the step with the median number of prefills."""
    n = max(1, round(batch))
    lam = batch / output_mean
    mean = _with_prefill(twin, n, n * ctx_mean, lam * prompt_mean, prompt_mean)
    k_med = math.floor(lam + 1 / 3) if lam > 0 else 0  # the median of Poisson(lam)
    med = _with_prefill(twin, n, n * ctx_mean, k_med * prompt_mean, prompt_mean)
    t = mean.times.total_s
    power = mean.power_w * twin.n_gpus
    tps = batch / t
    return SteadyState(step_s=t, median_step_s=med.times.total_s, power_w=power,
                       tokens_per_s=tps, j_per_token=power / tps)
