"""Power of one step, and the clock the power cap allows.

Energy of a step at SM clock fraction f (times from `roofline.Roofline.times`):

    E = P_idle * t_step                              idle floor, always
      + P_gap * t_overhead                           host gaps: clocks up, SMs waiting
      + P_busy * (b0 + (1-b0) f^a) * t_gpu           kernels resident (clock tree, leakage)
      + P_comp * f^a * t_compute(f)                  tensor cores (t_compute ~ 1/f)
      + P_hbm * t_memory + P_msm * f^a * t_memory    HBM traffic, and the SM/L2 side of it

Dynamic power goes as f*V^2 and V tracks f in the DVFS range, hence f^a with a ~ 2.5.
Because compute time grows as 1/f, compute energy per FLOP falls as f^(a-1) under a
cap; HBM energy per byte does not change with the SM clock, which is why memory-bound
decode saves less energy (and loses less speed) when capped.

The cap: the average power of a step, E / t_step, rises monotonically with f; the
twin runs each step at the highest f in [f_min, 1] whose power fits under the cap
(like the GPU's power limiter, which holds the average just under the limit).
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.sim.roofline import Roofline, StepTimes, StepWork


@dataclass(frozen=True, slots=True)
class PowerCoefficients:
    """Watts above idle at full activity and maximum clock. Fitted for the H100;
    other GPUs scale them by (TDP - idle)."""

    gap_w: float = 40.0
    busy_w: float = 150.0
    busy_static_frac: float = 0.4
    compute_w: float = 700.0
    hbm_w: float = 180.0
    mem_sm_w: float = 120.0
    alpha: float = 2.5
    min_clock: float = 0.3
    limiter_margin: float = 0.985  # the limiter holds the average this far under the cap

    def scaled(self, factor: float) -> PowerCoefficients:
        return PowerCoefficients(
            gap_w=self.gap_w * factor,
            busy_w=self.busy_w * factor,
            busy_static_frac=self.busy_static_frac,
            compute_w=self.compute_w * factor,
            hbm_w=self.hbm_w * factor,
            mem_sm_w=self.mem_sm_w * factor,
            alpha=self.alpha,
            min_clock=self.min_clock,
            limiter_margin=self.limiter_margin,
        )


@dataclass(slots=True)
class StepPower:
    times: StepTimes
    energy_j: float

    @property
    def power_w(self) -> float:
        return self.energy_j / self.times.total_s

    @property
    def util(self) -> float:
        """Fraction of the step with a kernel running (what NVML calls utilization)."""
        return self.times.gpu_s / self.times.total_s


class PowerModel:
    def __init__(self, roofline: Roofline, coef: PowerCoefficients, idle_w: float) -> None:
        self.roofline = roofline
        self.coef = coef
        self.idle_w = idle_w

    def energy_j(self, t: StepTimes) -> float:
        c = self.coef
        fa = t.clock**c.alpha
        return (
            self.idle_w * t.total_s
            + c.gap_w * t.overhead_s
            + c.busy_w * (c.busy_static_frac + (1.0 - c.busy_static_frac) * fa) * t.gpu_s
            + c.compute_w * fa * t.compute_s
            + (c.hbm_w + c.mem_sm_w * fa) * t.memory_s
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
        lo, hi = lo_clock, 1.0
        best = low
        for _ in range(18):  # 2^-18 of the clock range: far finer than any effect
            mid = 0.5 * (lo + hi)
            p = self.at_clock(work, mid)
            if p.power_w <= limit:
                lo, best = mid, p
            else:
                hi = mid
        return best
