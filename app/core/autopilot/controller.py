"""The autopilot's controller: a subscriber of the event stream and a task that acts
only through the runner's one knob path, so every decision is a `knob` event with source
`autopilot` and a reason, and every state change an `autopilot` event.

Safety rules, each enforced here whatever the policy says:
- it never leaves the user's bounds (the grid is built inside them, and inside the
  bounds the run allows);
- after a violation it moves toward performance at once, without waiting for the epoch
  to end (policy.early_violation), and again after each settle until the objective holds
  or nothing is left to turn;
- it never changes the power cap sooner than `settle_s` after the last change, and
  measures only after the readings settle;
- it holds still when the measurements are too thin or too noisy (the policy);
- a knob turned by anyone else (a key press, `k`, `--at`) hands the controls back for
  `override_hold_s`: the autopilot pauses and then resumes from the user's setting.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Protocol

from app.core import knobs as knobmod
from app.core.autopilot.measure import EpochMeter
from app.core.autopilot.objective import Objective
from app.core.autopilot.params import AutopilotParams
from app.core.autopilot.policy import (
    BACKING_OFF,
    MEASURING,
    Cell,
    Decision,
    Grid,
    Policy,
    cell_of,
)
from app.core.autopilot.prior import Prior
from app.core.autopilot.windows import WindowLedger
from app.core.events import AutopilotEvent, Event, KnobEvent

SOURCE = "autopilot"
OFF = "off"
PAUSED = "paused"
SETTLING = "settling"


class KnobPath(Protocol):
    """What the autopilot acts on: the runner's knob path."""

    knobs: dict[str, float | None]

    def set_knob(self, name: str, value: float | None, source: str = "cli",
                 reason: str | None = None) -> None: ...

    def knob_bounds(self, name: str) -> tuple[float, float] | None: ...

    def knob_available(self, name: str) -> str | None: ...

    def limit_in_force(self, name: str) -> float | None: ...


def build_grid(path: KnobPath, params: AutopilotParams) -> tuple[Grid, list[str]]:
    """The values each knob may take here: inside the user's bounds, the run's bounds
    and the spec's. Returns the grid and a note per knob left out (and why)."""
    values: dict[str, list[float]] = {}
    notes: list[str] = []
    for name in params.knobs:
        why = path.knob_available(name)
        if why is not None:
            notes.append(f"autopilot leaves {name} alone: {why}")
            continue
        spec = knobmod.spec(name)
        lo, hi = path.knob_bounds(name) or (spec.minimum, spec.maximum)
        if name in ("batch_limit", "max_num_seqs") and name not in params.bounds:
            hi = min(hi, 1024.0)  # beyond this no engine here batches usefully
        ulo, uhi = params.bounds.get(name, (lo, hi))
        lo, hi = max(lo, ulo), min(hi, uhi)
        if lo > hi:
            notes.append(f"autopilot leaves {name} alone: its bounds "
                         f"{params.bounds[name][0]:g}..{params.bounds[name][1]:g} are outside "
                         f"what this run allows ({spec.range_text(path.knob_bounds(name))})")
            continue
        if name == "power_cap":
            n = math.floor((hi - lo) / params.cap_step_w + 1e-9)
            vals = sorted({hi - i * params.cap_step_w for i in range(n + 1)} | {lo})
        else:
            # Powers of two inside the bounds, and the bounds themselves.
            ints = {int(lo), int(hi)}
            k = 1
            while k < hi:
                if k > lo:
                    ints.add(k)
                k *= 2
            vals = [float(x) for x in sorted(ints)]
        values[name] = vals
    return Grid(values), notes


def cell_in(grid: Grid, path: KnobPath, knobs: dict[str, float] | None = None) -> Cell:
    """The grid cell of `knobs` (the values in force for the knobs it leaves out, else
    the limit in force, else the grid's top), each snapped to the grid."""
    vals: dict[str, float] = {}
    for name in grid.values:
        v = (knobs or {}).get(name)
        if v is None:
            v = path.knobs.get(name)
        if v is None:
            v = path.limit_in_force(name)
        vals[name] = grid.snap(name, v if v is not None else grid.values[name][-1])
    return cell_of(vals)


