"""Step time of one engine iteration from a per-operator roofline.

A transformer step runs two kinds of kernels one after the other: the linear layers
(GEMMs whose weights are streamed from HBM once per step) and attention (which reads
every scheduled sequence's KV cache). Each kind is limited by compute or memory,
joined with a smooth maximum because real kernels near the ridge point reach neither
roof. Then a per-step host overhead (scheduling, input preparation, sampling, launch)
is added, growing slightly with the number of sequences.

    t_lin  = smax(F_lin / (peak * e_c * f),  W      / (BW * e_m  * g(f)))
    t_attn = smax(F_attn / (peak * e_a * f), B_kv   / (BW * e_kv * g(f)))
    t_step = t_lin + t_attn + o_0 + o_1 * n_seqs
    smax(a, b) = (a^k + b^k)^(1/k),   g(f) = min(1, f / f_knee)

f is the SM clock as a fraction of its maximum (lowered by the power cap). Memory-bound
kernels only slow once the clock falls below f_knee, where the SMs can no longer issue
loads fast enough to keep HBM busy.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.sim.specs import GpuSpec, ModelSpec


@dataclass(frozen=True, slots=True)
class Calibration:
    """Achievable fractions of the datasheet roofs and host overheads. Fitted to the
    ML.ENERGY Llama-3.1-8B / H100 series (see bench/twin_calibration.py)."""

    eff_compute: float = 0.74  # GEMM tensor throughput / peak
    eff_mem: float = 0.88  # weight streaming bandwidth / peak
    eff_attn: float = 0.45  # attention (flash/paged) tensor throughput / peak (not fitted)
    eff_kv: float = 0.35  # paged KV-cache read bandwidth / peak (short contexts, 16-token blocks)
    smooth_k: float = 1.0  # smooth-max exponent: the fit chose 1 (no compute/memory overlap)
    overhead_s: float = 1.3e-3  # per-step host/launch overhead
    overhead_per_seq_s: float = 13.5e-6  # grows with the batch (sampling, bookkeeping)
    mem_clock_knee: float = 0.55  # SM clock fraction below which HBM stops saturating


@dataclass(slots=True)
class StepWork:
    """What one step computes: the batch's tokens and the bytes they read."""

    n_seqs: int = 0
    n_tokens: int = 0
    lin_flops: float = 0.0
    attn_flops: float = 0.0
    weight_bytes: float = 0.0
    kv_bytes: float = 0.0


@dataclass(slots=True)
class StepTimes:
    total_s: float
    gpu_s: float  # kernels running (linear + attention)
    compute_s: float  # tensor cores busy, at the step's clock
    compute_full_s: float  # the same work at the maximum clock
    memory_s: float  # HBM busy at its full achievable bandwidth
    overhead_s: float
    clock: float


def smax(a: float, b: float, k: float) -> float:
    if a <= 0.0:
        return b
    if b <= 0.0:
        return a
    hi = a if a > b else b
    lo = b if a > b else a
    return hi * (1.0 + (lo / hi) ** k) ** (1.0 / k)


class Roofline:
    def __init__(self, gpu: GpuSpec, model: ModelSpec, cal: Calibration) -> None:
        self.gpu = gpu
        self.model = model
        self.cal = cal
        self._flops_c = gpu.peak_flops * cal.eff_compute
        self._flops_a = gpu.peak_flops * cal.eff_attn
        self._bw_m = gpu.mem_bw_bps * cal.eff_mem
        self._bw_kv = gpu.mem_bw_bps * cal.eff_kv

    def decode_work(self, n_seqs: int, ctx_sum: int) -> StepWork:
        """`n_seqs` sequences each computing one token; `ctx_sum` = sum of their
        context lengths after the step (the KV each attends over)."""
        m = self.model
        return StepWork(
            n_seqs=n_seqs,
            n_tokens=n_seqs,
            lin_flops=2.0 * m.params * n_seqs,
            attn_flops=m.attn_flops_per_ctx_token * ctx_sum,
            weight_bytes=m.weight_bytes,
            kv_bytes=float(m.kv_bytes_per_token * ctx_sum),
        )

    def add_chunk(self, work: StepWork, start: int, n: int) -> None:
        """Add a sequence computing tokens [start, start+n) (a prefill chunk, or a
        decode token when n == 1) to the step's work."""
        m = self.model
        work.n_seqs += 1
        work.n_tokens += n
        work.lin_flops += 2.0 * m.params * n
        # Causal attention: token i attends over i+1 positions.
        work.attn_flops += m.attn_flops_per_ctx_token * (n * start + n * (n + 1) / 2.0)
        # Prior KV read once per chunk, new KV written once.
        work.kv_bytes += float(m.kv_bytes_per_token * (start + n))
        work.weight_bytes = m.weight_bytes

    def times(self, w: StepWork, clock: float = 1.0) -> StepTimes:
        c = self.cal
        g = min(1.0, clock / c.mem_clock_knee)
        tc_lin = w.lin_flops / self._flops_c
        tc_att = w.attn_flops / self._flops_a
        tm_lin = w.weight_bytes / self._bw_m
        tm_att = w.kv_bytes / self._bw_kv
        t_lin = smax(tc_lin / clock, tm_lin / g, c.smooth_k)
        t_att = smax(tc_att / clock, tm_att / g, c.smooth_k)
        oh = c.overhead_s + c.overhead_per_seq_s * w.n_seqs
        gpu = t_lin + t_att
        return StepTimes(
            total_s=gpu + oh,
            gpu_s=gpu,
            compute_s=(tc_lin + tc_att) / clock,
            compute_full_s=tc_lin + tc_att,
            memory_s=tm_lin + tm_att,
            overhead_s=oh,
            clock=clock,
        )
