"""The headless view: one short progress line per second, and a closing summary.

A plain subscriber of the event stream like the dashboard; it prints at most once a
second of wall time, whether the run is on wall or virtual time.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from app.core.events import (
    AutopilotEvent,
    ErrorEvent,
    Event,
    KnobEvent,
    RequestEvent,
    Sample,
    StageEvent,
)
from app.core.saturation import SaturationWatch
from app.core.stats import LiveStats, StatsSnapshot


def _f(v: float | None, fmt: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{unit}"


def progress_line(s: StatsSnapshot) -> str:
    # Local GPUs are gpuN; remote ones (dcgm, prometheus meters) NODE/gpuN.
    gpu_w = sum(w for dev, w in s.power_w.items() if dev.rsplit("/", 1)[-1].startswith("gpu")
                ) if s.power_w else None
    return (
        f"t={s.t_s:7.1f}s  req {s.requests_finished:>6} done {s.requests_in_flight:>4} in flight"
        f" {s.requests_failed:>3} failed  wf {s.workflows_finished:>5}"
        f"  {_f(s.recent_tokens_per_s, '8.0f')} tok/s"
        f"  p50 {_f(s.latency_p50_s, '6.2f', 's')}"
        f"  GPU {_f(gpu_w, '5.0f', 'W')}"
        f"  {_f(s.j_per_streamed_token, '6.3f')} J/tok"  # live: per token streamed so far
    )


#: Kinds that neither the printer nor its saturation watch reads: most of a run's
#: events (meter samples, requests, stages) skip the type checks.
_SILENT_KINDS = frozenset({Sample.kind, RequestEvent.kind, StageEvent.kind})


class HeadlessPrinter:
    def __init__(self, stats: LiveStats, out: IO[str] | None = None, period_s: float = 1.0) -> None:
        self._stats = stats
        self._out = out or sys.stdout
        self._period_s = period_s
        self._last = time.monotonic()
        self._pilot_state = ""
        self._saturation = SaturationWatch()
        self._saturated: str | None = None

    def on_event(self, ev: Event) -> None:
        if ev.kind not in _SILENT_KINDS:
            self._note(ev)
        now = time.monotonic()
        if now - self._last >= self._period_s:
            self._last = now
            snap = self._stats.snapshot()
            saturated = self._saturation.reason(snap.t_s)
            if saturated != self._saturated and saturated is not None:
                self._print(f"{saturated.upper().split(':')[0]}: {saturated.split(': ', 1)[1]}"
                            " (the engine cannot keep up with the arrivals)")
            self._saturated = saturated
            self._print(progress_line(snap) + ("  SATURATED" if saturated else ""))

    def _note(self, ev: Event) -> None:
        """An event the printer or its saturation watch reads."""
        self._saturation.on_event(ev)
        if isinstance(ev, KnobEvent) and ev.is_change:
            why = f": {ev.reason}" if ev.reason else ""
            self._print(f"knob {ev.knob}: {ev.previous} -> {ev.value} ({ev.source}) "
                        f"at t={ev.t_s:.1f}s{why}")
        elif isinstance(ev, AutopilotEvent):
            # Each change of state; a hold that goes on is one line, not one per epoch.
            if ev.state != self._pilot_state or ev.state not in ("holding", "measuring"):
                self._print(f"autopilot {ev.state} at t={ev.t_s:.1f}s: {ev.reason}")
            self._pilot_state = ev.state
        elif isinstance(ev, ErrorEvent):
            level = "error" if ev.fatal else "warning"
            first = (ev.message or "").strip().splitlines()
            self._print(f"{level} [{ev.source}] {first[0] if first else '(no message)'}")

    def _print(self, line: str) -> None:
        try:
            print(line, file=self._out, flush=True)
        except BrokenPipeError:
            self._period_s = float("inf")  # the reader went away: stop printing


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The closing summary of a run (or a replay) from its stats' `to_dict()`, possibly
    with the runner's extra keys (`wall_s`, `window_end_s`, `drain_s`, ...)."""

    def g(key: str) -> Any:
        return summary.get(key)

    def num(key: str) -> float | None:
        v = summary.get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    energy = summary.get("energy_j") or {}
    idle = summary.get("idle_energy_j") or {}
    wall = f" (wall {g('wall_s'):.1f} s)" if g("wall_s") is not None else ""
    drain, window = num("drain_s"), num("window_duration_s")
    if window is None:
        window = num("window_end_s")
    if drain is not None and window is not None:
        duration = f"duration {window:.1f} s measured + {drain:.1f} s drain{wall}"
    else:
        duration = f"duration {g('duration_s'):.1f} s{wall}"
    cut = f", {g('requests_cancelled')} cut off" if g("requests_cancelled") else ""
    shed = g("workflows_shed")
    parts = [
        duration,
        f"requests {g('requests_finished')} finished, {g('requests_failed')} failed{cut};"
        f" workflows {g('workflows_finished')} finished" + (f", {shed} shed" if shed else ""),
        f"tokens {g('output_tokens')} out / {g('prompt_tokens')} in;"
        f" {_f(g('tokens_per_s'), '.1f')} tok/s",
        f"latency p50 {_f(g('latency_p50_s'), '.3f', 's')} p99 {_f(g('latency_p99_s'), '.3f', 's')};"
        f" TTFT p50 {_f(g('ttft_p50_s'), '.3f', 's')}",
    ]
    if shed:
        parts.append(f"{shed} workflow arrivals shed: the engine could not keep up with the"
                     " offered rate")
    if energy:
        comp = ", ".join(f"{c} {j:.1f} J" for c, j in sorted(energy.items()))
        idle_s = ", ".join(f"{c} {j:.1f} J" for c, j in sorted(idle.items()))
        power = ", ".join(f"{c} {w:.0f} W" for c, w in sorted((g("avg_power_w") or {}).items()))
        parts.append(f"energy {comp} (idle {idle_s}); average power {power}")
        line = (f"J/token {_f(g('j_per_output_token'), '.4f')}"
                f" (GPU {_f(g('gpu_j_per_output_token'), '.4f')})")
        if drain is not None:
            line = (f"{line} whole run; {_f(num('window_j_per_output_token'), '.4f')}"
                    " in the measured window")
        parts.append(line)
    return parts