def warm_start(policy: Policy, grid: Grid, prior: Prior, path: KnobPath) -> str:
    """The prior's best setting of each load (snapped to the grid), remembered by the
    policy as met there; returns a note for the first event."""
    def cell(knobs: dict[str, float]) -> Cell:
        return cell_in(grid, path, knobs)

    loads = prior.loads(dict(path.knobs), policy.p.min_gain)
    for load, (best, missed) in loads.items():
        # What missed there is left alone as a setting that violated at this load would
        # be (10 minutes, then tried live).
        policy.remember(load, cell(best.knobs), [cell(p.knobs) for p in missed],
                        best.tokens_per_s)
    shown = ", ".join(
        ("closed loop" if load is None else f"{load:g}/s") + ": " + " ".join(
            f"{k}={v:g}" for k, v in sorted(best.knobs.items()) if k in grid.values)
        for load, (best, _) in sorted(loads.items(), key=lambda kv: kv[0] or 0.0))
    return (f"warm start from {len(prior.points)} sweep sessions, best that met the "
            f"objective: {shown or 'none'}")


class Autopilot:
    def __init__(self, path: KnobPath, objective: Objective, params: AutopilotParams,
                 publish: Callable[[Event], None], now: Callable[[], float],
                 prior: Prior | None = None) -> None:
        self.path = path
        self.objective = objective
        self.params = params
        self._publish = publish
        self._now = now
        self.meter = EpochMeter(objective)
        self.ledger = WindowLedger(objective, params.window_s)
        self.grid, self.notes = build_grid(path, params)
        self.policy = Policy(objective, self.grid, params)
        if prior is not None:
            self.notes.append(warm_start(self.policy, self.grid, prior, path))
        self.enabled = True
        self.state = SETTLING
        self.reason = "starting: waiting for the readings to settle"
        self._settle_until = 0.0
        self._epoch_start: float | None = None
        self._epoch_due = 0.0
        self._paused_until: float | None = None
        self._pending: dict[str, float] = {}  # asked, not yet in force (engine restarts)
        self._pending_since = 0.0
        self._last_cap_change = -math.inf
        # After a violation nothing could answer, the next look waits a whole epoch (one
        # decision, not one a second, while the objective cannot be met).
        self._quiet_until = -math.inf
        self.decisions = 0
        # The epoch after a back-off judges latency on the requests served under the new
        # setting only (what the one before left behind drains in it).
        self._after_backoff = False

    # -- the event stream ------------------------------------------------------------
    def on_event(self, ev: Event) -> None:
        self.meter.on_event(ev)
        self.ledger.on_event(ev)
        if (isinstance(ev, KnobEvent) and ev.source not in (SOURCE, "start")
                and ev.is_change and ev.knob in self.grid.values and self.enabled):
            # The user's hand on a knob overrides the autopilot.
            self._paused_until = ev.t_s + self.params.override_hold_s
            self._set_state(PAUSED, f"{ev.knob} set by {ev.source}: hands off for "
                            f"{self.params.override_hold_s:.0f} s", ev.t_s)

    # -- control ---------------------------------------------------------------------
    def start(self) -> None:
        now = self._now()
        self._settle_until = now + self.params.settle_s
        self._publish(AutopilotEvent(t_s=now, state=SETTLING, objective=self.objective.text(),
                                     reason="; ".join(self.notes) or "started",
                                     grid={k: v for k, v in self.grid.values.items()}))
        self.state = SETTLING
        if self.meter.rate is None:
            # The rate set before the autopilot subscribed (on the command line): the
            # offered load it starts under, remembered when a schedule changes it.
            rate = self.path.knobs.get("rate")
            self.meter.rate = rate if isinstance(rate, int | float) else None
        # A starting point outside the user's bounds moves inside them at once.
        moves = {}
        for name, vals in self.grid.values.items():
            v = self.path.knobs.get(name)
            if v is None:
                v = self.path.limit_in_force(name)
            if v is None or not vals[0] <= v <= vals[-1]:
                moves[name] = self.grid.snap(name, vals[-1] if v is None else v)
        if moves:
            self._apply(Decision(SETTLING, "into the autopilot's bounds", moves), now)

    def set_enabled(self, on: bool) -> None:
        now = self._now()
        if on == self.enabled:
            return
        self.enabled = on
        if on:
            self._paused_until = None
            self._settle(now)
            self._set_state(SETTLING, "turned on", now)
        else:
            self._set_state(OFF, "turned off", now)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.params.tick_s)
            self.tick(self._now())

    def current_cell(self) -> Cell:
        return cell_in(self.grid, self.path)

    def tick(self, now: float) -> None:
        if not self.enabled or not self.grid.values:
            return
        if self._paused_until is not None:
            if now < self._paused_until:
                return
            self._paused_until = None
            self._settle(now)
            self._set_state(SETTLING, "resuming from the setting in force", now)
            return
        if self._pending:
            if all(self.path.knobs.get(k) == v for k, v in self._pending.items()):
                self._pending = {}
                self._settle(now)
            elif now - self._pending_since > 10 * self.params.epoch_s:
                self._pending = {}  # the change never came (a failed restart): go on
                self._settle(now)
            return
        if now < self._settle_until:
            return
        if self._epoch_start is None:
            self._epoch_start = now
            self._epoch_due = now + self.params.epoch_s
            self.meter.reset(now)
            self._set_state(MEASURING if self.state in (SETTLING, MEASURING) else self.state,
                            self.reason, now, quiet=True)
            return
        m = self.meter.measure(now, self.params.noise_parts, self.params.window_s,
                               own_only=self._after_backoff)
        cell = self.current_cell()
        recent = self.meter.recent(now, self.params.violation_window_s)
        tally = self.ledger.tally(now)
        for each in (m, recent):
            each.windows_judged, each.windows_missed = tally.judged, tally.missed
        early = self.policy.early_violation(recent) if now >= self._quiet_until else []
        if early or (now >= self._quiet_until
                     and recent.waiting_grows(2 * self.params.backlog_growth)):
            recent.j_per_token = m.j_per_token
            self._apply(self.policy.on_violation(cell, early, recent, now), now,
                        recent.to_dict())
            return
        if now < self._epoch_due:
            return
        d = self.policy.on_epoch(cell, m, now, now - self._epoch_start)
        if d.extend:  # (the same epoch, judged as it began)
            self._epoch_due = now + self.params.epoch_s / 2
            self._set_state(d.state, d.reason, now, m.to_dict())
            return
        self._apply(d, now, m.to_dict())

    # -- acting ------------------------------------------------------------------------
    def _apply(self, d: Decision, now: float, measured: dict[str, object] | None = None) -> None:
        self.decisions += 1
        moves = dict(d.moves)
        if "power_cap" in moves and now - self._last_cap_change < self.params.settle_s:
            # Never faster than the readings settle: the cap waits for the next tick.
            del moves["power_cap"]
        applied: dict[str, float] = {}
        for name, value in moves.items():
            if self.path.knobs.get(name) == value:
                continue
            try:
                self.path.set_knob(name, value, source=SOURCE, reason=d.reason)
            except knobmod.KnobError as exc:
                self._set_state(d.state, f"could not set {name}: {exc}", now)
                continue
            applied[name] = value
            if name == "power_cap":
                self._last_cap_change = now
        self._set_state(d.state, d.reason, now, measured)
        self._after_backoff = d.state == BACKING_OFF and bool(applied)
        if applied:
            pending = {k: v for k, v in applied.items() if self.path.knobs.get(k) != v}
            if pending:
                self._pending, self._pending_since = pending, now
            self._settle(now)
        else:
            # Nothing moved: the next epoch starts now in the same cell.
            self._quiet_until = now + self.params.epoch_s
            self._epoch_start = now
            self._epoch_due = now + self.params.epoch_s
            self.meter.reset(now)

    def _settle(self, now: float) -> None:
        self._settle_until = now + self.params.settle_s
        self._epoch_start = None

    def _set_state(self, state: str, reason: str, now: float,
                   measured: dict[str, object] | None = None, quiet: bool = False) -> None:
        changed = state != self.state or reason != self.reason
        self.state, self.reason = state, reason
        if changed or measured is not None or not quiet:
            self._publish(AutopilotEvent(t_s=now, state=state, objective=self.objective.text(),
                                         reason=reason, measured=measured))


__all__ = ["BACKING_OFF", "OFF", "PAUSED", "SETTLING", "SOURCE", "Autopilot", "KnobPath",
           "build_grid"]
