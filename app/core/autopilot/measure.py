"""What one measurement epoch saw, from the event stream alone.

J/token is the GPUs' energy over the epoch (each device's cumulative counter, linearly
interpolated at the epoch's edges) over the output tokens generated in it (the engine's
own token counter where it reports one, which counts tokens of requests still running;
else the tokens of requests that finished in it). Its noise is the relative spread of
J/token over the epoch's parts. Latency quantiles are exact over the epoch's finished
requests (an epoch holds hundreds, not millions).
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field

from app.core.autopilot.objective import Objective, Target
from app.core.events import (
    EngineStateEvent,
    Event,
    KnobEvent,
    RequestEvent,
    Sample,
    WorkflowEvent,
)


@dataclass(frozen=True, slots=True)
class PowerFit:
    """GPU power against output token rate over the parts of an epoch, fitted by least
    squares: P = a + b r. At low load J/token scatters with the arrivals (the same idle
    power spread over more or fewer tokens); the fit explains that scatter, so two
    settings measured under different bursts are compared at one reference rate."""

    a: float  # W at no tokens (static and idle)
    b: float  # J per token on top
    s: float  # residual standard deviation, W
    n: int
    r_mean: float  # tokens/s
    sxx: float

    def j_at(self, r: float) -> tuple[float, float]:
        """J/token at `r` tokens/s, and its relative uncertainty (95% half-width)."""
        if self.sxx <= 1e-9 * max(self.r_mean, 1.0) ** 2:
            r = self.r_mean  # the rate never moved: only its own rate can be told
        p = self.a + self.b * r
        se = self.s * (1.0 / self.n + ((r - self.r_mean) ** 2 / self.sxx if self.sxx > 0
                                       else 0.0)) ** 0.5
        return p / r, (2.0 * se / p if p > 0 else float("inf"))


def fit_power(points: list[tuple[float, float]]) -> PowerFit | None:
    """Least squares of (rate, power) points; None with fewer than 3."""
    n = len(points)
    if n < 3:
        return None
    rm = sum(r for r, _ in points) / n
    pm = sum(p for _, p in points) / n
    sxx = sum((r - rm) ** 2 for r, _ in points)
    b = sum((r - rm) * (p - pm) for r, p in points) / sxx if sxx > 0 else 0.0
    a = pm - b * rm
    ssr = sum((p - a - b * r) ** 2 for r, p in points)
    return PowerFit(a, b, (ssr / (n - 2)) ** 0.5, n, rm, sxx)


@dataclass(slots=True)
class Measurement:
    t0: float
    t1: float
    finished: int = 0
    observed: dict[str, float] = field(default_factory=dict)  # target name -> quantile, s
    counts: dict[str, int] = field(default_factory=dict)  # target name -> samples
    over: dict[str, int] = field(default_factory=dict)  # target name -> samples over limit
    j_per_token: float | None = None
    noise: float | None = None  # J/token's relative uncertainty (95% half-width)
    energy_j: float = 0.0
    tokens: float = 0.0
    load_per_s: float | None = None  # the offered load: the rate knob (None: closed loop)
    arrivals_per_s: float | None = None
    queue_share: float | None = None  # of TTFT, the share spent waiting for admission
    fit: PowerFit | None = None  # power against token rate over the epoch's parts
    # Per target: how much the quantile of one `window_s` window scatters around the
    # epoch's (relative standard deviation, from the quantiles of the epoch's parts).
    scatter: dict[str, float] = field(default_factory=dict)
    # Requests waiting (for admission, and inside the engine) at the epoch's start and
    # now: a queue that grows is a setting that cannot keep up, whatever the latencies
    # of the requests that got through so far.
    backlog_start: int = 0
    backlog_end: int = 0

    # Requests outstanding (in flight and waiting, wattflow's count): their trend over
    # the epoch (least-squares slope x span) and mean. By Little's law a setting that
    # serves slower than requests arrive makes them pile up steadily, minutes before
    # any latency shows it.
    outstanding_growth: float = 0.0
    outstanding_mean: float = 0.0
    # The objective judged window by window since the autopilot started (windows.py,
    # filled in by the controller): windows judged, and of them missed.
    windows_judged: int = 0
    windows_missed: int = 0
    # The stage labels of every request submitted since the autopilot started: an
    # objective's stage that is not among them is named as such, not as "too few".
    stages_seen: tuple[str, ...] = ()

    def waiting_grows(self, min_growth: int) -> bool:
        """Whether the waiting queue gained a quarter of itself (and `min_growth`)."""
        return self.backlog_end - self.backlog_start > max(min_growth, self.backlog_start // 4)

    def outstanding_grows(self, min_growth: int) -> bool:
        """Whether the outstanding requests rose by more than their arrivals' fluctuation
        (three square roots of their mean, and `min_growth` / 2) over the epoch. One
        epoch of this is a hint, not proof: requests of ~20 s make the count wander by
        that much over 30 s now and then (the policy asks for two epochs running)."""
        # Requests in flight fluctuate as the arrivals do (Poisson: a standard deviation
        # of about the square root of their mean): growth beyond three of those is a trend.
        return self.outstanding_growth > max(min_growth / 2, 3.0 * self.outstanding_mean ** 0.5)

    def ratio(self, t: Target) -> float | None:
        v = self.observed.get(t.name)
        return None if v is None else v / t.limit_s

    def to_dict(self) -> dict[str, object]:
        return {"t0_s": round(self.t0, 3), "t1_s": round(self.t1, 3),
                "finished": self.finished,
                "observed_s": {k: round(v, 6) for k, v in self.observed.items()},
                "j_per_token": None if self.j_per_token is None else round(self.j_per_token, 6),
                "noise": None if self.noise is None else round(self.noise, 4),
                "load_per_s": None if self.load_per_s is None else round(self.load_per_s, 4),
                **({"windows_met": f"{self.windows_judged - self.windows_missed}/"
                                   f"{self.windows_judged}"} if self.windows_judged else {})}


def quantile(sorted_v: list[float], q: float) -> float:
    """The `q` quantile of sorted values, linear between ranks."""
    pos = q * (len(sorted_v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_v) - 1)
    return sorted_v[lo] + (sorted_v[hi] - sorted_v[lo]) * (pos - lo)


def _interp(series: list[tuple[float, float]], t: float) -> float | None:
    """A cumulative series' value at `t` (linear between readings, clamped)."""
    if not series:
        return None
    i = bisect.bisect_left(series, (t, float("-inf")))
    if i == 0:
        return series[0][1]
    if i >= len(series):
        return series[-1][1]
    (ta, va), (tb, vb) = series[i - 1], series[i]
    return va if tb <= ta else va + (vb - va) * (t - ta) / (tb - ta)


