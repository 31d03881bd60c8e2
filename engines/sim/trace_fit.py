"""Fitting the twin to runs recorded on a real engine and GPU (`wattflow calibrate`).

A `Trace` is what the fit needs of one recorded run: each request's submission time,
prompt length, output limit, first-token time, end time and output tokens, the run's
batch limit, and the GPU energy measured between the first submission and the end.
`replay` drives the twin with the same requests at the same times (open loop: the
recorded submission times, at most batch_limit in flight, requests still running at
the end cut there as the real run cut them) on virtual time and measures it the same
way. `fit` searches the twin's coefficients (`FIT_PARAMS`) for the smallest squared log
error over every trace's output tokens/s, GPU power, median time per output token and
median time to first token (of the requests that found a free slot), with a weak pull
towards the H100 defaults so that what the traces do not determine stays where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.core.clock import LoopClock, run_async
from engines.base import EngineContext, Request
from engines.sim.engine import SimEngine
from engines.sim.fit import Param, apply, minimize, start_values
from engines.sim.power import PowerCoefficients
from engines.sim.roofline import Calibration
from engines.sim.specs import GpuSpec, ModelSpec
from engines.sim.twin import GpuTwin

METRICS = ("tokens_per_s", "power_w", "j_per_token", "tpot_p50_s", "ttft_p50_s")
# TTFT counts for less: a real engine's admission (waves, warm-up at start) shapes it in
# ways the twin's scheduler does not copy, while tokens/s, power and TPOT are the step.
_WEIGHTS = {"tokens_per_s": 1.0, "power_w": 1.0, "j_per_token": 0.0, "tpot_p50_s": 1.0,
            "ttft_p50_s": 0.15}
# Pull of each coefficient's log towards its default: a tie-breaker where the traces do
# not decide (one trace's decode step cannot tell a fixed cost from a per-token one).
# Power needs almost none: one number per trace, and an engine far from the H100 fit
# (a slow attention kernel drawing hundreds of watts) is far from its defaults.
_RIDGE_TIME = 0.002
_RIDGE_POWER = 2e-5

# What a few minutes of a real engine can pin down. Time: the step's fixed and
# per-sequence host cost, how much of it hides behind the GPU's work, prefill (GEMM)
# speed, KV read speed. Power: gaps, resident kernels, attention's work per KV byte, the
# batch that fills the SMs. `fit` takes time first (power never changes time unless the
# cap binds), then power, then both together. The rest keeps the H100 fit.
TIME_PARAMS: list[Param] = [
    Param("calibration", "overhead_s", 1e-5, 2.0),
    Param("calibration", "overhead_per_seq_s", 1e-8, 0.05),
    Param("calibration", "eff_compute", 0.02, 0.95),  # GEMMs never run at 1% of peak
    Param("calibration", "eff_kv", 1e-4, 0.95),
    Param("calibration", "host_overlap", 0.0, 1.0),  # linear: its default is 0
]
POWER_PARAMS: list[Param] = [
    Param("power", "gap_w", 0.0, 700.0),  # searched linearly: its default is 0 W
    Param("power", "busy_w", 1.0, 700.0),
    Param("power", "attn_pj_per_byte", 1e-3, 1e5),
    Param("power", "occupancy_half_seqs", 0.0, 256.0),  # linear: its default is 0
]
FIT_PARAMS = TIME_PARAMS + POWER_PARAMS
_TIME_METRICS = ("tokens_per_s", "tpot_p50_s", "ttft_p50_s")
_POWER_METRICS = ("power_w",)


class TraceError(ValueError):
    """A recorded run the twin cannot be fitted to; the message is one line."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    submit_s: float
    prompt_tokens: int
    max_tokens: int
    first_token_s: float | None
    end_s: float | None  # finished, failed or cut at the run's end
    output_tokens: int
    cut: bool = False  # ended unfinished (the run's end, a timeout): the replay cuts it too


@dataclass(slots=True)
class Trace:
    name: str
    gpu: GpuSpec
    model: ModelSpec
    requests: list[TraceRequest]
    start_s: float  # the first submission
    end_s: float  # the run's end (the cut)
    energy_j: float  # all GPUs, start_s to end_s
    batch_limit: int
    n_gpus: int = 1
    measured: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.measured:
            self.measured = measure(self.requests, self.start_s, self.end_s, self.energy_j,
                                    self.batch_limit)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _unqueued(requests: Sequence[TraceRequest], batch_limit: int) -> list[TraceRequest]:
    """The requests submitted while fewer than batch_limit were in flight."""
    out: list[TraceRequest] = []
    ends: list[float] = []  # a heap of the in-flight requests' end times
    for r in sorted(requests, key=lambda r: r.submit_s):
        while ends and ends[0] <= r.submit_s:
            heapq.heappop(ends)
        if len(ends) < max(1, batch_limit):
            out.append(r)
        heapq.heappush(ends, r.end_s if r.end_s is not None else math.inf)
    return out


