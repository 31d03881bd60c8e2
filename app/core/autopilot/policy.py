"""The decision rule: measured hill-climbing on the knob grid, bound by the objective.

Explained in a paragraph (README, "Autopilot"): each setting of the knobs is a cell of a
grid (power cap in `cap_step_w` steps, batch limits in powers of two, within the user's
bounds). The autopilot measures the cell it is in for one epoch after the readings
settle: J/token (told at one reference token rate, from a fit of power against token
rate over the epoch's parts, so bursts of arrivals do not pass for savings) and each
latency quantile, judged against the limit less its measured window-to-window scatter.
If the objective is violated, or requests pile up, it backs off at once toward
performance: to the best cell known to meet the objective at the load of now (not one
met only in a lull), else one step that raises
performance (a higher power cap first; then a larger batch limit when requests wait for
admission, a smaller one when time per token is over). If the objective holds with
headroom it tries the neighbour the study expects to save energy: a lower power cap
(kept while J/token does not rise: a cap that does not bind yet costs nothing), or a
larger batch limit where the limit binds; it keeps a move that lowered J/token by more
than the noise and otherwise returns. A lower cap is tried only after an epoch of
typical load; a violated cell (and the lower caps below it) is left alone for a while,
doubling at each violation. With no neighbour left to try it holds, re-measuring
each epoch; a new offered load (the rate knob) or the age of the measurements starts the
search again. Too few requests, or J/token too noisy, and it holds still and measures
longer.

The policy is a pure function of the measurements it is given; the controller
(controller.py) turns its decisions into knob changes.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from app.core.autopilot.measure import Measurement
from app.core.autopilot.objective import Objective, Target, stage_list
from app.core.autopilot.params import AutopilotParams

Cell = tuple[tuple[str, float], ...]  # ((knob, value), ...) in the grid's knob order

EXPLORING = "exploring"
HOLDING = "holding"
BACKING_OFF = "backing off"
MEASURING = "measuring"


def cell_of(values: dict[str, float]) -> Cell:
    return tuple(sorted(values.items()))


def _cap(c: Cell) -> float:
    """The cell's power cap (0 without one)."""
    return dict(c).get("power_cap", 0.0)


@dataclass(slots=True)
class Grid:
    """The values each knob may take, ascending."""

    values: dict[str, list[float]]

    def snap(self, knob: str, v: float) -> float:
        vals = self.values[knob]
        return min(vals, key=lambda x: (abs(x - v), x))

    def step(self, knob: str, v: float, direction: int, n: int = 1) -> float | None:
        """`n` grid steps up or down from `v` (snapped first); None at the bound."""
        vals = self.values[knob]
        i = vals.index(self.snap(knob, v))
        j = min(max(i + direction * n, 0), len(vals) - 1)
        return None if j == i else vals[j]

    def is_max(self, knob: str, v: float) -> bool:
        return self.snap(knob, v) == self.values[knob][-1]


@dataclass(slots=True)
class Record:
    j_per_token: float  # the mean of `values`
    worst_ratio: float  # the largest observed/limit over the targets
    t_s: float
    noise: float  # the mean's relative uncertainty (95% half-width)
    values: list[float] = field(default_factory=list)  # J/token of each epoch here, last few
    rate: float = 0.0  # the highest token rate it met the objective at, tok/s


class Recalled(NamedTuple):
    """A remembered setting for the load of now: where to go, from when the load is
    this one, and the token rate the setting met there."""

    cell: Cell
    since: float
    rate: float


@dataclass(slots=True)
class Decision:
    state: str
    reason: str
    moves: dict[str, float] = field(default_factory=dict)
    extend: bool = False  # keep measuring this epoch (no new epoch)