@dataclass(slots=True)
class _Done:
    t: float
    stage: str
    ttft: float | None
    tpot: float | None
    latency: float | None
    queue: float | None
    tokens: int
    first_at: float | None = None  # when its first token came


class EpochMeter:
    """A bus subscriber keeping what the current epoch needs, and nothing older."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.t0 = 0.0
        self._energy: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._engine_tokens: list[tuple[float, float]] = []
        self._done: list[_Done] = []
        self._first: list[tuple[float, str, float | None]] = []  # (t, stage, TTFT)
        # Requests with no first token yet: (submitted at, stage). Their TTFT is at least
        # their age, so a queue that starves them shows before any of them is served.
        self._pending: dict[str, tuple[float, str]] = {}
        self._outstanding: list[tuple[float, int]] = []  # (t, in flight + waiting)
        self._now = 0.0
        self._workflows: list[tuple[float, float]] = []  # (t, latency)
        self._arrivals = 0
        self.rate: float | None = None  # the rate knob in force (None: closed loop)
        self._client_tokens: list[tuple[float, float]] = []
        self._waiting_client = 0
        self._waiting_engine = 0
        self._backlog_start = 0
        self.stages: set[str] = set()  # every stage label submitted so far (not per epoch)

    def on_event(self, ev: Event) -> None:
        if isinstance(ev, Sample):
            if ev.component == "gpu" and ev.energy_mj is not None:
                self._energy[ev.device].append((ev.t_s, ev.energy_mj / 1000.0))
        elif isinstance(ev, RequestEvent):
            if ev.phase == "submitted":
                self._pending[ev.request_id] = (ev.t_s, ev.stage)
                if ev.stage:
                    self.stages.add(ev.stage)
            elif ev.phase == "first_token":
                # TTFT is known at the first token: on long generations waiting for the
                # finish would leave an epoch with no TTFT at all.
                self._pending.pop(ev.request_id, None)
                self._first.append((ev.t_s, ev.stage, ev.ttft_s))
            elif ev.phase == "finished":
                self._pending.pop(ev.request_id, None)
                first_at = (ev.t_s - ev.latency_s + ev.ttft_s
                            if ev.latency_s is not None and ev.ttft_s is not None else None)
                self._done.append(_Done(ev.t_s, ev.stage, ev.ttft_s, ev.tpot_s, ev.latency_s,
                                        ev.queue_s, ev.output_tokens, first_at))
            else:
                self._pending.pop(ev.request_id, None)
            if ev.phase == "submitted":
                self._arrivals += 1
        elif isinstance(ev, WorkflowEvent):
            if ev.phase == "finished" and ev.latency_s is not None:
                self._workflows.append((ev.t_s, ev.latency_s))
        elif isinstance(ev, EngineStateEvent):
            if ev.source == "engine":
                if ev.output_tokens_total is not None:
                    self._engine_tokens.append((ev.t_s, float(ev.output_tokens_total)))
                if ev.waiting is not None:
                    self._waiting_engine = ev.waiting
            elif ev.source == "client":
                if ev.output_tokens_total is not None:
                    # Tokens streamed to the client so far: the counter for engines
                    # that report none of their own.
                    self._client_tokens.append((ev.t_s, float(ev.output_tokens_total)))
                if ev.waiting is not None:
                    self._waiting_client = ev.waiting
                if ev.running is not None:
                    self._outstanding.append((ev.t_s, ev.running + (ev.waiting or 0)))
        elif isinstance(ev, KnobEvent) and ev.knob == "rate":
            self.rate = ev.value

    def reset(self, t: float) -> None:
        """Start a new epoch at `t`: keep only the last reading of each counter before it
        (the base the next interpolation needs)."""
        self.t0 = t
        for dev, series in self._energy.items():
            self._energy[dev] = series[-1:]
        self._engine_tokens = self._engine_tokens[-1:]
        self._client_tokens = self._client_tokens[-1:]
        self._backlog_start = self.backlog
        self._outstanding = self._outstanding[-1:]
        self._done.clear()
        self._first.clear()
        self._workflows.clear()
        self._arrivals = 0

    def _energy_j(self, a: float, b: float) -> float | None:
        total = 0.0
        seen = False
        for series in self._energy.values():
            ea, eb = _interp(series, a), _interp(series, b)
            if ea is not None and eb is not None and len(series) >= 2:
                total += eb - ea
                seen = True
        # A counter that went back (a meter restarted) gives no reading, not a negative.
        return total if seen and total >= 0 else None

    @property
    def backlog(self) -> int:
        return self._waiting_client + self._waiting_engine

    def _tokens(self, a: float, b: float) -> float:
        for s in (self._engine_tokens, self._client_tokens):
            if len(s) >= 2 and s[0][0] <= a + 1.0 and s[-1][0] >= b - 1.5:
                ta, tb = _interp(s, a), _interp(s, b)
                if ta is not None and tb is not None:
                    return tb - ta
        return float(sum(d.tokens for d in self._done if a < d.t <= b))

    def measure(self, now: float, parts: int = 10, window_s: float = 30.0,
                own_only: bool = False) -> Measurement:
        """The epoch so far; with `own_only`, latencies of the requests served under this
        setting only (the epoch after a back-off: the requests the setting before left
        behind drain in it and would call the new one a violation too)."""
        self._now = now
        m = Measurement(self.t0, now, finished=len(self._done),
                        backlog_start=self._backlog_start, backlog_end=self.backlog,
                        stages_seen=tuple(sorted(self.stages)))
        pts = [(t, float(n)) for t, n in self._outstanding if t >= self.t0]
        if len(pts) >= 5:
            fit = fit_power(pts)  # the same least squares, of count against time
            if fit is not None:
                m.outstanding_growth = fit.b * (pts[-1][0] - pts[0][0])
                m.outstanding_mean = fit.a + fit.b * fit.r_mean
        span = now - self.t0
        energy = self._energy_j(self.t0, now)
        tokens = self._tokens(self.t0, now)
        m.tokens = tokens
        if energy is not None:
            m.energy_j = energy
            if tokens > 0:
                m.j_per_token = energy / tokens
                m.fit = self._fit(parts)
                if m.fit is not None and m.fit.r_mean > 0:
                    m.noise = m.fit.j_at(m.fit.r_mean)[1]
        # The offered load is the rate knob (open loop). A closed loop has none of its
        # own: its arrivals follow its completions, which the knobs themselves move.
        m.load_per_s = self.rate
        m.arrivals_per_s = self._arrivals / span if span > 0 else None
        ttfts = [d.ttft for d in self._done if d.ttft is not None]
        queues = [d.queue for d in self._done if d.queue is not None and d.ttft is not None]
        if ttfts and queues:
            m.queue_share = min(1.0, sum(queues) / max(sum(ttfts), 1e-12))
        for target in self.objective.targets:
            values = self._own_values(target) if own_only else self._values(target)
            m.counts[target.name] = len(values)
            if values:
                values.sort()
                m.observed[target.name] = quantile(values, target.quantile)
                m.over[target.name] = len(values) - bisect.bisect_right(values, target.limit_s)
            sc = self._scatter(target, now, window_s)
            if sc is not None:
                m.scatter[target.name] = sc
        return m

    def _scatter(self, target: Target, now: float, window_s: float) -> float | None:
        """The relative scatter of a `window_s` window's quantile: the quantiles of the
        epoch's three parts, their relative standard deviation, scaled from the part's
        length to the window's (as 1/sqrt(samples))."""
        span = now - self.t0
        if span <= 0:
            return None
        part = span / 3
        qs: list[float] = []
        for i in range(3):
            a, b = self.t0 + part * i, self.t0 + part * (i + 1)
            v = self._values_between(target, a, b)
            if len(v) < 5:
                return None
            v.sort()
            qs.append(quantile(v, target.quantile))
        mean = sum(qs) / 3
        if mean <= 0:
            return None
        sd = (sum((q - mean) ** 2 for q in qs) / 2) ** 0.5
        return sd / mean * (part / window_s) ** 0.5

    def _waited(self, t: Target, own_since: float = -math.inf) -> list[float]:
        """Lower bounds of the TTFT of requests still waiting for their first token (that
        arrived at `own_since` or later)."""
        now = self._now
        return [now - sub for sub, stage in self._pending.values()
                if sub >= own_since and (t.stage is None or stage == t.stage)]

    def _values_between(self, t: Target, a: float, b: float,
                        own_since: float = -math.inf) -> list[float]:
        """The target's values in (a, b]. With `own_since`, TTFT only of requests that
        arrived then or later and time per token only of requests that began decoding
        then or later (the requests served under the setting in force since then)."""
        if t.metric == "workflow":
            return [lat for when, lat in self._workflows if a < when <= b]
        if t.metric == "ttft":
            return [v for when, stage, v in self._first if a < when <= b and v is not None
                    and when - v >= own_since and (t.stage is None or stage == t.stage)] + (
                        self._waited(t, own_since) if b >= self._now else [])
        own = t.metric == "tpot" and own_since > -math.inf
        out: list[float] = []
        for d in self._done:
            if a < d.t <= b and (t.stage is None or d.stage == t.stage) and (
                    not own or (d.first_at is not None and d.first_at >= own_since)):
                v = d.tpot if t.metric == "tpot" else d.latency
                if v is not None:
                    out.append(v)
        return out

    def recent(self, now: float, window_s: float) -> Measurement:
        """Latency quantiles of the last `window_s` only (no energy): what an early
        violation is judged on, so that it shows within seconds of starting."""
        self._now = now
        since = now - window_s
        m = Measurement(max(self.t0, since), now, backlog_start=self._backlog_start,
                        backlog_end=self.backlog)
        for target in self.objective.targets:
            values = self._own_values(target, since)
            m.counts[target.name] = len(values)
            if values:
                values.sort()
                m.observed[target.name] = quantile(values, target.quantile)
                m.over[target.name] = len(values) - bisect.bisect_right(values, target.limit_s)
        m.finished = sum(1 for d in self._done if d.t > since)
        m.tokens = self._tokens(m.t0, now)  # the load right now, for the policy's trust
        m.load_per_s = self.rate
        return m

    def _own_values(self, target: Target, since: float = -math.inf) -> list[float]:
        """The target's values since `since` of the requests served under this setting
        only: time per token of requests that began decoding in the epoch (one that
        began before, under the setting before, tells of that one), time to first token
        of requests that arrived in it (one queued under the setting before still drains
        now)."""
        return self._values_between(target, since, math.inf, own_since=self.t0)

    def _values(self, t: Target, since: float = -math.inf) -> list[float]:
        """The target's values of the requests (or workflows) since `since`, and the
        waiting requests' lower bounds for TTFT."""
        return self._values_between(t, since, math.inf)

    def _fit(self, parts: int) -> PowerFit | None:
        """Power against token rate over `parts` equal parts of the epoch."""
        span = (self._last_t() - self.t0)
        if parts < 3 or span <= 0:
            return None
        points: list[tuple[float, float]] = []
        for i in range(parts):
            a = self.t0 + span * i / parts
            b = self.t0 + span * (i + 1) / parts
            e = self._energy_j(a, b)
            if e is None:
                return None
            points.append((self._tokens(a, b) / (b - a), e / (b - a)))
        return fit_power(points)

    def _last_t(self) -> float:
        ends = [s[-1][0] for s in self._energy.values() if s]
        return max(ends) if ends else self.t0