def measure(requests: Sequence[TraceRequest], start_s: float, end_s: float,
            energy_j: float, batch_limit: int) -> dict[str, float]:
    """The metrics the fit compares, computed the same way for a real and a replayed run.
    TTFT is over the requests that found a free slot when submitted (fewer than
    batch_limit in flight): the others mostly measure the client queue, and which of
    them get a first token before the end at all is a cliff, not a slope a fit can
    follow."""
    span = end_s - start_s
    out = sum(r.output_tokens for r in requests)
    ttft = [r.first_token_s - r.submit_s for r in _unqueued(requests, batch_limit)
            if r.first_token_s is not None]
    tpot = [(r.end_s - r.first_token_s) / (r.output_tokens - 1) for r in requests
            if r.first_token_s is not None and r.end_s is not None and r.output_tokens > 1
            and r.end_s > r.first_token_s]
    return {
        "tokens_per_s": out / span if span > 0 else float("nan"),
        "power_w": energy_j / span if span > 0 else float("nan"),
        "j_per_token": energy_j / out if out else float("nan"),
        "tpot_p50_s": _median(tpot),
        "ttft_p50_s": _median(ttft),
    }


async def _replay(trace: Trace, cal: Calibration, power: PowerCoefficients
                  ) -> dict[str, float]:
    clock = LoopClock()
    twin = GpuTwin(trace.gpu, trace.model, calibration=cal, power=power,
                   tensor_parallel_size=trace.n_gpus)
    engine = SimEngine(EngineContext(clock=clock, emit=lambda _e: None), twin,
                       max_num_seqs=max(1, trace.batch_limit), prefix_caching=False)
    await engine.start()
    sem = asyncio.Semaphore(max(1, trace.batch_limit))
    offset = trace.start_s  # replay time 0 = the first submission
    results: list[TraceRequest] = []
    state: list[list[float]] = []  # per request: [first_token_s, end_s, output_tokens]

    async def one(i: int, r: TraceRequest) -> None:
        delay = r.submit_s - offset - clock.now()
        if delay > 0:
            await asyncio.sleep(delay)
        st = state[i]

        async def serve() -> None:
            async with sem:
                req = Request(f"r{i}", "", max(1, r.prompt_tokens), max(1, r.max_tokens))
                async for ev in engine.generate(req):
                    if ev.output_tokens and math.isnan(st[0]):
                        st[0] = ev.t_s
                    st[2] = ev.output_tokens or 0
                    if ev.finished:
                        st[1] = ev.t_s

        if r.cut and r.end_s is not None:
            # Cut where the real run cut it (still queued, or running at the end).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(serve(), max(0.0, r.end_s - offset - clock.now()))
            if math.isnan(st[1]):
                st[1] = clock.now()
        else:
            await serve()

    state = [[math.nan, math.nan, 0.0] for _ in trace.requests]
    tasks = [asyncio.create_task(one(i, r)) for i, r in enumerate(trace.requests)]
    span = trace.end_s - trace.start_s
    _done, pending = await asyncio.wait(tasks, timeout=span)
    cut = clock.now()
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    energy = (twin.energy_j(span) - twin.energy_j(0.0)) * twin.n_gpus
    await engine.stop()
    for r, (first, end, out) in zip(trace.requests, state, strict=True):
        ended = end if not math.isnan(end) else cut
        results.append(TraceRequest(r.submit_s - offset, r.prompt_tokens, r.max_tokens,
                                    None if math.isnan(first) else first, ended, int(out),
                                    r.cut))
    return measure(results, 0.0, span, energy, trace.batch_limit)


def replay(trace: Trace, cal: Calibration, power: PowerCoefficients) -> dict[str, float]:
    """The twin with these coefficients, driven by the trace's requests."""
    result: dict[str, float] = run_async(_replay(trace, cal, power), virtual=True)
    return result


def errors(predicted: dict[str, float], measured: dict[str, float]) -> dict[str, float]:
    """Relative error per metric (predicted / measured - 1); NaN where not comparable."""
    out = {}
    for k in METRICS:
        p, m = predicted.get(k, math.nan), measured.get(k, math.nan)
        out[k] = p / m - 1 if m and math.isfinite(m) and math.isfinite(p) and m > 0 \
            else math.nan
    return out


def _cost(traces: Sequence[Trace], cal: Calibration, power: PowerCoefficients,
          metrics: Sequence[str]) -> float:
    total = 0.0
    for tr in traces:
        pred = replay(tr, cal, power)
        for k in metrics:
            w = _WEIGHTS[k]
            p, m = pred[k], tr.measured[k]
            if not w or not (math.isfinite(m) and m > 0):
                continue
            total += w * (math.log(p / m) ** 2 if math.isfinite(p) and p > 0 else 25.0)
    return total


@dataclass(slots=True)
class FitResult:
    calibration: Calibration
    power: PowerCoefficients
    cost: float
    evals: int


