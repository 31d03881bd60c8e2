"""Live statistics, computed from the event stream alone.

The same class serves the live run (a bus subscriber), the dashboard, the headless
printer, `report` on a recorded session and replay: whatever is shown live can be
recomputed from the file.
"""

from __future__ import annotations

import bisect
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from app.core.events import (
    RUN_ENDED,
    EndEvent,
    EngineStateEvent,
    Event,
    KnobEvent,
    RequestEvent,
    Sample,
    SessionHeader,
    WorkflowEvent,
)


class Quantiles:
    """Exact quantiles over a sorted list; inserts are O(log n) search + memmove,
    which stays cheap for the hundreds of thousands of requests of a long run."""

    __slots__ = ("_v",)

    def __init__(self) -> None:
        self._v: list[float] = []

    def add(self, x: float) -> None:
        bisect.insort(self._v, x)

    def __len__(self) -> int:
        return len(self._v)

    def q(self, p: float) -> float | None:
        if not self._v:
            return None
        # nearest-rank on the sorted values, like numpy's "lower" with interpolation
        pos = p * (len(self._v) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(self._v) - 1)
        return self._v[lo] + (self._v[hi] - self._v[lo]) * (pos - lo)


@dataclass(slots=True)
class StageStats:
    stage: str
    count: int = 0
    failed: int = 0
    cancelled: int = 0  # cut off by the end of the run, not a failure
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    ttft_p50_s: float | None = None
    tpot_p50_s: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    energy_j: float = 0.0
    energy_by_component_j: dict[str, float] = field(default_factory=dict)
    j_per_output_token: float | None = None


@dataclass(slots=True)
class StatsSnapshot:
    t_s: float = 0.0
    duration_s: float = 0.0
    requests_submitted: int = 0
    requests_finished: int = 0
    requests_failed: int = 0
    requests_cancelled: int = 0  # cut off by the end of the run, not a failure
    requests_in_flight: int = 0
    workflows_finished: int = 0
    workflows_failed: int = 0
    workflow_latency_p50_s: float | None = None
    workflow_latency_p90_s: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    tokens_per_s: float | None = None
    requests_per_s: float | None = None
    recent_tokens_per_s: float | None = None
    ttft_p50_s: float | None = None
    ttft_p90_s: float | None = None
    ttft_p99_s: float | None = None
    tpot_p50_s: float | None = None
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    energy_j: dict[str, float] = field(default_factory=dict)
    idle_energy_j: dict[str, float] = field(default_factory=dict)
    energy_total_j: float = 0.0
    avg_power_w: dict[str, float] = field(default_factory=dict)
    power_w: dict[str, float] = field(default_factory=dict)
    j_per_output_token: float | None = None
    gpu_j_per_output_token: float | None = None
    stages: list[StageStats] = field(default_factory=list)
    knobs: dict[str, float | None] = field(default_factory=dict)
    failure_reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class _StageAcc:
    __slots__ = ("cancelled", "energy", "failed", "finished", "latency", "out_tok", "prompt_tok",
                 "tpot", "ttft")

    def __init__(self) -> None:
        self.latency = Quantiles()
        self.ttft = Quantiles()
        self.tpot = Quantiles()
        self.finished = 0
        self.failed = 0
        self.cancelled = 0
        self.prompt_tok = 0
        self.out_tok = 0
        self.energy: dict[str, float] = defaultdict(float)


