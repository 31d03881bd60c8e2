"""Step time of one engine iteration from a per-operator roofline, on one GPU of a
tensor-parallel group.

A transformer step runs, per layer, the linear layers (GEMMs whose weights stream from
HBM once per step), attention (which reads every scheduled sequence's KV cache) and,
with tensor parallelism over N GPUs, two all-reduces of the activations over NVLink.
Each GPU holds 1/N of the weights and of the KV heads and does 1/N of the FLOPs. Each
kind of kernel is limited by compute or memory, joined with a smooth maximum. Between
kernels the GPU waits a short gap (launch, tail, synchronisation; a fixed number of
kernels per layer), and each step has a host overhead (scheduling, input preparation,
sampling) growing with the number of sequences:

    t_lin  = smax(F_lin / (N peak e_c f),  W / (N BW e_m g(f)))
    t_attn = F_attn / (N peak e_a f) + (B_kv + n_seqs b L_half) / (N BW e_kv g(f))
    t_comm = 2 layers (lat_ar + 2 (N-1)/N x tokens x hidden x 2 B / (link_bw e_link))
    t_step = t_lin + t_attn + t_comm + layers x kernels x gap + host
    host   = o_0 + o_1 n_seqs - overlap x min(o_0 + o_1 n_seqs, t_lin + t_attn + t_comm)
    smax(a, b) = (a^k + b^k)^(1/k),   g(f) = min(1, f / f_knee)

Decode attention (paged / FlashAttention-style kernels) reads a sequence's KV of L
tokens (b bytes each) at an efficiency that grows with L: e_kv x L / (L + L_half). A
short context cannot fill the memory pipeline (a fixed cost per sequence and layer:
launching its blocks, loading the query, the split-K reduction); a long one streams at
close to the kernel's peak. Summed over the batch this is exactly the B_kv term plus
n_seqs x b x L_half above, so the step stays affine in the batch's context sum.

f is the SM clock as a fraction of its maximum (lowered by the power cap). Memory-bound
kernels only slow once the clock falls below f_knee, where the SMs can no longer issue
loads fast enough to keep HBM busy.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from engines.sim.specs import GpuSpec, ModelSpec


@dataclass(frozen=True, slots=True)
class Calibration:
    """Achievable fractions of the datasheet roofs, gaps and host overheads. Fitted to
    the ML.ENERGY H100 series (Llama-3.1-8B, Qwen3-8B, Llama-3.1-70B on 4 GPUs;
    bench/twin_fit.py); `wattflow calibrate` fits them to your own sessions."""

    eff_compute: float = 0.85  # GEMM tensor throughput / peak
    eff_mem: float = 0.93  # weight streaming bandwidth / peak
    eff_attn: float = 0.45  # attention (flash/paged) tensor throughput / peak (not fitted)
    eff_kv: float = 0.93  # paged KV read bandwidth / peak, long contexts
    kv_half_tokens: float = 1071.0  # context at which KV reads reach half of eff_kv
    smooth_k: float = 1.0  # linear layers' smooth-max exponent: 1 = no compute/memory overlap
    overhead_s: float = 1.54e-3  # per-step host overhead (scheduling, inputs, sampling)
    overhead_per_seq_s: float = 1.0e-6  # grows with the batch (sampling, bookkeeping)
    kernel_gap_s: float = 0.36e-6  # idle between two kernels of a layer (CUDA graphs)
    qk_norm_s: float = 27.4e-6  # a layer's q and k RMSNorm kernels (Qwen3), small and unfused
    allreduce_latency_s: float = 18.5e-6  # one small all-reduce over NVLink (custom kernel)
    eff_link: float = 0.384  # achieved NVLink bandwidth / peak for large all-reduces
    mem_clock_knee: float = 0.55  # SM clock fraction below which HBM stops saturating
    # Fraction of the host overhead hidden behind the GPU's work (an engine that prepares
    # step n+1 while step n runs). vLLM 0.11's fit chose none; `wattflow calibrate` fits
    # it for engines whose Python overhead overlaps their kernels.
    host_overlap: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


@dataclass(slots=True)
class StepWork:
    """What one step computes on the whole model (all GPUs of the group together)."""

    n_seqs: int = 0
    n_tokens: int = 0
    lin_flops: float = 0.0
    attn_flops: float = 0.0
    weight_bytes: float = 0.0
    kv_bytes: float = 0.0


@dataclass(slots=True)
class StepTimes:
    total_s: float
    gpu_s: float  # kernels running (linear + attention + all-reduce)
    compute_s: float  # tensor cores busy, at the step's clock
    compute_full_s: float  # the same work at the maximum clock
    memory_s: float  # HBM busy at its full achievable bandwidth
    overhead_s: float  # host overhead and gaps between kernels (GPU waiting)
    clock: float
    flops: float = 0.0  # per GPU
    hbm_bytes: float = 0.0  # per GPU
    link_bytes: float = 0.0  # per GPU, sent over NVLink
    comm_s: float = 0.0
    gaps_s: float = 0.0  # the part of overhead_s between a layer's kernels
    kv_bytes: float = 0.0  # per GPU, the part of hbm_bytes that attention reads
    n_seqs: int = 0


def smax(a: float, b: float, k: float) -> float:
    if a <= 0.0:
        return b
    if b <= 0.0:
        return a
    if k == 1.0:
        return a + b
    hi = a if a > b else b
    lo = b if a > b else a
    return hi * (1.0 + (lo / hi) ** k) ** (1.0 / k)


class Roofline:
    def __init__(self, gpu: GpuSpec, model: ModelSpec, cal: Calibration,
                 tensor_parallel_size: int = 1) -> None:
        self.gpu = gpu
        self.model = model
        self.cal = cal
        self.tp = tp = max(1, int(tensor_parallel_size))
        self._flops_c = gpu.peak_flops * cal.eff_compute * tp
        self._flops_a = gpu.peak_flops * cal.eff_attn * tp
        self._bw_m = gpu.mem_bw_bps * cal.eff_mem * tp
        self._bw_kv = gpu.mem_bw_bps * cal.eff_kv * tp
        self._lin_per_token = 2.0 * model.body_params
        self._head_per_seq = 2.0 * model.embed_params
        self._kv_seq_bytes = model.kv_bytes_per_token * cal.kv_half_tokens
        self._gaps_s = model.layers * (model.kernels_per_layer * cal.kernel_gap_s
                                       + (cal.qk_norm_s if model.qk_norm else 0.0))
        if tp > 1:
            # Two all-reduces a layer (after attention, after the MLP), ring algorithm:
            # each GPU sends 2 (N-1)/N of the activations.
            n_ar = 2 * model.layers
            self._ar_fixed_s = n_ar * cal.allreduce_latency_s
            self._ar_bytes_per_token = n_ar * 2.0 * (tp - 1) / tp * model.hidden \
                * model.dtype_bytes
            self._ar_s_per_token = self._ar_bytes_per_token / (gpu.link_bw_bps * cal.eff_link)
        else:
            self._ar_fixed_s = self._ar_bytes_per_token = self._ar_s_per_token = 0.0

    def decode_work(self, n_seqs: int, ctx_sum: int) -> StepWork:
        """`n_seqs` sequences each computing one token; `ctx_sum` = sum of their
        context lengths after the step (the KV each attends over)."""
        m = self.model
        return StepWork(
            n_seqs=n_seqs,
            n_tokens=n_seqs,
            lin_flops=(self._lin_per_token + self._head_per_seq) * n_seqs,
            attn_flops=m.attn_flops_per_ctx_token * ctx_sum,
            weight_bytes=m.streamed_weight_bytes,
            kv_bytes=float(m.kv_bytes_per_token * ctx_sum),
        )

    def add_chunk(self, work: StepWork, start: int, n: int) -> None:
        """Add a sequence computing tokens [start, start+n) (a prefill chunk, or a
        decode token when n == 1) to the step's work."""
        m = self.model
        work.n_seqs += 1
        work.n_tokens += n
        # Every token goes through the layers; one position per sequence is sampled.
        work.lin_flops += self._lin_per_token * n + self._head_per_seq
        # Causal attention: token i attends over i+1 positions.
        work.attn_flops += m.attn_flops_per_ctx_token * (n * start + n * (n + 1) / 2.0)
        # Prior KV read once per chunk, new KV written once.
        work.kv_bytes += float(m.kv_bytes_per_token * (start + n))
        work.weight_bytes = m.streamed_weight_bytes

    def times(self, w: StepWork, clock: float = 1.0) -> StepTimes:
        c = self.cal
        g = min(1.0, clock / c.mem_clock_knee)
        kv_bytes = w.kv_bytes + w.n_seqs * self._kv_seq_bytes
        tc_lin = w.lin_flops / self._flops_c
        tc_att = w.attn_flops / self._flops_a
        tm_lin = w.weight_bytes / self._bw_m
        tm_att = kv_bytes / self._bw_kv
        t_lin = smax(tc_lin / clock, tm_lin / g, c.smooth_k)
        # Attention's compute and KV reads add (one of them is small in every step: a
        # decode reads, a prefill computes), which keeps a decode run affine in its
        # context sum (engine.py prices a run of decode steps from two evaluations).
        t_att = smax(tc_att / clock, tm_att / g, 1.0)
        t_comm = 0.0
        link = 0.0
        if self.tp > 1 and w.n_tokens:
            t_comm = self._ar_fixed_s + self._ar_s_per_token * w.n_tokens
            link = self._ar_bytes_per_token * w.n_tokens
        host = c.overhead_s + c.overhead_per_seq_s * w.n_seqs
        gpu = t_lin + t_att + t_comm
        if c.host_overlap > 0.0:
            host -= c.host_overlap * (host if host < gpu else gpu)
        oh = host + self._gaps_s
        tp = self.tp
        return StepTimes(
            total_s=gpu + oh,
            gpu_s=gpu,
            compute_s=(tc_lin + tc_att) / clock,
            compute_full_s=tc_lin + tc_att,
            memory_s=tm_lin + tm_att,
            overhead_s=oh,
            clock=clock,
            flops=(w.lin_flops + w.attn_flops) / tp,
            hbm_bytes=(w.weight_bytes + w.kv_bytes) / tp,
            link_bytes=link,
            comm_s=t_comm,
            gaps_s=self._gaps_s,
            kv_bytes=w.kv_bytes / tp,
            n_seqs=w.n_seqs,
        )
