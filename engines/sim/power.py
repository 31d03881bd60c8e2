"""Power of one step, and the clock the power cap allows.

Energy of a step at SM clock fraction f (times from `roofline.Roofline.times`):

    E = P_idle * t_step                              idle floor, always
      + P_gap * t_overhead                           host gaps: clocks up, SMs waiting
      + P_busy * (b0 + (1-b0) phi(f)) * t_gpu        kernels resident (clock tree, leakage)
      + P_comp * phi(f) * t_compute(f)               tensor cores (t_compute ~ 1/f)
      + P_hbm * t_memory + P_msm * phi(f) * t_memory HBM traffic, and the SM/L2 side of it

    phi(f) = f * max(v_floor, f)^2

Dynamic power goes as f*V^2; V tracks f in the DVFS range down to a floor voltage,
below which only the frequency term is left (phi(1) = 1). Because compute time grows
as 1/f, compute energy per FLOP falls as phi(f)/f under a cap; HBM energy per byte does
not change with the SM clock, which is why memory-bound decode saves less energy (and
loses less speed) when capped.

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

    gap_w: float = 0.0  # the fit put host gaps at idle power
    busy_w: float = 100.0
    busy_static_frac: float = 0.4  # not fitted
    compute_w: float = 1450.0  # never reached: at 700 W the cap holds GEMMs near f ~ 0.7
    hbm_w: float = 120.0
    mem_sm_w: float = 250.0
    v_floor: float = 0.65  # voltage floor as a fraction of the voltage at max clock
    min_clock: float = 0.1  # ~200 MHz, the lowest H100 graphics clock
    limiter_margin: float = 0.985  # the limiter holds the average this far under the cap

    def scaled(self, factor: float) -> PowerCoefficients:
        return PowerCoefficients(
            gap_w=self.gap_w * factor,
            busy_w=self.busy_w * factor,
            busy_static_frac=self.busy_static_frac,
            compute_w=self.compute_w * factor,
            hbm_w=self.hbm_w * factor,
            mem_sm_w=self.mem_sm_w * factor,
            v_floor=self.v_floor,
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
        v = t.clock if t.clock > c.v_floor else c.v_floor
        fa = t.clock * v * v
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