class Policy:
    def __init__(self, objective: Objective, grid: Grid, params: AutopilotParams) -> None:
        self.objective = objective
        self.grid = grid
        self.p = params
        self.table: dict[Cell, Record] = {}
        self.infeasible: dict[Cell, float] = {}  # cell -> until when it is not tried
        self._strikes: dict[Cell, int] = {}  # violations per cell at this load
        self._ban_why: dict[Cell, str] = {}  # "tpot" (time per token) or "wait" (the rest)
        self._missed_by: dict[Cell, float] = {}  # a banned cell's last miss: observed/limit
        # Where neither batch direction met the objective: the setting that missed by
        # less, held until an epoch meets it (not swung from, try after try).
        self._settled: Cell | None = None
        self.load_ref: float | None = None
        self._load_known = False
        # What each offered load (the rate knob) ended with: its best setting met and
        # the settings that violated there, to start from when that load, or a lower
        # one, comes again (a setting that met a load meets any lower one).
        self._loads: dict[float | None, tuple[Cell, dict[Cell, int], float]] = {}  # + tok/s
        self._resumed_from: float | None = None
        self._resume_same = False  # the remembered load is this one (not one above it)
        self._from_prior: set[float | None] = set()  # loads remembered from a sweep
        self._load_rose = False  # the last change of load was a rise
        # A remembered setting to go down to once the load is down.
        self._resume_after: Recalled | None = None
        self.incumbent: Cell | None = None  # the best cell met so far: the search's base
        # The token rate every cell's J/token is told at (measure.PowerFit): the first
        # epoch's, until the table starts afresh.
        self.r_ref: float | None = None
        self.state = MEASURING
        # Outstanding requests that rose over an epoch in this cell: a second epoch of it
        # is a setting that cannot keep up, one alone is the arrivals' wander.
        self._grew: tuple[Cell, float] | None = None  # (cell, the epoch's start)
        # Each target's window scatter, pooled over the last epochs: one epoch's three
        # parts give a scatter that itself scatters by half.
        self._scatters: dict[str, deque[float]] = {}
        # How much one epoch's J/token at one setting moves between epochs (relative SD),
        # pooled: the fit's own uncertainty misses the drift of bursty arrivals.
        self._epoch_sd: deque[float] = deque(maxlen=16)
        self._rates: deque[tuple[float, float]] = deque(maxlen=20)  # (epoch start, tok/s)
        self._noises: dict[float, float] = {}  # epoch start -> J/token's noise, last 8
        self._met_run: dict[Cell, int] = {}  # epochs met in a row per cell, at this load
        # The bans as they were at the last epoch that met the objective.
        self._calm: tuple[dict[Cell, float], dict[Cell, int]] = ({}, {})
        self._tight_once: Cell | None = None  # a try's first epoch near the limit
        self._violated_at = -math.inf  # the last violation

    # -- judging one measurement ----------------------------------------------------
    def judged(self, m: Measurement) -> dict[str, float]:
        """observed/limit of the targets with enough samples to be judged."""
        out: dict[str, float] = {}
        for t in self.objective.targets:
            r = m.ratio(t)
            if r is not None and m.counts.get(t.name, 0) >= self.p.min_requests:
                out[t.name] = r
        return out

    def safety(self, t: Target, m: Measurement) -> float:
        """The share of the limit kept free for target `t`. A window's quantile scatters
        around the epoch's by a relative SD `s` (pooled over recent epochs): at a quantile
        of r x the limit, a window goes over when 1 + s Z > 1 / r, so keeping windows over
        the limit rarer than the one-sided z means r <= 1 / (1 + z s): a share
        z s / (1 + z s) of the limit kept free."""
        pooled = self._scatters.get(t.name)
        sc = m.scatter.get(t.name)
        vals = [*(pooled or ()), *(() if sc is None or pooled else (sc,))]
        if not vals:
            zs = self.p.safety
        else:
            rms = (sum(v * v for v in vals) / len(vals)) ** 0.5
            zs = min(self.p.max_safety, max(self.p.safety, self.p.safety_z * rms))
        return zs / (1.0 + zs)

    def early_violation(self, m: Measurement) -> list[Target]:
        """Targets already clearly over mid-epoch: with at least `min_violation_requests`
        samples, a share over the limit beyond what the quantile allows plus 10 points.
        Safety first: these back off without waiting for the epoch to end."""
        out = []
        for t in self.objective.targets:
            n = m.counts.get(t.name, 0)
            if (n >= self.p.min_violation_requests
                    and m.over.get(t.name, 0) / n > (1.0 - t.quantile) + 0.10
                    and m.observed.get(t.name, 0.0) > t.limit_s):
                out.append(t)
        return out

    # -- the rule ---------------------------------------------------------------------
    def on_violation(self, cell: Cell, violated: list[Target], m: Measurement,
                     now: float) -> Decision:
        """The objective is violated (`violated`), or the queue grows (`violated` empty):
        toward performance at once."""
        resume = self._check_load(m) or self._resume_after
        self._resume_after = None
        span = m.t1 - m.t0
        now_rate = m.tokens / span if span > 0 else 0.0
        if resume is not None and resume.cell != cell and _cap(resume.cell) >= _cap(cell):
            self.state = BACKING_OFF
            return Decision(BACKING_OFF, self._resume_why(m),
                            self._moves(cell, resume.cell))
        self._violated_at = now
        why = "tpot" if any(t.metric == "tpot" for t in violated) else "wait"
        miss = max((m.ratio(t) or 0.0 for t in violated), default=0.0)
        if self._met_run.get(cell, 0) >= self.p.good_epochs:
            # One violation after a long run of epochs that met it: a setting that meets
            # the objective in nearly every window at this load, caught by a burst. It is
            # left alone for a short while only (and not counted toward a longer one).
            self._strikes.pop(cell, None)
            self._ban(cell, now, why, self.p.brief_ban_s)
        else:
            self._ban(cell, now, why)
        self._missed_by[cell] = miss
        self._met_run.pop(cell, None)
        self.table.pop(cell, None)
        names = ", ".join(f"{t.name} {m.observed.get(t.name, 0):.3g}s over "
                          f"{(1.0 - self.safety(t, m)) * t.limit_s:.3g}s" for t in violated
                          ) or self._piling_up(m)
        inc = self.incumbent
        if inc is not None and inc != cell and inc in self.table and self._trusted(inc, now_rate):
            # An exploratory move went too far: back to the setting that met it.
            self.state = BACKING_OFF
            return Decision(BACKING_OFF, f"{names}: back to the best setting known to meet it",
                            self._moves(cell, inc))
        # The best setting known no longer meets it (the load moved, or it sat at the
        # edge): the cheapest known setting with a higher cap, else a step toward
        # performance (two when far over).
        self.incumbent = None
        target = dict(cell)
        far = any((m.ratio(t) or 0.0) > self.p.far_over for t in violated) or not violated
        if "power_cap" in target:
            # Not further than the step toward performance would go, unless far over: a
            # setting known only from the top of the grid (the start, the last change of
            # load) is a leap of hundreds of watts for a window just over the limit.
            reach = self.grid.step("power_cap", target["power_cap"], +1, 2 if far else 1)
            safer = [c for c in self.table
                     if target["power_cap"] < dict(c).get("power_cap", 0.0) <= (
                         reach if reach is not None and not far else float("inf"))
                     and self._trusted(c, now_rate)]
            if safer:
                best = min(safer, key=lambda c: self.table[c].j_per_token)
                self.incumbent = best
                self.state = BACKING_OFF
                return Decision(BACKING_OFF, f"{names}: to the cheapest known setting with a"
                                " higher power cap", self._moves(cell, best))
        # Performance first from the power cap: it raises both throughput and latency.
        if "power_cap" in target and not self.grid.is_max("power_cap", target["power_cap"]):
            up = self.grid.step("power_cap", target["power_cap"], +1, 2 if far else 1)
            if up is not None:
                self.state = BACKING_OFF
                return Decision(BACKING_OFF, f"{names}: power cap up",
                                {"power_cap": up})
        direction = self._batch_direction(violated, m)
        if cell == self._settled:
            self.state = HOLDING
            self._overloaded(cell)
            return Decision(HOLDING, f"{names}: neither batch direction meets it, this one "
                            "misses by less; the objective cannot be met at this load in "
                            "bounds: holding")
        for knob in ("batch_limit", "max_num_seqs"):
            if knob in target and direction != 0:
                nxt = self.grid.step(knob, target[knob], direction)
                other = cell_of({**target, knob: nxt}) if nxt is not None else None
                if other in self.infeasible and not (
                        direction < 0 and self._ban_why.get(other) == "wait"):
                    # That way violated too, just now (TTFT asks for a larger batch, time
                    # per token for a smaller): going back and forth meets neither. Once
                    # only, a smaller batch that violated by waiting is tried again: a
                    # queue drains, time per token at a batch too large does not.
                    self.state = HOLDING
                    self._overloaded(cell)
                    theirs = self._missed_by.get(other, 0.0)
                    if 0.0 < theirs < miss and nxt is not None:
                        # Neither meets it: the one that missed by less is held (a batch
                        # halved for a time per token 7% over can leave TTFT 3x over).
                        self._settled = other
                        return Decision(HOLDING, f"{names}: {knob} {nxt:g} missed it too, "
                                        f"by less ({theirs:.2f} x its limit against "
                                        f"{miss:.2f} here); the objective cannot be met at "
                                        "this load in bounds: holding there", {knob: nxt})
                    self._settled = cell
                    return Decision(HOLDING, f"{names}: {knob} {nxt:g} violated it too, "
                                    "just before; the objective cannot be met at this load "
                                    "in bounds: holding")
                if nxt is not None:
                    self.state = BACKING_OFF
                    word = "up: requests wait for admission" if direction > 0 else \
                        "down: time per token is over"
                    return Decision(BACKING_OFF, f"{names}: {knob} {word}", {knob: nxt})
        self.state = HOLDING
        self._overloaded(cell)
        return Decision(HOLDING, f"{names}: already at the most performant setting in bounds; "
                        "the objective cannot be met here")

    def _batch_direction(self, violated: list[Target], m: Measurement) -> int:
        if any(t.metric == "tpot" for t in violated):
            return -1
        if (m.queue_share is not None and m.queue_share > 0.5) or not violated or (
                m.backlog_end > 0 and any(t.metric in ("ttft", "latency", "workflow")
                                          for t in violated)):
            return +1  # requests wait for admission (or the queue grows)
        return 0

    def on_epoch(self, cell: Cell, m: Measurement, now: float, epoch_len: float) -> Decision:
        """The epoch in `cell` has run its course: decide what to do next."""
        self._age(now)
        resume = self._check_load(m)
        self._note_rate(m)
        up = resume is not None and _cap(resume.cell) > _cap(cell)
        if resume is not None and up and self._load_rose:
            self.state = BACKING_OFF
            return Decision(BACKING_OFF, self._resume_why(m),
                            self._moves(cell, resume.cell))
        if resume is not None and not up:
            # Down to a remembered setting only once an epoch wholly at the new load
            # carries no more tokens than that setting met: what the load before left (a
            # peak's queue, its conversations' next turns) is served first.
            self._resume_after = resume
        for name, sc in m.scatter.items():
            self._scatters.setdefault(name, deque(maxlen=8)).append(sc)
        judged = self.judged(m)
        violated = [t for t in self.objective.targets if judged.get(t.name, 0.0) > 1.0]
        grew = m.outstanding_grows(self.p.backlog_growth)
        # An epoch extended ("measuring longer") is the same epoch again, not a second.
        confirmed = grew and self._grew is not None and self._grew[0] == cell \
            and self._grew[1] < m.t0
        if not grew:
            self._grew = None
        elif self._grew is None or self._grew[0] != cell:
            self._grew = (cell, m.t0)
        # Requests piling up with latencies still well inside the limits and nothing
        # waiting are a burst being served (a chain's or a project's fan-out), not a
        # setting that cannot keep up: that shows as waiting, or as latency near the limit.
        strained = m.backlog_end > 0 or any(r > 1.0 - self.p.margin for r in judged.values())
        if violated or m.waiting_grows(self.p.backlog_growth) or (confirmed and strained):
            self._grew = None
            return self.on_violation(cell, violated, m, now)
        self._settled = None
        # Met, but within the scatter of one window of the limit: too close to stay in
        # when an exploratory move brought it here; where it is the best known, it holds
        # (no further step down) rather than calling it a violation.
        tight = [t for t in self.objective.targets
                 if judged.get(t.name, 0.0) > 1.0 - self.safety(t, m)]
        inc = self.incumbent
        if not tight or self._tight_once != cell:
            self._tight_once = None
        near = all(judged.get(t.name, 0.0) <= 1.0 - self.safety(t, m) / 2 for t in tight)
        # Not while requests pile up: that is a queue being built, and each epoch more
        # of it costs the windows it takes to drain (below the knee, minutes).
        piling = grew or m.backlog_end > m.backlog_start
        if tight and inc is not None and inc != cell and inc in self.table \
                and self._tight_once != cell and near and not piling:
            # One epoch is one window: its quantile alone over the line is one window in
            # a few of a setting that meets it in nineteen of twenty. Once, in the nearer
            # half of the share kept free, it is measured again.
            self._tight_once = cell
            self.state = HOLDING
            names = ", ".join(f"{t.name} {m.observed.get(t.name, 0):.3g}s" for t in tight)
            return Decision(HOLDING, f"{names}: within a window's scatter of the limit here;"
                            " measuring again before deciding")
        pending = self._resume_after
        span = m.t1 - m.t0
        if pending is not None and (pending.cell == cell or (
                m.t0 >= pending.since and span > 0
                and m.tokens / span <= pending.rate * (1.0 + self.p.load_change))):
            self._resume_after = None
            if pending.cell != cell and not violated and not tight:
                # What was measured since the change was the transition (more tokens, so
                # less J/token, than the load now carries): no base to judge against.
                self._forget_measured()
                self.state = EXPLORING
                return Decision(EXPLORING, self._resume_why(m),
                                self._moves(cell, pending.cell))
        if tight and inc is not None and inc != cell and inc in self.table:
            self._tight_once = None
            self._met_run.pop(cell, None)
            self._ban(cell, now)
            self.table.pop(cell, None)
            self.state = EXPLORING
            names = ", ".join(f"{t.name} {m.observed.get(t.name, 0):.3g}s" for t in tight)
            return Decision(EXPLORING, f"{names}: within a window's scatter of the limit here;"
                            " back to the best setting known", self._moves(cell, inc))
        if len(judged) < len(self.objective.targets) or m.j_per_token is None:
            short = self._short_of(m, judged)
            if epoch_len < self.p.max_epoch_s:
                self.state = HOLDING
                return Decision(HOLDING, f"{short}: measuring longer", extend=True)
            self.state = HOLDING
            return Decision(HOLDING, f"after {epoch_len:.0f} s, {short}: holding still")
        jpt, noise = self._j_ref(m)
        # A lower power cap does not raise J/token until it slows the work past the
        # objective (the study's finding, and every sweep's): with latency well inside
        # its limits, the step down does not wait for J/token sharper than `max_noise`,
        # as long as the epochs' J/token is usually within `noise_limit` (one lucky
        # epoch of a noisy plant is not enough).
        self._noises[m.t0] = noise
        while len(self._noises) > 8:
            del self._noises[next(iter(self._noises))]
        down = (statistics.median(self._noises.values()) <= self.p.noise_limit
                and self._may_lower_cap(cell, judged, m))
        if noise > self.p.max_noise and epoch_len < self.p.max_epoch_s and not down:
            self.state = HOLDING
            return Decision(HOLDING, f"J/token too noisy to decide (±{noise:.0%}):"
                            " measuring longer", extend=True)
        if noise > self.p.noise_limit:
            self.state = HOLDING
            return Decision(HOLDING, f"J/token too noisy to decide (±{noise:.0%}): "
                            "holding still")
        # Each target's share of its usable limit (the limit less its window scatter):
        # headroom is judged on these.
        usable = {t.name: judged[t.name] / (1.0 - self.safety(t, m))
                  for t in self.objective.targets if t.name in judged}
        worst = max(usable.values())
        tpot = max((r for name, r in usable.items()
                    if any(t.name == name and t.metric == "tpot" for t in self.objective.targets)),
                   default=None)
        if self.r_ref is None and len(self._rates) >= self.p.min_load_epochs:
            # The rate every cell is told at: the load's typical one, once a few epochs of
            # it are known (the first epoch after a change of load is still in the
            # transition, and telling J/token far outside an epoch's own rates costs
            # its certainty: ±20% where ±5% was measured).
            self.r_ref = self._usual_rate()
        rec = self._record(cell, jpt, noise, worst, now, m)
        self._met_run[cell] = self._met_run.get(cell, 0) + 1
        self._calm = (dict(self.infeasible), dict(self._strikes))
        self.infeasible.pop(cell, None)
        inc = self.incumbent if self.incumbent in self.table else None
        if inc is None or inc == cell:
            self.incumbent = cell
        elif rec.j_per_token < self.table[inc].j_per_token * (
                1.0 - self._gain(rec, self.table[inc])) or (
                self._cap_down(inc, cell) and rec.j_per_token <= self.table[inc].j_per_token * (
                1.0 + 2.0 * self._gain(rec, self.table[inc]))):
            # The move paid, or it lowered a cap that does not bind yet: the same energy
            # within two standard errors (the study's lower caps save once they bind, and
            # a cap past the knee costs far more than the noise): the search goes on.
            self.incumbent = cell
        elif self._cap_down(inc, cell) and len(rec.values) < 2 and worst < 1.0 - self.p.margin:
            # A lower cap with latency still well inside its limits looks dearer after
            # one epoch: by the study it should not be (a cap that does not slow the work
            # draws no more power), so once, it is measured again before it is given up
            # (bursty loads move one epoch's J/token by more than its noise tells).
            self.state = HOLDING
            return Decision(HOLDING, f"J/token {rec.j_per_token:.4g} here against "
                            f"{self.table[inc].j_per_token:.4g} at the higher cap, with "
                            "latency well inside: measuring it again before deciding")
        else:
            self.state = EXPLORING
            return Decision(EXPLORING, f"J/token {rec.j_per_token:.4g} here, no better than "
                            f"{self.table[inc].j_per_token:.4g}: back to that setting",
                            self._moves(cell, inc))
        inc_worst = self.table[self.incumbent].worst_ratio
        # Just after a violation requests wait for admission while the queue it left
        # drains: no sign that the batch limit binds (a larger batch tried then, and the
        # step back from it, strand the requests above the old limit at admission).
        draining = now - self._violated_at < self.p.drain_s
        binds = m.queue_share is not None and m.queue_share > self.p.batch_binds \
            and not draining
        typical, rate, usual = self._typical()
        nxt = self._next_candidate(self.incumbent, inc_worst if typical else 1.0, tpot, binds)
        if nxt is not None:
            knob, value, why = nxt
            self.state = EXPLORING
            return Decision(EXPLORING, f"objective met (worst {worst:.0%} of its usable limit), "
                            f"J/token {rec.j_per_token:.4g}: try {why}",
                            self._moves(cell, cell_of({**dict(self.incumbent), knob: value})))
        self.state = HOLDING
        lull = "" if typical or len(self._rates) < self.p.min_load_epochs else (
            f"; the load is below its usual ({rate:.0f} against {usual:.0f} tokens/s): no "
            "lower cap tried on it")
        return Decision(HOLDING, f"holding at the best setting found: J/token "
                        f"{rec.j_per_token:.4g}, objective met (worst {worst:.0%} of its usable "
                        f"limit){lull}")

    # -- helpers ------------------------------------------------------------------------
    def _record(self, cell: Cell, jpt: float, noise: float, worst: float,
                now: float, m: Measurement) -> Record:
        """This epoch's J/token joined to what was measured in `cell` before (the last
        few epochs' mean): a setting held for minutes is known better than one tried
        once, and a one-epoch try is given the epoch-to-epoch scatter seen so far."""
        prev = self.table.get(cell)
        values = [*(prev.values[-5:] if prev is not None else ()), jpt]
        if len(values) >= 2:
            self._epoch_sd.append(abs(values[-1] - values[-2]) / max(values[-2], 1e-12)
                                  / 2 ** 0.5)
        mean = sum(values) / len(values)
        epoch_noise = 2.0 * statistics.median(self._epoch_sd) if len(self._epoch_sd) >= 3 \
            else 0.0
        noise = max(noise, epoch_noise) / len(values) ** 0.5
        span = m.t1 - m.t0
        rate = max(prev.rate if prev is not None else 0.0, m.tokens / span if span > 0 else 0.0)
        rec = Record(mean, worst, now, noise, values, rate)
        self.table[cell] = rec
        return rec

    def _ban(self, cell: Cell, now: float, why: str = "wait", for_s: float | None = None) -> None:
        """Not to be tried again for `infeasible_s` (or `for_s`), doubled at each new
        violation there (a setting that fails in every burst of a bursty load is not
        worth a try every ten minutes)."""
        n = self._strikes.get(cell, 0) + 1
        self._strikes[cell] = n
        until = now + (self.p.infeasible_s if for_s is None else for_s) * 2 ** min(n - 1, 4)
        self.infeasible[cell] = until
        self._ban_why[cell] = why
        # A lower cap with the rest the same is slower still: not tried either.
        here = dict(cell)
        if "power_cap" in here:
            for v in self.grid.values.get("power_cap", []):
                if v < here["power_cap"]:
                    lower = cell_of({**here, "power_cap": v})
                    self.infeasible[lower] = max(self.infeasible.get(lower, 0.0), until)
                    self.table.pop(lower, None)

    def _overloaded(self, cell: Cell) -> None:
        """The objective is not met even at the most performant setting in bounds: the
        load is beyond what any setting here serves. The lower caps (the rest as here)
        that violated since the objective was last met violated under that load, not for
        being too slow: they are judged as they were before it."""
        calm_inf, calm_strikes = self._calm
        here = dict(cell)
        for c in list(self.infeasible):
            d = dict(c)
            if d.get("power_cap", 0.0) < here.get("power_cap", 0.0) and all(
                    d.get(k) == v for k, v in here.items() if k != "power_cap"):
                if c in calm_inf:
                    self.infeasible[c] = calm_inf[c]
                    self._strikes[c] = calm_strikes.get(c, 0)
                else:
                    del self.infeasible[c]
                    self._strikes.pop(c, None)

    def _trusted(self, cell: Cell, now_rate: float = 0.0) -> bool:
        """Whether `cell` met the objective at a load like the usual one and the one now
        (not only in a lull)."""
        usual = self._usual_rate() or 0.0
        return self.table[cell].rate >= self.p.typical_load * max(usual, now_rate)

    def _note_rate(self, m: Measurement) -> None:
        """Keep each epoch's token rate (once per epoch, its last look)."""
        span = m.t1 - m.t0
        rate = m.tokens / span if span > 0 else 0.0
        if self._rates and self._rates[-1][0] == m.t0:
            self._rates[-1] = (m.t0, rate)
        else:
            self._rates.append((m.t0, rate))

    def _usual_rate(self) -> float | None:
        """The median token rate of the recent epochs (None before any)."""
        return statistics.median(r for _, r in self._rates) if self._rates else None

    def _typical(self) -> tuple[bool, float, float]:
        """Whether this epoch carried at least the usual load (its token rate against
        the median of the recent epochs'), with both rates: a setting that copes with a
        lull says nothing of the next burst, so a lower cap is tried only after a
        typical epoch."""
        rate = self._rates[-1][1] if self._rates else 0.0
        usual = self._usual_rate()
        usual = rate if usual is None else usual
        known = len(self._rates) >= self.p.min_load_epochs
        return known and rate >= self.p.typical_load * usual, rate, usual

    def _short_of(self, m: Measurement, judged: dict[str, float]) -> str:
        """Why an epoch cannot be judged: which targets have too few samples (those
        `judged` left out), and a stage of the objective that no request has carried (a
        misspelt stage would otherwise read as a thin epoch for ever)."""
        unknown = [t.stage for t in self.objective.targets
                   if t.stage is not None and m.stages_seen and t.stage not in m.stages_seen
                   and not m.counts.get(t.name)]
        if unknown:
            names = ", ".join(f"'{s}'" for s in dict.fromkeys(unknown))
            return (f"no request of stage {names} so far (the stages seen: "
                    f"{stage_list(m.stages_seen)}); "
                    "check the objective's stage name")
        thin = ", ".join(f"{t.name} {m.counts.get(t.name, 0)} of {self.p.min_requests}"
                         for t in self.objective.targets if t.name not in judged)
        if not thin and m.j_per_token is None:
            # Latency enough, energy none: no meter reports GPU energy (or nothing was
            # generated), which more requests would not mend.
            why = "no output tokens counted" if m.tokens <= 0 else "no GPU energy readings"
            return f"no J/token to decide on ({why})"
        return (f"too few requests to decide ({m.finished} finished"
                + (f"; {thin} needed" if thin else "") + ")")

    @staticmethod
    def _piling_up(m: Measurement) -> str:
        if m.backlog_end > m.backlog_start:
            return (f"the queue grows ({m.backlog_start} -> {m.backlog_end} waiting): this "
                    "setting cannot keep up")
        return (f"requests outstanding rose by {m.outstanding_growth:.0f} (mean "
                f"{m.outstanding_mean:.0f}) two epochs running: this setting cannot keep up")

    def best_feasible(self) -> Cell | None:
        """The measured cell with the least J/token (all in the table met the objective);
        among cells within the noise of it, the one with the most headroom."""
        if not self.table:
            return None
        least = min(r.j_per_token for r in self.table.values())
        near = [c for c, r in self.table.items()
                if r.j_per_token <= least * (1.0 + self._gain(r, r))]
        return min(near, key=lambda c: (self.table[c].worst_ratio, self.table[c].j_per_token))

    def _resume_why(self, m: Measurement) -> str:
        if self._resumed_from in self._from_prior or (
                m.load_per_s is None and None in self._from_prior):
            at = "" if self._resumed_from is None else f" at {self._resumed_from:g}/s"
            return f"warm start: to the sweep's best setting{at} that met the objective"
        return resume_why(self._resumed_from, m.load_per_s, self._resume_same)

    @staticmethod
    def _cap_down(a: Cell, b: Cell) -> bool:
        """Whether `b` is `a` with a lower power cap and nothing else changed."""
        da, db = dict(a), dict(b)
        return ("power_cap" in da and db.get("power_cap", da["power_cap"]) < da["power_cap"]
                and all(db.get(k) == v for k, v in da.items() if k != "power_cap"))

    def _j_ref(self, m: Measurement) -> tuple[float, float]:
        """The epoch's J/token at the reference rate, and its relative uncertainty."""
        assert m.j_per_token is not None
        if m.fit is None or m.fit.r_mean <= 0:
            return m.j_per_token, m.noise if m.noise is not None else 0.0
        return m.fit.j_at(self.r_ref if self.r_ref is not None else m.fit.r_mean)

    def _gain(self, a: Record, b: Record) -> float:
        """How much less J/token must be to count as less: the larger of `min_gain` and
        one standard error of the difference (each noise is a 95% half-width, ~2 SE)."""
        return max(self.p.min_gain, 0.5 * (a.noise ** 2 + b.noise ** 2) ** 0.5)

    def _next_candidate(self, cell: Cell, worst: float, tpot: float | None,
                        binds: bool) -> tuple[str, float, str] | None:
        """The next neighbour to try, in the order the study expects to save energy;
        only moves that cost performance need headroom under the objective."""
        target = dict(cell)
        headroom = worst < 1.0 - self.p.margin
        options: list[tuple[str, int, str]] = []
        if headroom:
            options.append(("power_cap", -1, "a lower power cap"))
        # A larger batch saves energy only where the limit binds (requests wait for
        # admission), and raises time per token, by much when it doubles: only with twice
        # the headroom on it. A smaller
        # batch never saves energy (the study's J/token falls with batch size): it is a
        # latency move, made only when backing off.
        if (tpot is None or tpot < 1.0 - 2 * self.p.margin) and binds:
            options += [("batch_limit", +1, "a larger batch limit"),
                        ("max_num_seqs", +1, "a larger max_num_seqs")]
        for knob, direction, why in options:
            if knob not in target:
                continue
            v = self.grid.step(knob, target[knob], direction)
            if v is None:
                continue
            cand = cell_of({**target, knob: v})
            if cand in self.table or cand in self.infeasible:
                continue
            return knob, v, f"{why} ({v:g})"
        return None

    def _moves(self, cell: Cell, to: Cell) -> dict[str, float]:
        here = dict(cell)
        return {k: v for k, v in to if here.get(k) != v}

    def _age(self, now: float) -> None:
        """Forget measurements too old to trust (load and the engine drift)."""
        keep = now - self.p.reexplore_s
        for c in [c for c, r in self.table.items() if r.t_s < keep]:
            del self.table[c]
        for c in [c for c, until in self.infeasible.items() if until <= now]:
            del self.infeasible[c]
        if not self.table:
            self.r_ref = None

    def _check_load(self, m: Measurement) -> Recalled | None:
        """A new offered load (the rate knob; None is a closed loop) makes what was
        measured stale: the search starts again, from the best setting met at the
        nearest load at least as high, if one is remembered (returned), else from where
        it is."""
        load = m.load_per_s
        if not self._load_known:
            # The first load: a setting remembered for it (a sweep's, warm start) is
            # where the search starts.
            self.load_ref, self._load_known = load, True
            self._load_rose = False
            # (no load before it: this epoch is no transition)
            return self._recall(load, m.t1, since=m.t0)
        ref = self.load_ref
        if load is None and ref is None:
            return None
        if load is not None and ref is not None and (
                ref <= 0 or abs(load - ref) / ref <= self.p.load_change):
            return None
        if ref is not None and self.incumbent in self.table:
            assert self.incumbent is not None
            old = self._loads.get(ref, (self.incumbent, {}, 0.0))[1]
            self._loads[ref] = (self.incumbent, {**old, **self._strikes},
                                self.table[self.incumbent].rate)
            self._from_prior.discard(ref)
        self._forget_measured()
        self.infeasible.clear()
        self._strikes.clear()
        self._ban_why.clear()
        self._missed_by.clear()
        self._settled = None
        self._met_run.clear()
        self._calm = ({}, {})
        self.load_ref = load
        self._scatters.clear()
        self._resumed_from = None
        self._resume_after = None
        self._load_rose = ref is None or (load is not None and load > ref)
        return self._recall(load, m.t1, since=m.t1)

    def _forget_measured(self) -> None:
        """Start the table afresh: what each cell measured, the best of them, the token
        rate J/token is told at and the load's recent rates."""
        self.table.clear()
        self.incumbent = None
        self.r_ref = None
        self._rates.clear()

    def remember(self, load: float | None, cell: Cell, violated: list[Cell],
                 tokens_per_s: float) -> None:
        """A setting known to meet the objective at `load` (and ones known to miss it
        there), as if met here: a sweep's, for a warm start (prior.py)."""
        self._loads[load] = (cell, {c: 1 for c in violated if c != cell}, tokens_per_s)
        self._from_prior.add(load)

    def _recall(self, load: float | None, now: float, since: float) -> Recalled | None:
        """The setting remembered for `load` (its violators banned anew), else for the
        nearest load above it; None when none is. `since`: when this load began."""
        if load is None:
            nearest: float | None = None
            same = None in self._loads
            if not same:
                return None
        else:
            # The same load seen before, else the nearest one above it: what met a load
            # meets any lower one.
            levels = [x for x in self._loads if x is not None]
            near = [x for x in levels if abs(x - load) <= self.p.load_change * x]
            higher = [x for x in levels if x > load]
            same = bool(near)
            if near:
                nearest = min(near, key=lambda x: abs(x - load))
            elif higher:
                nearest = min(higher)
            else:
                return None
        cell, bans, rate = self._loads[nearest]
        if same:
            # The same load again: what violated at it would violate again (banned anew,
            # as long as it was then).
            for c, n in bans.items():
                self._strikes[c] = n - 1
                self._ban(c, now)
        self._resume_same, self._resumed_from = same, nearest
        return Recalled(cell, since, rate)

    def _may_lower_cap(self, cell: Cell, judged: dict[str, float], m: Measurement) -> bool:
        """Whether this epoch, whatever its J/token, would lead to a lower cap: the
        objective met with headroom at a typical load, and a lower cap not yet known."""
        here = dict(cell)
        if "power_cap" not in here or len(judged) < len(self.objective.targets):
            return False
        usable = [judged[t.name] / (1.0 - self.safety(t, m)) for t in self.objective.targets]
        if max(usable) >= 1.0 - self.p.margin or not self._typical()[0]:
            return False
        inc = self.incumbent if self.incumbent in self.table else None
        if inc is not None and inc != cell and not self._cap_down(inc, cell):
            return False  # a batch move being judged: its J/token decides
        low = self.grid.step("power_cap", here["power_cap"], -1)
        if low is None:
            return False
        cand = cell_of({**here, "power_cap": low})
        return cand not in self.table and cand not in self.infeasible


def resume_why(level: float | None, load: float | None, same: bool) -> str:
    if level is None or load is None:
        return "to the best setting remembered for this load"
    if same:
        return (f"the offered load is back to {load:g}/s: to the best setting met at "
                f"{level:g}/s before")
    return (f"the offered load is now {load:g}/s: to the best setting met at {level:g}/s "
            "(what met a load at least as high meets this one)")
