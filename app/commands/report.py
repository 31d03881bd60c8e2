"""`wattflow report SESSION... [--csv PATH] [--json] [--plot PNG]`

Recomputes a recorded session's statistics with the same `LiveStats` the live run
uses (so the report and the dashboard cannot disagree), then prints a table per
stage and the run's totals, a comparison when several sessions are given (with, per
stage, each later session's difference from the first: app/core/compare.py), and
optionally writes the stage rows as CSV and GPU power over time as a PNG.

`--json` prints one document whose schema (`"schema": 1`) is docs/report-json.md.
Figures come in two spans: the whole run (the drain after the measured window
included) and the measured window alone; see that file for what each number counts.
A run whose knobs were changed is also cut into segments between consecutive changes
(J/token, tokens/s, p90 latency of each). Quantiles come from the same sketches as the
live view (within 1%); `--exact` recomputes them exactly from the file.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from app.commands.report_fleet import FleetCollector
from app.core.clip import clip_text
from app.core.compare import METRICS, differences, format_difference
from app.core.events import (
    AutopilotEvent,
    EndEvent,
    Event,
    KnobEvent,
    MarkEvent,
    Sample,
    SessionHeader,
)
from app.core.knobs import format_value
from app.core.session_reader import SessionError, format_duration, open_session
from app.core.stats import LiveStats, StageStats, StatsSnapshot
from app.core.stats_window import KnobSegment

CUT_NOTE = "session was cut short: last line incomplete (crash?)"
OPEN_NOTE = "no end record: the run did not close cleanly"
NO_WINDOW_NOTE = ("no window end recorded (a session from an older wattflow): the whole run,"
                  " any drain after the duration included, counts as the measured window")

#: The version of the `--json` document (docs/report-json.md). Bump it when a key is
#: renamed, removed or changes meaning; adding keys does not bump it.
JSON_SCHEMA = 1

CSV_COLUMNS = [
    "session",
    "stage",
    "count",
    "failed",
    "cancelled",
    "latency_p50_s",
    "latency_p90_s",
    "latency_p99_s",
    "ttft_p50_s",
    "tpot_p50_s",
    "prompt_tokens",
    "output_tokens",
    "failed_output_tokens",
    "cancelled_output_tokens",
    "energy_j",
    "gpu_j",
    "cpu_j",
    "dram_j",
    "j_per_output_token",
    "failed_energy_j",
    "cancelled_energy_j",
]


@dataclass(slots=True)
class PowerSeries:
    t_s: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)


@dataclass(slots=True)
class SessionReport:
    path: Path
    header: SessionHeader
    stats: StatsSnapshot
    end: EndEvent | None
    truncated: bool
    warnings: list[str]
    gpu_power: dict[str, PowerSeries] = field(default_factory=dict)  # device -> series
    knob_changes: list[KnobEvent] = field(default_factory=list)
    autopilot: list[AutopilotEvent] = field(default_factory=list)  # its decisions
    endpoints: list[dict[str, Any]] = field(default_factory=list)  # report_fleet's rows
    nodes: list[dict[str, Any]] = field(default_factory=list)
    marks: list[MarkEvent] = field(default_factory=list)  # dropped with `m` in the dashboard

    @property
    def notes(self) -> list[str]:
        notes: list[str] = []
        if self.truncated:
            notes.append(CUT_NOTE)
        elif self.end is None:
            notes.append(OPEN_NOTE)
        s = self.stats
        if s.workflows_shed:
            notes.append(shed_note(s))
        if s.window_end_s is None:
            if self.end is not None:
                notes.append(NO_WINDOW_NOTE)
        elif s.drain_s:
            n = s.drain_requests_finished
            drained = ("finished requests" if n is None
                       else f"finished {n:,} request{'' if n == 1 else 's'}")
            notes.append(
                f"measured window: the first {_duration(s.window_duration_s)}; the"
                f" {_duration(s.drain_s)} drain after it {drained} (in the whole-run figures,"
                " not the window's) and used"
                f" {_j(s.drain_energy_total_j if s.drain_energy_j else None)} J"
            )
        if s.requests_cancelled:
            energy = (f": their {s.cancelled_energy_j:,.1f} J is in the whole-run energy and"
                      " each stage's cut-off J, not in any stage's J/token"
                      if s.energy_j else "")
            notes.append(f"{s.requests_cancelled:,} requests cut off by the end of the run{energy}")
        return notes


def analyse(path: str | Path, *, keep_series: bool = False, exact: bool = False) -> SessionReport:
    """Stream one session through LiveStats (with exact quantiles if `exact`). Raises
    SessionError for bad input."""
    stream = open_session(path)
    stats = LiveStats(exact=exact)
    gpu_power: dict[str, PowerSeries] = {}
    knob_changes: list[KnobEvent] = []
    pilot: list[AutopilotEvent] = []
    marks: list[MarkEvent] = []

    def feed(ev: Event) -> None:
        try:
            stats.on_event(ev)
        except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as e:
            # A line that parsed as JSON but holds values of the wrong type.
            raise SessionError(
                f"{stream.path}: bad {ev.kind} event at t={ev.t_s}: {type(e).__name__}: {e}"
            ) from None

    feed(stream.header)
    fleet = FleetCollector(stream.header)
    for ev in stream:
        feed(ev)
        fleet.feed(ev)
        if isinstance(ev, KnobEvent) and ev.is_change:
            knob_changes.append(ev)
        elif isinstance(ev, AutopilotEvent):
            pilot.append(ev)
        elif isinstance(ev, MarkEvent):
            marks.append(ev)
        if not keep_series:
            continue
        if isinstance(ev, Sample) and ev.component == "gpu":
            w = ev.power_w if ev.power_w is not None else ev.power_avg_w
            if w is not None:
                series = gpu_power.setdefault(ev.device, PowerSeries())
                series.t_s.append(ev.t_s)
                series.power_w.append(w)
    if stream.end is not None:
        feed(stream.end)
        fleet.feed(stream.end)
    try:
        snapshot = stats.snapshot()
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as e:
        raise SessionError(
            f"{stream.path}: events hold values of the wrong type: {type(e).__name__}: {e}"
        ) from None
    return SessionReport(
        path=stream.path,
        header=stream.header,
        stats=snapshot,
        end=stream.end,
        truncated=stream.truncated,
        warnings=list(stream.warnings),
        gpu_power=gpu_power,
        knob_changes=knob_changes,
        autopilot=pilot,
        endpoints=fleet.endpoint_rows(),
        nodes=fleet.node_rows(),
        marks=marks,
    )


# -- formatting -------------------------------------------------------------------------


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _i(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def _j(x: float | None) -> str:
    return _f(x, 1)


def _name(info: dict[str, Any]) -> str:
    return str(info.get("name") or "?")


def _title(r: SessionReport) -> str:
    model = r.header.engine.get("model")
    engine = _name(r.header.engine) + (f" ({model})" if model else "")
    return f"{r.path.name}: {_name(r.header.workload)} on {engine}"


def shed_note(s: StatsSnapshot) -> str:
    note = (f"{s.workflows_shed:,} workflow arrivals shed: the engine could not keep up with"
            " the offered rate")
    if s.shed_reasons:
        reason, _ = max(s.shed_reasons.items(), key=lambda kv: kv[1])
        note += f" ({reason})"
    return note


def _stage_table(r: SessionReport) -> Table:
    s = r.stats
    measured = bool(s.energy_j)  # "-": nothing measured energy in this session
    failed_col = any(st.failed for st in s.stages)
    cut_col = any(st.cancelled for st in s.stages)
    t = Table(title=f"{_title(r)}: per stage (finished requests; whole run)",
              title_justify="left")
    t.add_column("stage", no_wrap=True)
    for col in ("requests", "failed", "cut off", "p50 s", "p90 s", "p99 s", "TTFT p50 s",
                "out tokens", "energy J", "J/token"):
        t.add_column(col, justify="right")
    if failed_col:
        t.add_column("failed J", justify="right")
    if cut_col:
        t.add_column("cut-off J", justify="right")

    def extra(failed_j: float, cut_j: float) -> list[str]:
        return ([_j(failed_j) if measured else "-"] * failed_col
                + [_j(cut_j) if measured else "-"] * cut_col)

    for st in s.stages:
        t.add_row(
            st.stage or "(none)",
            _i(st.count),
            _i(st.failed),
            _i(st.cancelled),
            _f(st.latency_p50_s, 3),
            _f(st.latency_p90_s, 3),
            _f(st.latency_p99_s, 3),
            _f(st.ttft_p50_s, 3),
            _i(st.output_tokens),
            _j(st.energy_j) if measured else "-",
            _f(st.j_per_output_token, 4),
            *extra(st.failed_energy_j, st.cancelled_energy_j),
        )
    if s.stages:
        t.add_section()
        t.add_row(
            "all stages",
            _i(s.requests_finished),
            _i(s.requests_failed),
            _i(s.requests_cancelled),
            _f(s.latency_p50_s, 3),
            _f(s.latency_p90_s, 3),
            _f(s.latency_p99_s, 3),
            _f(s.ttft_p50_s, 3),
            _i(s.output_tokens),
            _j(s.finished_energy_j) if measured else "-",
            _f(_ratio(s.finished_energy_j, s.output_tokens), 4),
            *extra(s.failed_energy_j, s.cancelled_energy_j),
        )
    else:
        t.add_row("(no requests ended)", *[""] * (10 + failed_col + cut_col))
    return t


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{format_duration(seconds)} ({seconds:,.0f} s)"


def _by_component(total: float, parts: dict[str, float]) -> str:
    if len(parts) < 2:
        return _j(total)
    return f"{total:,.1f} ({', '.join(f'{c} {v:,.1f}' for c, v in sorted(parts.items()))})"


def totals_rows(s: StatsSnapshot) -> list[tuple[str, str]]:
    """The whole run's rows, then (when the session recorded its window end) a section
    for the measured window and one for the drain. A row ("", "") marks a section."""
    measured = bool(s.energy_j)
    window = s.window_end_s is not None and s.drain_s is not None
    duration = _duration(s.duration_s)
    if window:
        duration += (f" = {_duration(s.window_duration_s)} measured window"
                     f" + {_duration(s.drain_s or 0.0)} drain")
    else:
        duration += ", window end not recorded: all of it counts as the window"
    requests = f"{s.requests_finished:,} finished"
    if window and s.drain_requests_finished:
        requests += f" ({s.drain_requests_finished:,} during the drain)"
    requests += f", {s.requests_failed:,} failed"
    if s.requests_cancelled:
        requests += f", {s.requests_cancelled:,} cut off by the end of the run"
    requests += f" of {s.requests_submitted:,} submitted"
    if s.requests_in_flight:
        requests += f", {s.requests_in_flight:,} still in flight"
    workflows = f"{s.workflows_finished:,} finished, {s.workflows_failed:,} failed"
    if s.workflows_shed:
        workflows += f", {s.workflows_shed:,} arrivals shed"
    rows = [("duration", duration), ("requests", requests), ("workflows", workflows)]
    if s.workflows_shed:
        rows.append(("workflow arrivals shed", shed_note(s)))
    tokens = _i(s.output_tokens)
    wasted = s.failed_output_tokens + s.cancelled_output_tokens
    if wasted:
        tokens += f" (and {wasted:,} generated by failed or cut-off requests)"
    rows += [("output tokens", tokens), ("output tokens/s", _f(s.tokens_per_s, 1))]
    if s.streamed_tokens_per_s is not None and s.streamed_output_tokens != s.output_tokens:
        # what the dashboard showed: every request's tokens as they streamed
        rows.append(("tokens/s streamed", f"{_f(s.streamed_tokens_per_s, 1)} (any request's"
                                          " tokens, finished or not)"))
    for comp in ("gpu", "cpu", "dram"):
        if comp in s.energy_j:
            rows.append((f"{comp.upper()} energy J", _j(s.energy_j[comp])))
    if s.idle_energy_j:
        parts = ", ".join(f"{c} {v:,.1f}" for c, v in sorted(s.idle_energy_j.items()))
        rows.append(("idle energy J", f"{sum(s.idle_energy_j.values()):,.1f} ({parts})"))
    if measured and s.requests_failed:
        rows.append(("failed requests' energy J", _j(s.failed_energy_j)))
    if measured and s.requests_cancelled:
        rows.append(("cut-off requests' energy J", _j(s.cancelled_energy_j)))
    rows.append(("avg GPU power W", _f(s.avg_power_w.get("gpu"), 1)))
    rows.append(("J per output token", _f(s.j_per_output_token, 4)))
    if s.gpu_j_per_output_token is not None and set(s.energy_j) != {"gpu"}:
        rows.append(("GPU J per output token", _f(s.gpu_j_per_output_token, 4)))
    if wasted:
        rows.append(("J per generated token", _f(s.j_per_generated_token, 4)))
    if s.failure_reasons:
        top = sorted(s.failure_reasons.items(), key=lambda kv: -kv[1])[:3]
        rows.append(("failures", "; ".join(f"{n} x {reason}" for reason, n in top)))
    if not window:
        return rows
    w_energy = (_by_component(s.window_energy_total_j, s.window_energy_j)
                if s.window_energy_j else "-")
    d_energy = (_by_component(s.drain_energy_total_j, s.drain_energy_j)
                if s.drain_energy_j else "-")
    rows += [
        ("", ""),
        ("window duration", f"{_duration(s.window_duration_s)} (ends at t="
                            f"{s.window_end_s:,.1f} s)"),
        ("window requests finished", _i(s.window_requests_finished)),
        ("window output tokens", _i(s.window_output_tokens)),
        ("window output tokens/s", _f(s.window_tokens_per_s, 1)),
        ("window energy J", w_energy),
        ("window avg GPU power W", _f(s.window_avg_power_w.get("gpu"), 1)),
        ("window J per output token", _f(s.window_j_per_output_token, 4)),
        ("window J per generated token", _f(s.window_j_per_generated_token, 4)),
        ("", ""),
        ("drain duration", _duration(s.drain_s or 0.0)),
        ("drain requests finished", _i(s.drain_requests_finished)),
        ("drain output tokens", _i(s.drain_output_tokens)),
        ("drain energy J", d_energy),
    ]
    return rows


def _totals_table(r: SessionReport) -> Table:
    t = Table(title=f"{r.path.name}: totals (whole run, drain included; then window and drain)",
              title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in totals_rows(r.stats):
        if not k:
            t.add_section()
            continue
        t.add_row(k, v, style="bold red" if k == "workflow arrivals shed" else None)
    return t


def _fleet_tables(r: SessionReport) -> list[Table]:
    """Per endpoint and per node, when the session has several of either."""
    out: list[Table] = []
    if r.endpoints:
        t = Table(title=f"{r.path.name}: per endpoint", title_justify="left")
        for col in ("endpoint", "done", "failed", "out tokens", "TTFT p50 s", "latency p50 s",
                    "energy J", "J/token"):
            t.add_column(col, justify="left" if col == "endpoint" else "right")
        for e in r.endpoints:
            t.add_row(e["endpoint"], _i(e["requests_finished"]), _i(e["requests_failed"]),
                      _i(e["output_tokens"]), _f(e["ttft_p50_s"], 3),
                      _f(e["latency_p50_s"], 3), _j(e["energy_j"]),
                      _f(e["j_per_output_token"], 4))
        out.append(t)
    if r.nodes:
        t = Table(title=f"{r.path.name}: per node (GPU energy counters)", title_justify="left")
        for col in ("node", "GPUs", "GPU energy J", "mean power W", "idle J"):
            t.add_column(col, justify="left" if col == "node" else "right")
        for n in r.nodes:
            t.add_row(n["node"], _i(n["gpus"]), _j(n["gpu_energy_j"]),
                      _f(n["gpu_power_avg_w"], 1), _j(n["idle_energy_j"]))
        out.append(t)
    return out


def comparison_table(reports: list[SessionReport]) -> Table:
    t = Table(title="comparison (window: the measured window only)", title_justify="left")
    # the session names are the point of the table (a sweep's knob values): never cut them
    t.add_column("session", no_wrap=True, min_width=max(len(r.path.name) for r in reports))
    for col in ("J/token", "window J/token", "tok/s", "window tok/s", "GPU W", "p50 s",
                "requests", "cut off", "shed"):
        t.add_column(col, justify="right")
    for r in reports:
        s = r.stats
        t.add_row(
            r.path.name,
            _f(s.j_per_output_token, 4),
            _f(s.window_j_per_output_token, 4),
            _f(s.tokens_per_s, 1),
            _f(s.window_tokens_per_s, 1),
            _f(s.avg_power_w.get("gpu"), 1),
            _f(s.latency_p50_s, 3),
            _i(s.requests_finished),
            _i(s.requests_cancelled),
            _i(s.workflows_shed),
        )
    return t


def difference_table(a: SessionReport, b: SessionReport) -> Table:
    """Per stage and for the whole run: B minus A, and relative to A, sign shown."""
    return snapshots_difference_table(a.path.name, a.stats, b.path.name, b.stats)


def snapshots_difference_table(name_a: str, a: StatsSnapshot, name_b: str,
                               b: StatsSnapshot) -> Table:
    t = Table(title=f"differences: {name_b} minus {name_a} (per stage; relative"
                    " to the first)", title_justify="left")
    t.add_column("stage", no_wrap=True)
    for m in METRICS:
        t.add_column(f"{m.title} B-A", justify="right", no_wrap=True)
    for row in differences(a, b):
        t.add_row(row.label, *(format_difference(row.figures[m.key], m) for m in METRICS))
    return t


def difference_tables(reports: list[SessionReport]) -> list[Table]:
    """Each session after the first against the first."""
    return [difference_table(reports[0], r) for r in reports[1:]]


def _segment_changes(seg: KnobSegment) -> str:
    return "; ".join(seg.changes) if seg.changes else "(start)"


def segments_table(r: SessionReport) -> Table:
    """The run between consecutive knob changes: what each setting gave."""
    s = r.stats
    measured = bool(s.energy_j)
    t = Table(title=f"{r.path.name}: per knob segment (tokens streamed by any request;"
                    " latency of requests finished in the segment)", title_justify="left")
    for col in ("from s", "to s", "knob change", "tok/s", "J/token", "power W", "p90 s",
                "TTFT p90 s", "finished"):
        t.add_column(col, justify="left" if col == "knob change" else "right",
                     no_wrap=col != "knob change")
    for seg in s.knob_segments:
        t.add_row(
            _f(seg.start_s, 1),
            _f(seg.end_s, 1),
            _segment_changes(seg),
            _f(seg.tokens_per_s, 1),
            _f(seg.j_per_token, 4) if measured else "-",
            _f(seg.avg_power_w, 1) if measured else "-",
            _f(seg.latency_p90_s, 3),
            _f(seg.ttft_p90_s, 3),
            _i(seg.requests_finished),
        )
    return t


def make_console() -> Console:
    # markup=False: every string in these tables comes from a session (stage labels,
    # failure reasons, model names) and must print as written, `[/bold]` included.
    console = Console(highlight=False, markup=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 140  # don't squeeze the tables to 80 columns when piped
    return console


#: A session's free text (a mark's label, a reason) printed up to this many characters:
#: a label of megabytes wrapped by the console took a minute, and says nothing more.
MAX_TEXT_CHARS = 500


def _clip(text: str) -> str:
    return clip_text(text, MAX_TEXT_CHARS, "; the session holds it whole")


def _quantile_note(s: StatsSnapshot) -> str:
    if s.quantile_relative_error == 0:
        return "quantiles: exact (--exact)"
    return (f"quantiles: DDSketch, within {s.quantile_relative_error:.0%} of the exact value"
            " (--exact for exact ones)")


def print_reports(reports: list[SessionReport], console: Console) -> None:
    for r in reports:
        console.print(_stage_table(r))
        console.print(_totals_table(r))
        for table in _fleet_tables(r):
            console.print(table)
        for k in r.knob_changes:
            why = f": {_clip(k.reason)}" if k.reason else ""
            console.print(f"knob at t={k.t_s:,.1f} s: {k.knob} {format_value(k.knob, k.previous)}"
                          f" -> {format_value(k.knob, k.value)} ({k.source}){why}")
        if r.autopilot:
            last = r.autopilot[-1]
            moves = sum(1 for k in r.knob_changes if k.source == "autopilot")
            counts = [a.measured["windows_met"] for a in r.autopilot
                      if a.measured and isinstance(a.measured.get("windows_met"), str)]
            met = f"; objective met in {counts[-1]} 30 s windows" if counts else ""
            console.print(f"autopilot: objective {last.objective}; {len(r.autopilot)} decisions, "
                          f"{moves} knob changes{met}; last {last.state} at t={last.t_s:,.1f} s: "
                          f"{_clip(last.reason)}")
        if r.knob_changes:
            console.print(segments_table(r))
        console.print(_quantile_note(r.stats), style="dim")
        for m in r.marks:
            console.print(f"mark at t={m.t_s:,.1f} s: {_clip(m.label)}")
        for note in r.notes:
            style = "bold red" if "arrivals shed" in note else "yellow"
            console.print(note, style=style)
        for w in r.warnings:
            if not r.truncated or "incomplete" not in w:
                console.print(f"warning: {w}", style="yellow")
        console.print()
    if len(reports) > 1:
        console.print(comparison_table(reports))
        for table in difference_tables(reports):
            console.print(table)


# -- JSON (docs/report-json.md) -----------------------------------------------------------

#: Totals keys summed over sessions by `aggregate_totals` (None if any session has None).
_SUM_KEYS = (
    "duration_s", "drain_s", "requests_submitted", "requests_finished", "requests_failed",
    "requests_cancelled", "requests_in_flight", "workflows_finished", "workflows_failed",
    "workflows_shed", "prompt_tokens", "output_tokens", "failed_output_tokens",
    "cancelled_output_tokens", "generated_output_tokens", "energy_total_j", "finished_energy_j",
    "failed_energy_j", "cancelled_energy_j", "streamed_output_tokens", "first_tokens",
)
_WINDOW_SUM_KEYS = ("duration_s", "requests_finished", "output_tokens",
                    "generated_output_tokens", "energy_total_j")
_DRAIN_SUM_KEYS = ("duration_s", "requests_finished", "requests_cancelled", "output_tokens",
                   "generated_output_tokens", "energy_total_j")
_STAGE_SUM_KEYS = ("count", "failed", "cancelled", "prompt_tokens", "output_tokens",
                   "failed_output_tokens", "cancelled_output_tokens", "energy_j", "gpu_j",
                   "cpu_j", "dram_j", "failed_energy_j", "cancelled_energy_j")


def _or_none(x: float, measured: bool) -> float | None:
    return x if measured else None


def window_dict(s: StatsSnapshot) -> dict[str, Any]:
    measured = bool(s.window_energy_j)
    start = s.t_s - s.duration_s
    return {
        "start_s": start,
        "end_s": s.window_end_s if s.window_end_s is not None else s.t_s,
        "duration_s": s.window_duration_s,
        "requests_finished": s.window_requests_finished,
        "output_tokens": s.window_output_tokens,
        "tokens_per_s": s.window_tokens_per_s,
        "generated_output_tokens": s.window_generated_tokens,
        "energy_j": dict(s.window_energy_j),
        "energy_total_j": _or_none(s.window_energy_total_j, measured),
        "avg_power_w": dict(s.window_avg_power_w),
        "j_per_output_token": s.window_j_per_output_token,
        "j_per_generated_token": s.window_j_per_generated_token,
    }


def drain_dict(s: StatsSnapshot) -> dict[str, Any] | None:
    if s.window_end_s is None or s.drain_s is None:
        return None
    return {
        "start_s": s.window_end_s,
        "end_s": s.t_s,
        "duration_s": s.drain_s,
        "requests_finished": s.drain_requests_finished,
        "requests_cancelled": s.requests_cancelled,
        "output_tokens": s.drain_output_tokens,
        "generated_output_tokens": s.drain_generated_tokens,
        "energy_j": dict(s.drain_energy_j),
        "energy_total_j": _or_none(s.drain_energy_total_j, bool(s.drain_energy_j)),
    }


def totals_dict(s: StatsSnapshot) -> dict[str, Any]:
    """One session's `totals` object (docs/report-json.md)."""
    m = bool(s.energy_j)
    return {
        "duration_s": s.duration_s,
        "window_end_s": s.window_end_s,
        "drain_s": s.drain_s,
        "requests_submitted": s.requests_submitted,
        "requests_finished": s.requests_finished,
        "requests_failed": s.requests_failed,
        "requests_cancelled": s.requests_cancelled,
        "requests_in_flight": s.requests_in_flight,
        "workflows_finished": s.workflows_finished,
        "workflows_failed": s.workflows_failed,
        "workflows_shed": s.workflows_shed,
        "prompt_tokens": s.prompt_tokens,
        "output_tokens": s.output_tokens,
        "failed_output_tokens": s.failed_output_tokens,
        "cancelled_output_tokens": s.cancelled_output_tokens,
        "generated_output_tokens": s.generated_output_tokens,
        "tokens_per_s": s.tokens_per_s,
        "requests_per_s": s.requests_per_s,
        "latency_p50_s": s.latency_p50_s,
        "latency_p90_s": s.latency_p90_s,
        "latency_p99_s": s.latency_p99_s,
        "ttft_p50_s": s.ttft_p50_s,
        "ttft_p90_s": s.ttft_p90_s,
        "ttft_p99_s": s.ttft_p99_s,
        "tpot_p50_s": s.tpot_p50_s,
        "tpot_p90_s": s.tpot_p90_s,
        "tpot_p99_s": s.tpot_p99_s,
        "first_tokens": s.first_tokens,
        "streamed_output_tokens": s.streamed_output_tokens,
        "streamed_tokens_per_s": s.streamed_tokens_per_s,
        "j_per_streamed_token": s.j_per_streamed_token,
        "quantile_relative_error": s.quantile_relative_error,
        "workflow_latency_p50_s": s.workflow_latency_p50_s,
        "workflow_latency_p90_s": s.workflow_latency_p90_s,
        "energy_j": dict(s.energy_j),
        "energy_total_j": _or_none(s.energy_total_j, m),
        "idle_energy_j": dict(s.idle_energy_j),
        "finished_energy_j": _or_none(s.finished_energy_j, m),
        "failed_energy_j": _or_none(s.failed_energy_j, m),
        "cancelled_energy_j": _or_none(s.cancelled_energy_j, m),
        "avg_power_w": dict(s.avg_power_w),
        "j_per_output_token": s.j_per_output_token,
        "gpu_j_per_output_token": s.gpu_j_per_output_token,
        "j_per_generated_token": s.j_per_generated_token,
        "failure_reasons": dict(s.failure_reasons),
        "shed_reasons": dict(s.shed_reasons),
        "window": window_dict(s),
        "drain": drain_dict(s),
    }