class LiveStats:
    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._t = 0.0
        self._t_first: float | None = None
        self._stages: dict[str, _StageAcc] = {}
        self._all = _StageAcc()
        self._submitted = 0
        self._wf_latency = Quantiles()
        self._wf_finished = 0
        self._wf_failed = 0
        # per device: (component, first energy, first t, last energy, last t)
        self._dev: dict[str, list[Any]] = {}
        self._power: dict[str, float] = {}
        self._knobs: dict[str, float | None] = {}
        self._reasons: dict[str, int] = defaultdict(int)
        # recent token progress from client-side engine_state events: (t, cumulative)
        self._progress: deque[tuple[float, int]] = deque()
        self._end_idle: dict[str, float] | None = None

    # -- feeding -------------------------------------------------------------
    def on_event(self, ev: Event) -> None:
        if ev.kind != "session":
            self._t = max(self._t, ev.t_s)
            if self._t_first is None:
                self._t_first = ev.t_s
        if isinstance(ev, Sample):
            self._on_sample(ev)
        elif isinstance(ev, RequestEvent):
            self._on_request(ev)
        elif isinstance(ev, WorkflowEvent):
            if ev.phase == "finished":
                self._wf_finished += 1
                if ev.latency_s is not None:
                    self._wf_latency.add(ev.latency_s)
            elif ev.phase == "failed" and ev.reason != RUN_ENDED:
                self._wf_failed += 1
        elif isinstance(ev, KnobEvent):
            self._knobs[ev.knob] = ev.value
        elif isinstance(ev, SessionHeader):
            self._knobs.update(ev.knobs)
        elif isinstance(ev, EngineStateEvent) and ev.source == "client":
            if ev.output_tokens_total is not None:
                self._progress.append((ev.t_s, ev.output_tokens_total))
                while self._progress and self._progress[0][0] < ev.t_s - self.window_s:
                    self._progress.popleft()
        elif isinstance(ev, EndEvent):
            idle = ev.summary.get("idle_energy_j")
            if isinstance(idle, dict):
                self._end_idle = {str(k): float(v) for k, v in idle.items()}

    def _on_sample(self, s: Sample) -> None:
        if s.power_w is not None:
            self._power[s.device] = s.power_w
        if s.energy_mj is None:
            return
        d = self._dev.get(s.device)
        if d is None:
            self._dev[s.device] = [s.component, s.energy_mj, s.t_s, s.energy_mj, s.t_s]
        else:
            d[3], d[4] = s.energy_mj, s.t_s

    def _on_request(self, r: RequestEvent) -> None:
        if r.phase == "submitted":
            self._submitted += 1
            return
        if r.phase not in ("finished", "failed"):
            return
        acc = self._stages.get(r.stage)
        if acc is None:
            acc = self._stages[r.stage] = _StageAcc()
        for a in (acc, self._all):
            # A failed request's prompt may never have reached the engine: only count
            # prompts that were processed (their first token came).
            if r.phase == "finished" or r.ttft_s is not None:
                a.prompt_tok += r.prompt_tokens
            a.out_tok += r.output_tokens
            for comp, j in (r.energy_j or {}).items():
                a.energy[comp] += j
            if r.phase == "finished":
                a.finished += 1
                if r.latency_s is not None:
                    a.latency.add(r.latency_s)
                if r.ttft_s is not None:
                    a.ttft.add(r.ttft_s)
                if r.tpot_s is not None:
                    a.tpot.add(r.tpot_s)
            elif r.reason == RUN_ENDED:
                a.cancelled += 1
            else:
                a.failed += 1
        if r.phase == "failed" and r.reason != RUN_ENDED:
            self._reasons[r.reason or "unknown"] += 1

    # -- reading -------------------------------------------------------------
    def snapshot(self) -> StatsSnapshot:
        a = self._all
        t0 = self._t_first or 0.0
        dur = max(0.0, self._t - t0)
        measured: dict[str, float] = defaultdict(float)
        span: dict[str, float] = defaultdict(float)
        for comp, e0, t_a, e1, t_b in self._dev.values():
            measured[comp] += (e1 - e0) / 1000.0
            span[comp] = max(span[comp], t_b - t_a)
        avg_power = {c: measured[c] / span[c] for c in measured if span[c] > 0}
        if self._end_idle is not None:
            idle = dict(self._end_idle)
        else:
            # Energy not yet attributed to a finished request: idle, plus the share of
            # requests still in flight (exact once the run has ended).
            idle = {c: max(0.0, measured[c] - a.energy.get(c, 0.0)) for c in measured}
        total = sum(measured.values())
        recent = None
        if len(self._progress) >= 2:
            (ta, na), (tb, nb) = self._progress[0], self._progress[-1]
            if tb > ta:
                recent = (nb - na) / (tb - ta)
        stages = [self._stage_stats(name, acc) for name, acc in sorted(self._stages.items())]
        return StatsSnapshot(
            t_s=self._t,
            duration_s=dur,
            requests_submitted=self._submitted,
            requests_finished=a.finished,
            requests_failed=a.failed,
            requests_cancelled=a.cancelled,
            requests_in_flight=max(0, self._submitted - a.finished - a.failed - a.cancelled),
            workflows_finished=self._wf_finished,
            workflows_failed=self._wf_failed,
            workflow_latency_p50_s=self._wf_latency.q(0.5),
            workflow_latency_p90_s=self._wf_latency.q(0.9),
            prompt_tokens=a.prompt_tok,
            output_tokens=a.out_tok,
            tokens_per_s=a.out_tok / dur if dur > 0 else None,
            requests_per_s=a.finished / dur if dur > 0 else None,
            recent_tokens_per_s=recent,
            ttft_p50_s=a.ttft.q(0.5),
            ttft_p90_s=a.ttft.q(0.9),
            ttft_p99_s=a.ttft.q(0.99),
            tpot_p50_s=a.tpot.q(0.5),
            latency_p50_s=a.latency.q(0.5),
            latency_p90_s=a.latency.q(0.9),
            latency_p99_s=a.latency.q(0.99),
            energy_j=dict(measured),
            idle_energy_j=idle,
            energy_total_j=total,
            avg_power_w=avg_power,
            power_w=dict(self._power),
            j_per_output_token=total / a.out_tok if a.out_tok and total else None,
            gpu_j_per_output_token=(
                measured["gpu"] / a.out_tok if a.out_tok and measured.get("gpu") else None
            ),
            stages=stages,
            knobs=dict(self._knobs),
            failure_reasons=dict(self._reasons),
        )

    @staticmethod
    def _stage_stats(name: str, acc: _StageAcc) -> StageStats:
        energy = sum(acc.energy.values())
        return StageStats(
            stage=name,
            count=acc.finished,
            failed=acc.failed,
            cancelled=acc.cancelled,
            latency_p50_s=acc.latency.q(0.5),
            latency_p90_s=acc.latency.q(0.9),
            latency_p99_s=acc.latency.q(0.99),
            ttft_p50_s=acc.ttft.q(0.5),
            tpot_p50_s=acc.tpot.q(0.5),
            prompt_tokens=acc.prompt_tok,
            output_tokens=acc.out_tok,
            energy_j=energy,
            energy_by_component_j=dict(acc.energy),
            j_per_output_token=energy / acc.out_tok if acc.out_tok and energy else None,
        )
