"""The objective judged window by window, as an operator reads it: how many `window_s`
windows since the autopilot started met it.

An epoch that meets the objective can hold a 30 s window that does not (a burst inside
it); the share of windows met is what a latency objective is held to ("p90 TTFT under
2 s in 95% of 30 s windows"), so the autopilot counts it beside its own decisions and
each decision carries it (`windows_met` in its measurements, shown on the dashboard).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.core.autopilot.measure import quantile
from app.core.autopilot.objective import Objective
from app.core.events import Event, RequestEvent, WorkflowEvent

#: A window with fewer requests than this is not judged (its p90 says nothing).
MIN_WINDOW_REQUESTS = 5


@dataclass(frozen=True, slots=True)
class WindowTally:
    judged: int  # windows with enough requests to judge
    missed: int  # of them, windows where some target's quantile went over its limit

    @property
    def met(self) -> int:
        return self.judged - self.missed

    def text(self) -> str:
        return f"{self.met}/{self.judged}"


class WindowLedger:
    """Each `window_s` window of the session (aligned to multiples of it) judged on the
    requests (workflows, for a workflow target) that finished in it: met when every
    target with at least MIN_WINDOW_REQUESTS values is within its limit (a target with
    fewer is not judged there; a window with no target judged is not counted)."""

    def __init__(self, objective: Objective, window_s: float) -> None:
        self.objective = objective
        self.window_s = window_s
        self._index: int | None = None  # the open window's index (start / window_s)
        self._values: dict[str, list[float]] = {t.name: [] for t in objective.targets}
        self.judged = 0
        self.missed = 0

    def on_event(self, ev: Event) -> None:
        if isinstance(ev, RequestEvent) and ev.phase == "finished":
            self.advance(ev.t_s)
            for t in self.objective.targets:
                if t.metric == "workflow" or (t.stage is not None and ev.stage != t.stage):
                    continue
                v = ev.ttft_s if t.metric == "ttft" else ev.tpot_s if t.metric == "tpot" \
                    else ev.latency_s
                if v is not None:
                    self._values[t.name].append(v)
        elif isinstance(ev, WorkflowEvent) and ev.phase == "finished" \
                and ev.latency_s is not None:
            self.advance(ev.t_s)
            for t in self.objective.targets:
                if t.metric == "workflow":
                    self._values[t.name].append(ev.latency_s)

    def advance(self, now: float) -> None:
        """Close the window open before `now`'s (the ones after it, empty, are not judged)."""
        index = math.floor(now / self.window_s)
        if self._index is None:
            self._index = index
        elif index > self._index:
            self._close()
            self._index = index

    def _close(self) -> None:
        judged, met = False, True
        for t in self.objective.targets:
            vals = self._values[t.name]
            if len(vals) >= MIN_WINDOW_REQUESTS:
                judged = True
                met = met and quantile(sorted(vals), t.quantile) <= t.limit_s
            vals.clear()
        if judged:
            self.judged += 1
            self.missed += not met

    def tally(self, now: float) -> WindowTally:
        """The windows closed by `now`: judged and missed."""
        self.advance(now)
        return WindowTally(self.judged, self.missed)


__all__ = ["MIN_WINDOW_REQUESTS", "WindowLedger", "WindowTally"]
