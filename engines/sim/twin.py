"""The simulated GPU's state: power cap, clock, and an exact energy counter.

The scheduler plans each engine step with `plan_step`, which picks the clock the
power cap allows (power.PowerModel.solve) and returns the step's duration and
average power, then records the step as a segment [t0, t1) of constant power on the
twin's timeline. Outside segments the GPU idles at `idle_w`. The energy counter is
the exact integral of that piecewise-constant power, so a reading inside a step
interpolates linearly. Steps may be recorded ahead of time (the scheduler sleeps
through several decode steps at once) and `truncate` withdraws planned steps when
something changes (a new arrival, a new cap).

With tensor parallelism over N GPUs the twin simulates one GPU of the group: every GPU
runs the same step on 1/N of the weights and KV heads, so the timeline, the power and
the energy counter are per GPU and the same for each (`n_gpus` says how many there
are). Each GPU has its own power limit; the group runs in lock step, so the lowest
limit sets the clock of all of them.

Temperature follows power through one thermal time constant:
    T_ss = T_ambient + R_th * P,   dT/dt = (T_ss - T) / tau.

The full model (roofline, power, scheduler, calibration) is described in
engines/sim/README.md.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from engines.sim.power import PowerCoefficients, PowerModel, StepPower
from engines.sim.roofline import Calibration, Roofline, StepWork
from engines.sim.specs import GpuSpec, ModelSpec

MIB = 1024**2

# Fitted to the ML.ENERGY H100 series by bench/twin_fit.py.
H100_CALIBRATION = Calibration()
H100_POWER = PowerCoefficients()

_AMBIENT_C = 30.0
_THERMAL_TAU_S = 20.0
_CUDA_CONTEXT_MIB = 500.0
_HISTORY_S = 5.0  # timeline kept behind the newest query (for 1 s averages)


@dataclass(slots=True)
class Segment:
    t0: float
    t1: float
    power_w: float
    clock: float  # SM clock fraction
    util: float  # fraction of the segment with a kernel running
    energy_end_j: float  # counter value at t1


class GpuTwin:
    def __init__(
        self,
        gpu: GpuSpec,
        model: ModelSpec,
        *,
        calibration: Calibration | None = None,
        power: PowerCoefficients | None = None,
        tensor_parallel_size: int = 1,
    ) -> None:
        self.gpu = gpu
        self.model = model
        if tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be at least 1, not "
                             f"{tensor_parallel_size}")
        self.n_gpus = int(tensor_parallel_size)
        if power is None:
            # The H100 fit, scaled by each GPU's dynamic range (TDP above idle).
            ref = 700.0 - 75.0
            power = H100_POWER.scaled((gpu.tdp_w - gpu.idle_w) / ref)
        self.calibration = calibration or H100_CALIBRATION
        self.roofline = Roofline(gpu, model, self.calibration, self.n_gpus)
        self.power = PowerModel(self.roofline, power, gpu.idle_w)
        self.idle_w = gpu.idle_w
        self.power_limits_w = [gpu.tdp_w] * self.n_gpus
        self.power_limit_range_w = (gpu.min_power_limit_w, gpu.tdp_w)
        self.mem_used_mib = _CUDA_CONTEXT_MIB
        # Lists, not deques: the readings bisect them, and `prune` drops the old
        # history in one slice deletion.
        self._segs: list[Segment] = []
        # Each segment's t1, beside it: energy_j bisects these without a key function
        # (three readings per meter sample, 36,000 samples an hour).
        self._ends: list[float] = []
        self._base_t = 0.0  # energy counter known exactly here...
        self._base_j = 0.0  # ...with this value
        self._listeners: list[Callable[[], None]] = []
        self._decode_prices: dict[int, tuple[float, float, float, float, float, float]] = {}
        self._temp_c = _AMBIENT_C + 0.02 * gpu.idle_w
        self._temp_t = 0.0
        self._temp_e = 0.0

    # ---- power cap ----------------------------------------------------------------

    def on_change(self, fn: Callable[[], None]) -> None:
        """Called when the cap changes so that planned steps are re-planned."""
        self._listeners.append(fn)

    @property
    def power_limit_w(self) -> float:
        """The limit that binds: the group runs in lock step at its lowest GPU's pace."""
        return min(self.power_limits_w)

    @power_limit_w.setter
    def power_limit_w(self, watts: float) -> None:
        # Kept for callers of the one-GPU twin: every GPU, without range check or
        # notification (set_power_limit does both).
        self.power_limits_w = [float(watts)] * self.n_gpus

    def set_power_limit(self, watts: float, gpu: int | None = None) -> None:
        """Set one GPU's limit (`gpu`, 0-based), or every GPU's (None)."""
        lo, hi = self.power_limit_range_w
        if not lo <= watts <= hi:
            raise ValueError(f"power limit {watts:g} W is outside {lo:g}-{hi:g} W")
        if gpu is None:
            self.power_limits_w = [float(watts)] * self.n_gpus
        elif 0 <= gpu < self.n_gpus:
            self.power_limits_w[gpu] = float(watts)
        else:
            raise ValueError(f"no simulated GPU {gpu} (there are {self.n_gpus})")
        for fn in self._listeners:
            fn()

    # ---- steps --------------------------------------------------------------------

    def plan_step(self, work: StepWork, clock: float | None = None) -> StepPower:
        """Time and power of one step: at `clock` if given, else at the highest
        clock the cap allows."""
        if clock is not None:
            return self.power.at_clock(work, clock)
        return self.power.solve(work, self.power_limit_w)

    def decode_price(self, n_seqs: int
                     ) -> tuple[float, float, float, float, float, float] | None:
        """A pure-decode step of `n_seqs` sequences at the maximum clock, as affine
        functions of its context sum c: (t0, dt, e0, de, b0, db) with time t0 + dt c,
        energy e0 + de c and busy time (kernels and their gaps) b0 + db c. Cached per
        batch size: the engine prices most steps with it. None when the step is not
        affine in c (host overhead hidden behind a GPU time that grows with c)."""
        if self.calibration.host_overlap > 0.0:
            return None
        price = self._decode_prices.get(n_seqs)
        if price is None:
            rf, pm = self.roofline, self.power
            unit = 1 << 20  # a context sum big enough that the slope is not rounding
            a = pm.at_clock(rf.decode_work(n_seqs, 0), 1.0)
            b = pm.at_clock(rf.decode_work(n_seqs, unit), 1.0)
            ta, tb = a.times, b.times
            price = (ta.total_s, (tb.total_s - ta.total_s) / unit,
                     a.energy_j, (b.energy_j - a.energy_j) / unit,
                     ta.gpu_s + ta.gaps_s, (tb.gpu_s + tb.gaps_s - ta.gpu_s - ta.gaps_s) / unit)
            if len(self._decode_prices) > 4096:
                self._decode_prices.clear()
            self._decode_prices[n_seqs] = price
        return price

    def record(self, t0: float, sp: StepPower) -> float:
        """Put a planned step on the timeline from `t0`; returns its end time."""
        t1 = t0 + sp.times.total_s
        self.record_segment(t0, t1, sp.power_w, sp.times.clock, sp.util)
        return t1

    def record_segment(self, t0: float, t1: float, power_w: float, clock: float,
                       util: float) -> None:
        last_t, last_j = self._last_point()
        t0 = max(t0, last_t)  # float noise must not create overlaps
        if t1 <= t0:
            return
        e0 = last_j + self.idle_w * (t0 - last_t)
        self._segs.append(Segment(t0, t1, power_w, clock, util, e0 + power_w * (t1 - t0)))
        self._ends.append(t1)

    def record_steps(self, t0: float, ends: list[float], energies_j: list[float],
                     clock: float, util: float) -> None:
        """Record back-to-back steps from `t0` (fast path for decode runs)."""
        last_t, e = self._last_point()
        t0 = max(t0, last_t)
        e += self.idle_w * (t0 - last_t)
        append, append_end = self._segs.append, self._ends.append
        for t1, ej in zip(ends, energies_j, strict=True):
            if t1 <= t0:
                continue
            e += ej
            append(Segment(t0, t1, ej / (t1 - t0), clock, util, e))
            append_end(t1)
            t0 = t1

    def truncate(self, t: float) -> None:
        """Withdraw planned steps that start at or after `t`."""
        while self._segs and self._segs[-1].t0 >= t - 1e-12:
            self._segs.pop()
            self._ends.pop()

    def timeline_end(self) -> float:
        """Where the recorded (or planned) GPU activity ends."""
        return self._last_point()[0]

    def _last_point(self) -> tuple[float, float]:
        if self._segs:
            s = self._segs[-1]
            return s.t1, s.energy_end_j
        return self._base_t, self._base_j

    # ---- readings -----------------------------------------------------------------

    def energy_j(self, t: float) -> float:
        """The cumulative energy counter at `t` (exact; linear inside a step)."""
        if t <= self._base_t:
            # Older than the kept history: only reachable with a non-monotonic clock.
            return self._base_j - self.idle_w * (self._base_t - t) if t > 0 else 0.0
        segs = self._segs
        # The first segment ending after t (the timeline is ordered): a bisection, as a
        # one-second average reaches back over dozens of decode steps.
        i = bisect_right(self._ends, t)
        if i < len(segs):
            s = segs[i]
            if s.t0 < t:
                return s.energy_end_j - s.power_w * (s.t1 - t)
        if i == 0:
            return self._base_j + self.idle_w * (t - self._base_t)
        s = segs[i - 1]
        return s.energy_end_j + self.idle_w * (t - s.t1)

    def energy_mj(self, t: float) -> float:
        return 1000.0 * self.energy_j(t)

    def at(self, t: float) -> Segment | None:
        """The step running at `t`, if any."""
        # The first segment ending after t (bisection: steps planned ahead of t, a
        # decode run's worth, are not scanned); t may fall in the idle gap before it.
        i = bisect_right(self._ends, t)
        if i < len(self._segs):
            s = self._segs[i]
            if s.t0 <= t:
                return s
        return None

    def power_w(self, t: float) -> float:
        s = self.at(t)
        return s.power_w if s else self.idle_w

    def busy_fraction(self, t0: float, t1: float) -> float:
        """Fraction of [t0, t1) with a kernel running (NVML utilization)."""
        if t1 <= t0:
            s = self.at(t1)
            return s.util if s else 0.0
        busy = 0.0
        segs = self._segs
        # Newest first, from the first segment ending at or after t1: those after it,
        # planned ahead, start after t1.
        ahead = len(segs) - 1 - bisect_left(self._ends, t1)
        for s in islice(reversed(segs), ahead if ahead > 0 else 0, None):
            if s.t1 <= t0:
                break
            overlap = (s.t1 if s.t1 < t1 else t1) - (s.t0 if s.t0 > t0 else t0)
            if overlap > 0:
                busy += overlap * s.util
        return min(1.0, busy / (t1 - t0))

    def power_and_clock(self, t: float) -> tuple[float, float]:
        """`power_w(t)` and `clock_mhz(t)` from one look-up (the meter reads both)."""
        s = self.at(t)
        if s is None:
            return self.idle_w, self._clock_between_steps(t, 0.1)
        return s.power_w, s.clock * self.gpu.max_clock_mhz

    def clock_mhz(self, t: float, window_s: float = 0.1) -> float:
        s = self.at(t)
        if s is None:
            return self._clock_between_steps(t, window_s)
        return s.clock * self.gpu.max_clock_mhz

    def _clock_between_steps(self, t: float, window_s: float) -> float:
        # Boost clock persists briefly after work; a long idle drops it.
        recent = self.busy_fraction(t - window_s, t) > 0
        return self.gpu.max_clock_mhz if recent else self.gpu.idle_clock_mhz

    def temperature_c(self, t: float, energy_j: float | None = None) -> float:
        """First-order thermal response to the average power since the last reading
        (`energy_j`: the counter at `t`, when already read)."""
        dt = t - self._temp_t
        if dt <= 0:
            return self._temp_c
        e = self.energy_j(t) if energy_j is None else energy_j
        p = (e - self._temp_e) / dt
        steady = _AMBIENT_C + (60.0 / self.gpu.tdp_w) * p
        self._temp_c = steady + (self._temp_c - steady) * math.exp(-dt / _THERMAL_TAU_S)
        self._temp_t, self._temp_e = t, e
        return self._temp_c

    def prune(self, t: float) -> None:
        """Forget timeline older than `t` - history (readings before it stay exact
        through the base point)."""
        self.temperature_c(t)  # the engine prunes about once a second: keeps heat exact
        keep = t - _HISTORY_S
        old = bisect_left(self._ends, keep)  # the segments that end before `keep`
        if old:
            s = self._segs[old - 1]
            self._base_t, self._base_j = s.t1, s.energy_end_j
            del self._segs[:old]
            del self._ends[:old]
