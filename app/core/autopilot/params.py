"""Every parameter of the autopilot's method in one place, and the user's bounds.

The defaults follow from what the measurements need, not from a benchmark:
- an epoch must hold enough finished requests for a p90 (`min_requests` = 20 puts two
  samples above the 90th percentile) and must start after the GPU's power readings have
  settled on the new setting (NVML's power average lags ~1 s; a cap's effect shows
  within a few samples): `settle_s`;
- a move is kept only if it saves more than J/token's run-to-run noise (`min_gain`), and
  J/token is trusted only when its uncertainty over the epoch's parts is small
  (`max_noise`);
- the power cap moves by `cap_step_w`, never sooner than one settle plus one epoch after
  the last change, so each step is measured on settled readings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from app.core import knobs as knobmod
from app.core.autopilot.objective import AutopilotError

#: The knobs the autopilot may turn. max_num_seqs restarts the engine (a drain): only
#: when the user names it in the bounds.
DEFAULT_KNOBS = ("power_cap", "batch_limit")
ALLOWED_KNOBS = ("power_cap", "batch_limit", "max_num_seqs")


@dataclass(slots=True)
class AutopilotParams:
    epoch_s: float = 30.0  # one measurement per setting, after settling
    settle_s: float = 10.0  # after a change, before measuring
    max_epoch_s: float = 120.0  # an epoch too noisy or too thin is extended up to this
    min_requests: int = 20  # finished requests for a quantile to be judged
    min_violation_requests: int = 5  # enough to call a violation early (safety first)
    # An epoch meets a target when its quantile is at most (1 - safety) x the limit, the
    # safety being z x the scatter of one `window_s` window's quantile (measured, at
    # least `safety`, at most `max_safety`): a setting right at the limit would miss it in
    # every other window.
    safety: float = 0.02
    max_safety: float = 0.30
    safety_z: float = 1.65  # one-sided 95%
    window_s: float = 30.0
    margin: float = 0.10  # a target is met "with headroom" below (1 - margin) x limit
    min_gain: float = 0.02  # a move must save this fraction of J/token to be kept
    max_noise: float = 0.05  # an epoch is extended (up to max_epoch_s) until J/token's
    # relative uncertainty (95% half-width) is this small...
    noise_limit: float = 0.15  # ...and beyond this, even then, the autopilot holds still
    noise_parts: int = 10  # parts of an epoch for the power-rate fit (3 s each)
    violation_window_s: float = 10.0  # an early violation is judged on this much
    cap_step_w: float = 50.0
    far_over: float = 1.25  # a violation this far over its limit backs off two steps
    prior_met_share: float = 0.95  # a sweep's setting met the objective in this share
    # of its `window_s` windows (after its first minute): --autopilot-prior
    load_change: float = 0.25  # arrival-rate change that makes old measurements stale
    reexplore_s: float = 600.0  # measurements older than this are forgotten...
    infeasible_s: float = 600.0  # ...and a setting that violated is not tried for this
    # long, doubled at each violation there (re-trying costs a window or two)
    good_epochs: int = 19  # epochs met in a row before one violation: a setting that
    # meets the objective in 95% of windows, caught by a burst...
    brief_ban_s: float = 300.0  # ...left alone this long only (not infeasible_s)
    typical_load: float = 0.9  # a lower cap is tried only after an epoch whose token
    # rate is at least this share of the recent epochs' median (not in a lull); backing
    # off trusts a setting that met the objective at this share of the load now
    min_load_epochs: int = 4  # epochs of load seen before the first lower cap is tried
    override_hold_s: float = 300.0  # after the user turns a knob, hands off this long
    tick_s: float = 1.0  # how often the controller looks
    batch_binds: float = 0.10  # share of TTFT spent waiting for admission: the limit binds
    drain_s: float = 100.0  # after a violation, requests waiting for admission are the
    # queue it left (no larger batch tried on them): about three epochs
    backlog_growth: int = 12  # requests piling up over an epoch (Measurement.waiting_grows):
    # the setting cannot keep up
    knobs: tuple[str, ...] = DEFAULT_KNOBS
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)

    def check(self) -> None:
        for name in ("epoch_s", "settle_s", "max_epoch_s", "cap_step_w", "tick_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise AutopilotError(f"autopilot {name} must be more than 0, got {v!r}")
        if self.max_epoch_s < self.epoch_s:
            raise AutopilotError("autopilot max_epoch_s must be at least epoch_s")
        for k in self.knobs:
            if k not in ALLOWED_KNOBS:
                raise AutopilotError(f"the autopilot cannot turn {k} "
                                     f"(it turns {', '.join(ALLOWED_KNOBS)})")


def parse_bound(text: str) -> tuple[str, tuple[float, float]]:
    """`power_cap=300..700` (or `300-700`, `300:700`) -> ("power_cap", (300, 700))."""
    key, eq, rng = text.partition("=")
    if not eq:
        raise AutopilotError(f"autopilot bound {text!r}: expected KNOB=LO..HI, "
                             "e.g. power_cap=300..700")
    try:
        name = knobmod.resolve(key)
    except knobmod.KnobError as exc:
        raise AutopilotError(f"autopilot bound {text!r}: {exc}") from None
    if name not in ALLOWED_KNOBS:
        raise AutopilotError(f"autopilot bound {text!r}: the autopilot turns "
                             f"{', '.join(ALLOWED_KNOBS)}, not {name}")
    for sep in ("..", ":", "-"):
        lo_t, found, hi_t = rng.partition(sep)
        if found:
            break
    else:
        raise AutopilotError(f"autopilot bound {text!r}: expected LO..HI")
    try:
        lo = knobmod.parse_value(name, lo_t)
        hi = knobmod.parse_value(name, hi_t)
    except knobmod.KnobError as exc:
        raise AutopilotError(f"autopilot bound {text!r}: {exc}") from None
    if lo is None or hi is None or lo > hi:
        raise AutopilotError(f"autopilot bound {text!r}: LO must be a value at most HI")
    return name, (lo, hi)


def params_from(bounds: list[str] | None = None) -> AutopilotParams:
    """Parameters with the user's bounds; naming max_num_seqs adds it to the knobs."""
    p = AutopilotParams()
    for text in bounds or []:
        name, rng = parse_bound(text)
        p.bounds[name] = rng
    if "max_num_seqs" in p.bounds:
        p.knobs = (*p.knobs, "max_num_seqs")
    p.check()
    return p
