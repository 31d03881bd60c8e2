"""Power of one step on one GPU, and the clock the power cap allows.

The energy of a step comes from the hardware's activity in it, not from one model's
timing: FLOPs on the tensor cores, bytes through HBM, bytes over NVLink, and the time
kernels are resident. At SM clock fraction f (times and counts from
`roofline.Roofline.times`, per GPU):

    E = P_idle * t_step                              idle floor, always
      + P_gap * (t_gaps + t_comm)                    host overhead, gaps, all-reduce waits
      + occ P_busy * (b0 + (1-b0) phi(f)) * t_kern   compute kernels resident (clock tree)
      + e_flop * v(f)^2 * FLOPs                      tensor-core work
      + (e_hbm + e_sm * v(f)^2) * HBM bytes          DRAM, and the SM/L2 side of a load
      + occ e_attn * v(f)^2 * KV bytes               attention's SM work per KV byte
                                                     (scores, softmax, paging)
    occ = n_seqs / (n_seqs + n_half)  (1 when n_half = 0)  SMs a small batch leaves idle
      + e_link * NVLink bytes                        all-reduce traffic

    v(f) = max(v_floor, f),   phi(f) = f v(f)^2

Dynamic energy per operation goes as V^2; V tracks f in the DVFS range down to a floor
voltage. A compute-bound step at a lower clock takes longer but spends less per FLOP;
HBM energy per byte does not change with the SM clock, which is why memory-bound decode
saves less energy (and loses less speed) when capped. Two models with the same weights
but more kernels a step (Qwen3's QK-norm, more layers) draw less average power: the
extra time is gaps, not activity.

The cap: the average power of a step, E / t_step, rises monotonically with f; the
twin runs each step at the highest f in [f_min, 1] whose power fits under the cap
(like the GPU's power limiter, which holds the average just under the limit).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from engines.sim.roofline import Roofline, StepTimes, StepWork


@dataclass(frozen=True, slots=True)
class PowerCoefficients:
    """Watts above idle, and energy per unit of activity at the maximum clock. Fitted
    for the H100 (bench/twin_fit.py); other GPUs scale them by (TDP - idle)."""

    gap_w: float = 0.0  # GPU waiting on the host or between kernels
    busy_w: float = 400.0  # kernels resident, at f = 1
    busy_static_frac: float = 0.4  # not fitted
    flop_pj: float = 0.81  # pJ per FLOP (bf16 tensor core, operands through the SM)
    hbm_pj_per_byte: float = 17.3  # DRAM side of one byte
    sm_pj_per_byte: float = 18.2  # SM/L2 side of one byte loaded, scales with V^2
    link_pj_per_byte: float = 0.0  # NVLink, per byte sent
    attn_pj_per_byte: float = 73.0  # attention's SM work per KV byte read, scales with V^2
    # Sequences at which a step's kernels fill half the SMs: with fewer, the resident
    # kernels and attention's SM work draw proportionally less (n / (n + this)). 0: the
    # batch always fills the GPU (vLLM's fit); `wattflow calibrate` fits it for engines
    # and models whose small batches leave SMs idle.
    occupancy_half_seqs: float = 0.0
    v_floor: float = 0.65  # voltage floor as a fraction of the voltage at max clock
    min_clock: float = 0.1  # ~200 MHz, the lowest H100 graphics clock
    limiter_margin: float = 0.985  # the limiter holds the average this far under the cap

    def scaled(self, factor: float) -> PowerCoefficients:
        return PowerCoefficients(
            gap_w=self.gap_w * factor,
            busy_w=self.busy_w * factor,
            busy_static_frac=self.busy_static_frac,
            flop_pj=self.flop_pj * factor,
            hbm_pj_per_byte=self.hbm_pj_per_byte * factor,
            sm_pj_per_byte=self.sm_pj_per_byte * factor,
            link_pj_per_byte=self.link_pj_per_byte * factor,
            attn_pj_per_byte=self.attn_pj_per_byte * factor,
            occupancy_half_seqs=self.occupancy_half_seqs,
            v_floor=self.v_floor,
            min_clock=self.min_clock,
            limiter_margin=self.limiter_margin,
        )

    def to_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


@dataclass(slots=True)
class StepPower:
    times: StepTimes
    energy_j: float

    @property
    def power_w(self) -> float:
        return self.energy_j / self.times.total_s

    @property
    def util(self) -> float:
        """Fraction of the step with a kernel running (what NVML calls utilization);
        the short gaps between a layer's kernels count as busy, as NVML sees them."""
        t = self.times
        return min(1.0, (t.gpu_s + t.gaps_s) / t.total_s)


class PowerModel:
    def __init__(self, roofline: Roofline, coef: PowerCoefficients, idle_w: float) -> None:
        self.roofline = roofline
        self.coef = coef
        self.idle_w = idle_w
        self._flop_j = coef.flop_pj * 1e-12
        self._hbm_j = coef.hbm_pj_per_byte * 1e-12
        self._sm_j = coef.sm_pj_per_byte * 1e-12
        self._link_j = coef.link_pj_per_byte * 1e-12
        self._attn_j = coef.attn_pj_per_byte * 1e-12

    def energy_j(self, t: StepTimes) -> float:
        c = self.coef
        v = t.clock if t.clock > c.v_floor else c.v_floor
        v2 = v * v
        fa = t.clock * v2
        occ = 1.0
        if c.occupancy_half_seqs > 0.0:
            occ = t.n_seqs / (t.n_seqs + c.occupancy_half_seqs)
        return (
            self.idle_w * t.total_s
            + c.gap_w * (t.overhead_s + t.comm_s)
            + occ * c.busy_w * (c.busy_static_frac + (1.0 - c.busy_static_frac) * fa)
            * (t.gpu_s - t.comm_s)
            + self._flop_j * v2 * t.flops
            + (self._hbm_j + self._sm_j * v2) * t.hbm_bytes
            + occ * self._attn_j * v2 * t.kv_bytes
            + self._link_j * t.link_bytes
        )

    def at_clock(self, work: StepWork, clock: float) -> StepPower:
        t = self.roofline.times(work, clock)
        return StepPower(t, self.energy_j(t))

    def solve(self, work: StepWork, cap_w: float) -> StepPower:
        """The step at the highest clock whose average power fits under `cap_w`."""
        full = self.at_clock(work, 1.0)
        limit = cap_w * self.coef.limiter_margin
        if full.power_w <= limit:
            return full
        lo_clock = self.coef.min_clock
        low = self.at_clock(work, lo_clock)
        if low.power_w >= limit:
            return low  # the cap cannot be met; the GPU sits at its lowest clock
        # Illinois regula falsi on P(f) - limit (smooth and increasing): a handful of
        # evaluations instead of a bisection's twenty; always keeps a feasible point.
        lo, hi = lo_clock, 1.0
        g_lo, g_hi = low.power_w - limit, full.power_w - limit
        best = low
        side = 0
        for _ in range(30):
            mid = (lo * g_hi - hi * g_lo) / (g_hi - g_lo)
            p = self.at_clock(work, mid)
            g = p.power_w - limit
            if g <= 0.0:
                lo, g_lo, best = mid, g, p
                if -g <= 1e-4 * limit:
                    break
                if side == -1:
                    g_hi *= 0.5
                side = -1
            else:
                hi, g_hi = mid, g
                if side == 1:
                    g_lo *= 0.5
                side = 1
            if hi - lo < 1e-6:
                break
        return best