def _sum(values: list[Any]) -> Any:
    return None if any(v is None for v in values) else sum(values)


def _sum_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _div(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def aggregate_totals(totals: list[dict[str, Any]]) -> dict[str, Any]:
    """The top-level `totals` of several sessions: counts, tokens, energy and durations
    summed; rates recomputed from the sums; quantiles and `window_end_s` null."""
    if len(totals) == 1:
        return totals[0]
    out: dict[str, Any] = {k: None for k in totals[0]}
    for k in _SUM_KEYS:
        out[k] = _sum([t[k] for t in totals])
    for k in ("energy_total_j", "finished_energy_j", "failed_energy_j", "cancelled_energy_j"):
        known = [t[k] for t in totals if t[k] is not None]
        out[k] = sum(known) if known else None  # a session without meters adds nothing
    for k in ("energy_j", "idle_energy_j", "failure_reasons", "shed_reasons"):
        out[k] = _sum_dicts([t[k] for t in totals])
    # average power: energy over the time each session's meters ran (energy / power)
    spans = _sum_dicts([{c: t["energy_j"][c] / w for c, w in t["avg_power_w"].items() if w}
                        for t in totals])
    out["avg_power_w"] = {c: out["energy_j"][c] / v for c, v in spans.items() if v}
    out["tokens_per_s"] = _div(out["output_tokens"], out["duration_s"])
    out["requests_per_s"] = _div(out["requests_finished"], out["duration_s"])
    out["j_per_output_token"] = _div(out["energy_total_j"], out["output_tokens"])
    out["gpu_j_per_output_token"] = _div(out["energy_j"].get("gpu"), out["output_tokens"])
    out["j_per_generated_token"] = _div(out["energy_total_j"], out["generated_output_tokens"])
    out["streamed_tokens_per_s"] = _div(out["streamed_output_tokens"], out["duration_s"])
    out["j_per_streamed_token"] = _div(out["energy_total_j"], out["streamed_output_tokens"])
    out["quantile_relative_error"] = max(t["quantile_relative_error"] for t in totals)
    windows = [t["window"] for t in totals]
    win: dict[str, Any] = {k: None for k in windows[0]}
    for k in _WINDOW_SUM_KEYS:
        win[k] = _sum([w[k] for w in windows])
    win["energy_j"] = _sum_dicts([w["energy_j"] for w in windows])
    win["avg_power_w"] = {}
    win["tokens_per_s"] = _div(win["output_tokens"], win["duration_s"])
    win["j_per_output_token"] = _div(win["energy_total_j"], win["output_tokens"])
    win["j_per_generated_token"] = _div(win["energy_total_j"], win["generated_output_tokens"])
    out["window"] = win
    drains = [t["drain"] for t in totals]
    if any(d is None for d in drains):
        out["drain"] = None
    else:
        drain: dict[str, Any] = {k: None for k in drains[0]}
        for k in _DRAIN_SUM_KEYS:
            drain[k] = _sum([d[k] for d in drains])
        drain["energy_j"] = _sum_dicts([d["energy_j"] for d in drains])
        out["drain"] = drain
    return out


def aggregate_stages(reports: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The top-level `stages`: per stage name, over all sessions (like `totals`)."""
    if len(reports) == 1:
        return reports[0]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rows in reports:
        for row in rows:
            by_name.setdefault(row["stage"], []).append(row)
    out = []
    for name in sorted(by_name):
        rows = by_name[name]
        agg: dict[str, Any] = {k: None for k in rows[0]}
        agg["stage"] = name
        for k in _STAGE_SUM_KEYS:
            known = [r[k] for r in rows if r[k] is not None]
            agg[k] = sum(known) if known else None
        agg["j_per_output_token"] = _div(agg["energy_j"], agg["output_tokens"])
        out.append(agg)
    return out


def report_dict(r: SessionReport) -> dict[str, Any]:
    """One entry of the document's `sessions` list."""
    return {
        "session": r.path.name,
        "path": str(r.path),
        "name": r.header.name,
        "started_unix_s": r.header.started_unix_s,
        "clock": r.header.clock,
        "workload": _name(r.header.workload),
        "engine": _name(r.header.engine),
        "model": r.header.engine.get("model"),
        "complete": r.end is not None,
        "end_reason": r.end.reason if r.end is not None else None,
        "truncated": r.truncated,
        "notes": r.notes,
        "warnings": r.warnings,
        "knobs": dict(r.stats.knobs),
        "knob_changes": [
            {"t_s": k.t_s, "knob": k.knob, "value": k.value, "previous": k.previous,
             "source": k.source, "reason": k.reason}
            for k in r.knob_changes
        ],
        "autopilot": None if not r.autopilot else {
            "objective": r.autopilot[-1].objective,
            "decisions": [{"t_s": a.t_s, "state": a.state, "reason": a.reason,
                           "measured": a.measured} for a in r.autopilot],
        },
        "knob_segments": [segment_dict(seg) for seg in r.stats.knob_segments],
        "totals": totals_dict(r.stats),
        "stages": [_stage_dict(r.stats, st) for st in r.stats.stages],
        "endpoints": r.endpoints,
        "nodes": r.nodes,
    }


def segment_dict(seg: KnobSegment) -> dict[str, Any]:
    """One entry of `sessions[].knob_segments` (docs/report-json.md)."""
    d = asdict(seg)
    d["knobs"] = dict(seg.knobs)
    return d


def json_document(reports: list[SessionReport]) -> dict[str, Any]:
    """The whole `--json` document: `schema`, `sessions`, `totals` and `stages` over
    all of them (for one session, that session's own), and `differences`: each session
    after the first against the first."""
    sessions = [report_dict(r) for r in reports]
    return {
        "schema": JSON_SCHEMA,
        "sessions": sessions,
        "totals": aggregate_totals([s["totals"] for s in sessions]),
        "stages": aggregate_stages([s["stages"] for s in sessions]),
        "differences": [differences_dict(reports[0], r) for r in reports[1:]],
    }


def differences_dict(a: SessionReport, b: SessionReport) -> dict[str, Any]:
    """One entry of `differences`: B against A, per stage and the whole run."""
    rows = [row.to_dict() for row in differences(a.stats, b.stats)]
    return {"a": a.path.name, "b": b.path.name, "stages": rows[:-1], "run": rows[-1]}


def stage_rows(r: SessionReport) -> list[dict[str, Any]]:
    return [{"session": r.path.name, **_stage_dict(r.stats, st)} for st in r.stats.stages]


def _stage_dict(s: StatsSnapshot, st: StageStats) -> dict[str, Any]:
    by = st.energy_by_component_j
    m = bool(s.energy_j)  # None below: no meter measured anything in this session

    def comp(c: str) -> float | None:
        return by.get(c, 0.0) if c in s.energy_j else None

    return {
        "stage": st.stage,
        "count": st.count,
        "failed": st.failed,
        "cancelled": st.cancelled,
        "latency_p50_s": st.latency_p50_s,
        "latency_p90_s": st.latency_p90_s,
        "latency_p99_s": st.latency_p99_s,
        "ttft_p50_s": st.ttft_p50_s,
        "tpot_p50_s": st.tpot_p50_s,
        "prompt_tokens": st.prompt_tokens,
        "output_tokens": st.output_tokens,
        "failed_output_tokens": st.failed_output_tokens,
        "cancelled_output_tokens": st.cancelled_output_tokens,
        "energy_j": _or_none(st.energy_j, m),
        "gpu_j": comp("gpu"),
        "cpu_j": comp("cpu"),
        "dram_j": comp("dram"),
        "j_per_output_token": st.j_per_output_token,
        "failed_energy_j": _or_none(st.failed_energy_j, m),
        "cancelled_energy_j": _or_none(st.cancelled_energy_j, m),
    }


def write_csv(reports: list[SessionReport], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in reports:
            for row in stage_rows(r):
                w.writerow({k: "" if v is None else v for k, v in row.items()})


def write_plot(reports: list[SessionReport], path: Path) -> None:
    # Power per GPU, the cap as a stepped line, knob changes and marks labelled
    # without overlap: app/commands/report_plot.py.
    from app.commands.report_plot import write_power_plot

    write_power_plot([(r.path, _title(r)) for r in reports], path)


def _error(msg: str) -> int:
    print(f"wattflow: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    sessions: list[str] = list(args.sessions or [])
    csv_path: str | None = getattr(args, "csv", None)
    as_json: bool = bool(getattr(args, "json", False))
    exact: bool = bool(getattr(args, "exact", False))
    plot_path: str | None = getattr(args, "plot", None)
    if not sessions:
        return _error("report needs at least one session file")
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _error("--plot needs matplotlib: pip install 'wattflow[plot]'")

    reports: list[SessionReport] = []
    for s in sessions:
        try:
            reports.append(analyse(s, keep_series=plot_path is not None, exact=exact))
        except SessionError as e:
            return _error(str(e))

    # With --json, stdout holds only the JSON; side notes go to stderr.
    info = sys.stderr if as_json else sys.stdout
    if as_json:
        doc = json_document(reports)
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str).decode())
        sys.stdout.write("\n")
    else:
        print_reports(reports, make_console())

    if csv_path is not None:
        try:
            write_csv(reports, Path(csv_path))
        except OSError as e:
            return _error(f"cannot write {csv_path}: {e.strerror or e}")
        print(f"stage rows written to {csv_path}", file=info)
    if plot_path is not None:
        try:
            write_plot(reports, Path(plot_path))
        except (OSError, ValueError) as e:
            return _error(f"cannot write {plot_path}: {getattr(e, 'strerror', None) or e}")
        print(f"GPU power plot written to {plot_path}", file=info)
    return 0