def _stage(traces: Sequence[Trace], params: list[Param], metrics: Sequence[str],
           cal: Calibration, power: PowerCoefficients, x0: list[float], max_evals: int,
           count: list[int], ridge: float, step: float = 0.7
           ) -> tuple[Calibration, PowerCoefficients, float]:
    # The pull towards the defaults, for coefficients whose default is a real value (a
    # default of 0 W, clipped to the bound, says nothing about where it should be).
    defaults = start_values(params, Calibration(), PowerCoefficients())
    pulls = [(i, math.log(v)) for i, (v, p) in enumerate(zip(defaults, params, strict=True))
             if p.lo > 0 and v > 10 * p.lo]

    def f(values: list[float]) -> float:
        c_, p_ = apply(params, values, cal, power)
        count[0] += 1
        return _cost(traces, c_, p_, metrics) + ridge * sum(
            (math.log(values[i]) - l0) ** 2 for i, l0 in pulls)

    # A first simplex a factor 2 wide around the start (initial_guess has put it near the
    # traces; the joint stage starts narrower), then a restart to refine.
    values, cost = minimize(f, params, x0, max_evals=max_evals, restarts=1, step=step)
    c_, p_ = apply(params, values, cal, power)
    return c_, p_, cost


def _decode_load(tr: Trace) -> tuple[float, float]:
    """(mean requests decoding, their mean context) over the trace's span."""
    busy = ctx = 0.0
    for r in tr.requests:
        if r.first_token_s is None or r.end_s is None or r.end_s <= r.first_token_s:
            continue
        d = r.end_s - r.first_token_s
        busy += d
        ctx += d * (r.prompt_tokens + r.output_tokens / 2)
    span = tr.end_s - tr.start_s
    return (busy / span if span > 0 else 0.0), (ctx / busy if busy > 0 else 0.0)


def initial_guess(traces: Sequence[Trace]) -> Calibration:
    """A start for the time fit from the traces' own numbers: a decode step (the median
    time per output token) is a fixed cost plus the KV its batch reads, so two traces of
    different load separate the two (one trace: half and half); the fastest first token
    is about a prefill of its prompt at the GEMM efficiency."""
    base = Calibration()
    gpu, model = traces[0].gpu, traces[0].model
    bw = gpu.mem_bw_bps
    weights_s = model.streamed_weight_bytes / traces[0].n_gpus / (bw * base.eff_mem)
    pts = []
    for tr in traces:
        t = tr.measured["tpot_p50_s"]
        n, ctx = _decode_load(tr)
        if math.isfinite(t) and n > 0:
            x = n * (ctx + base.kv_half_tokens) * model.kv_bytes_per_token / tr.n_gpus / bw
            pts.append((x, max(t - weights_s, 1e-6)))
    oh, eff_kv = base.overhead_s, base.eff_kv
    if len(pts) >= 2 and max(p[0] for p in pts) > 1.2 * min(p[0] for p in pts):
        mx = sum(p[0] for p in pts) / len(pts)
        my = sum(p[1] for p in pts) / len(pts)
        k = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        if k > 0 and my - k * mx > 0:
            oh, eff_kv = my - k * mx, 1.0 / k
    elif pts:
        x, y = pts[0]
        oh, eff_kv = 0.5 * y, x / (0.5 * y)
    eff_c = base.eff_compute
    firsts = [(r.first_token_s - r.submit_s, r.prompt_tokens) for tr in traces
              for r in tr.requests if r.first_token_s is not None]
    if firsts:
        ttft, prompt = min(firsts)
        flops = 2.0 * model.body_params * prompt / traces[0].n_gpus
        t_pre = ttft - oh if ttft > 2 * oh else ttft / 2  # less the step it lands in
        if t_pre > 0:
            eff_c = flops / (t_pre * gpu.peak_flops)
    clip = {p.name: (p.lo, p.hi) for p in TIME_PARAMS}

    def c(name: str, v: float) -> float:
        lo, hi = clip[name]
        return min(hi, max(lo, v))

    return dataclasses.replace(base, overhead_s=c("overhead_s", oh),
                               eff_kv=c("eff_kv", eff_kv),
                               eff_compute=c("eff_compute", eff_c))


def fit(traces: Sequence[Trace], *, max_evals: int = 300) -> FitResult:
    """Time coefficients first from a start read off the traces, then power with time
    fixed, then everything together: the power a trace draws also says how much of its
    step is host overhead (low power) and how much is GPU work."""
    pw = PowerCoefficients()
    cal = initial_guess(traces)
    count = [0]
    x0 = start_values(TIME_PARAMS, cal, pw)
    share = max(1, max_evals // 4)
    cal, pw, _ = _stage(traces, TIME_PARAMS, _TIME_METRICS, cal, pw, x0, share, count,
                        _RIDGE_TIME)
    x1 = start_values(POWER_PARAMS, cal, pw)
    cal, pw, _ = _stage(traces, POWER_PARAMS, _POWER_METRICS, cal, pw, x1, share, count,
                        _RIDGE_POWER)
    x2 = start_values(FIT_PARAMS, cal, pw)
    cal, pw, cost = _stage(traces, FIT_PARAMS, _TIME_METRICS + _POWER_METRICS, cal, pw, x2,
                           max(1, max_evals - 2 * share), count, _RIDGE_TIME, step=0.3)
    return FitResult(cal, pw, cost, count[0])
