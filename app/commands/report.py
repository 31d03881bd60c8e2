"""`wattflow report SESSION... [--csv PATH] [--json] [--plot PNG]`

Recomputes a recorded session's statistics with the same `LiveStats` the live run
uses (so the report and the dashboard cannot disagree), then prints a table per
stage and the run's totals, a comparison when several sessions are given, and
optionally writes the stage rows as CSV and GPU power over time as a PNG.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from app.core.events import EndEvent, Event, KnobEvent, Sample, SessionHeader
from app.core.session_reader import SessionError, format_duration, open_session
from app.core.stats import LiveStats, StageStats, StatsSnapshot

CUT_NOTE = "session was cut short: last line incomplete (crash?)"
OPEN_NOTE = "no end record: the run did not close cleanly"

CSV_COLUMNS = [
    "session",
    "stage",
    "count",
    "failed",
    "latency_p50_s",
    "latency_p90_s",
    "latency_p99_s",
    "ttft_p50_s",
    "tpot_p50_s",
    "prompt_tokens",
    "output_tokens",
    "energy_j",
    "gpu_j",
    "cpu_j",
    "dram_j",
    "j_per_output_token",
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

    @property
    def notes(self) -> list[str]:
        if self.truncated:
            return [CUT_NOTE]
        if self.end is None:
            return [OPEN_NOTE]
        return []


def analyse(path: str | Path, *, keep_series: bool = False) -> SessionReport:
    """Stream one session through LiveStats. Raises SessionError for bad input."""
    stream = open_session(path)
    stats = LiveStats()
    gpu_power: dict[str, PowerSeries] = {}
    knob_changes: list[KnobEvent] = []

    def feed(ev: Event) -> None:
        try:
            stats.on_event(ev)
        except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as e:
            # A line that parsed as JSON but holds values of the wrong type.
            raise SessionError(
                f"{stream.path}: bad {ev.kind} event at t={ev.t_s}: {type(e).__name__}: {e}"
            ) from None

    feed(stream.header)
    for ev in stream:
        feed(ev)
        if isinstance(ev, KnobEvent):
            knob_changes.append(ev)
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
    )


# -- formatting -------------------------------------------------------------------------


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _i(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def _name(info: dict[str, Any]) -> str:
    return str(info.get("name") or "?")


def _title(r: SessionReport) -> str:
    model = r.header.engine.get("model")
    engine = _name(r.header.engine) + (f" ({model})" if model else "")
    return f"{r.path.name}: {_name(r.header.workload)} on {engine}"


def _stage_table(r: SessionReport) -> Table:
    t = Table(title=f"{_title(r)}: per stage", title_justify="left")
    t.add_column("stage", no_wrap=True)
    for col in ("requests", "failed", "p50 s", "p90 s", "p99 s", "TTFT p50 s", "out tokens"):
        t.add_column(col, justify="right")
    t.add_column("energy J", justify="right")
    t.add_column("J/token", justify="right")
    for st in r.stats.stages:
        t.add_row(
            st.stage or "(none)",
            _i(st.count),
            _i(st.failed),
            _f(st.latency_p50_s, 3),
            _f(st.latency_p90_s, 3),
            _f(st.latency_p99_s, 3),
            _f(st.ttft_p50_s, 3),
            _i(st.output_tokens),
            _f(st.energy_j, 1) if st.energy_by_component_j else "-",  # "-": nothing measured
            _f(st.j_per_output_token, 4),
        )
    s = r.stats
    if s.stages:
        attributed = sum(st.energy_j for st in s.stages)
        t.add_section()
        t.add_row(
            "all stages",
            _i(s.requests_finished),
            _i(s.requests_failed),
            _f(s.latency_p50_s, 3),
            _f(s.latency_p90_s, 3),
            _f(s.latency_p99_s, 3),
            _f(s.ttft_p50_s, 3),
            _i(s.output_tokens),
            _f(attributed, 1) if any(st.energy_by_component_j for st in s.stages) else "-",
            _f(attributed / s.output_tokens if s.output_tokens and attributed else None, 4),
        )
    else:
        t.add_row("(no requests finished)", *[""] * 9)
    return t


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{format_duration(seconds)} ({seconds:,.0f} s)"


def totals_rows(s: StatsSnapshot) -> list[tuple[str, str]]:
    rows = [
        ("duration", _duration(s.duration_s)),
        (
            "requests",
            f"{s.requests_finished:,} finished, {s.requests_failed:,} failed"
            + (f", {s.requests_cancelled:,} cut off by the end of the run"
               if s.requests_cancelled else "")
            + f" of {s.requests_submitted:,} submitted",
        ),
        ("output tokens", _i(s.output_tokens)),
        ("output tokens/s", _f(s.tokens_per_s, 1)),
    ]
    for comp in ("gpu", "cpu", "dram"):
        if comp in s.energy_j:
            rows.append((f"{comp.upper()} energy J", _f(s.energy_j[comp], 1)))
    if s.idle_energy_j:
        parts = ", ".join(f"{c} {v:,.1f}" for c, v in sorted(s.idle_energy_j.items()))
        rows.append(("idle energy J", f"{sum(s.idle_energy_j.values()):,.1f} ({parts})"))
    rows.append(("avg GPU power W", _f(s.avg_power_w.get("gpu"), 1)))
    rows.append(("J per output token", _f(s.j_per_output_token, 4)))
    if s.gpu_j_per_output_token is not None and set(s.energy_j) != {"gpu"}:
        rows.append(("GPU J per output token", _f(s.gpu_j_per_output_token, 4)))
    if s.failure_reasons:
        top = sorted(s.failure_reasons.items(), key=lambda kv: -kv[1])[:3]
        rows.append(("failures", "; ".join(f"{n} x {reason}" for reason, n in top)))
    return rows


def _totals_table(r: SessionReport) -> Table:
    t = Table(title=f"{r.path.name}: totals", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in totals_rows(r.stats):
        t.add_row(k, v)
    return t


def comparison_table(reports: list[SessionReport]) -> Table:
    t = Table(title="comparison", title_justify="left")
    t.add_column("session")
    for col in ("J/token", "tok/s", "avg GPU power W", "p50 latency s", "requests"):
        t.add_column(col, justify="right")
    for r in reports:
        s = r.stats
        t.add_row(
            r.path.name,
            _f(s.j_per_output_token, 4),
            _f(s.tokens_per_s, 1),
            _f(s.avg_power_w.get("gpu"), 1),
            _f(s.latency_p50_s, 3),
            _i(s.requests_finished),
        )
    return t


def make_console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 140  # don't squeeze the tables to 80 columns when piped
    return console


def _knob(v: float | None) -> str:
    return "unset" if v is None else f"{v:g}"


def print_reports(reports: list[SessionReport], console: Console) -> None:
    for r in reports:
        console.print(_stage_table(r))
        console.print(_totals_table(r))
        for k in r.knob_changes:
            console.print(f"knob at t={k.t_s:,.1f} s: {k.knob} {_knob(k.previous)} -> "
                          f"{_knob(k.value)} ({k.source})")
        for note in r.notes:
            console.print(f"[yellow]{note}[/yellow]")
        for w in r.warnings:
            if not r.truncated or "incomplete" not in w:
                console.print(f"[yellow]warning: {w}[/yellow]")
        console.print()
    if len(reports) > 1:
        console.print(comparison_table(reports))


def report_dict(r: SessionReport) -> dict[str, Any]:
    return {
        "session": r.path.name,
        "path": str(r.path),
        "name": r.header.name,
        "started_unix_s": r.header.started_unix_s,
        "workload": _name(r.header.workload),
        "engine": _name(r.header.engine),
        "complete": r.end is not None,
        "end_reason": r.end.reason if r.end is not None else None,
        "truncated": r.truncated,
        "notes": r.notes,
        "warnings": r.warnings,
        "stats": r.stats.to_dict(),
    }


def stage_rows(r: SessionReport) -> list[dict[str, Any]]:
    rows = []
    for st in r.stats.stages:
        rows.append(_stage_row(r.path.name, st))
    return rows


def _stage_row(session: str, st: StageStats) -> dict[str, Any]:
    by = st.energy_by_component_j
    return {
        "session": session,
        "stage": st.stage,
        "count": st.count,
        "failed": st.failed,
        "latency_p50_s": st.latency_p50_s,
        "latency_p90_s": st.latency_p90_s,
        "latency_p99_s": st.latency_p99_s,
        "ttft_p50_s": st.ttft_p50_s,
        "tpot_p50_s": st.tpot_p50_s,
        "prompt_tokens": st.prompt_tokens,
        "output_tokens": st.output_tokens,
        "energy_j": st.energy_j if by else None,  # None: no meter measured anything
        "gpu_j": by.get("gpu"),
        "cpu_j": by.get("cpu"),
        "dram_j": by.get("dram"),
        "j_per_output_token": st.j_per_output_token,
    }


def write_csv(reports: list[SessionReport], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in reports:
            for row in stage_rows(r):
                w.writerow({k: "" if v is None else v for k, v in row.items()})


def write_plot(reports: list[SessionReport], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(reports), 1, figsize=(10, 3.2 * len(reports)), squeeze=False, constrained_layout=True
    )
    try:
        for ax, r in zip(axes[:, 0], reports, strict=True):
            for device, series in sorted(r.gpu_power.items()):
                ax.plot(series.t_s, series.power_w, label=device, linewidth=1)
            for i, k in enumerate(r.knob_changes):
                ax.axvline(k.t_s, color="tab:red", linestyle="--", linewidth=0.8, alpha=0.7)
                value = "-" if k.value is None else f"{k.value:g}"
                ax.annotate(
                    f"{k.knob}={value}",
                    xy=(k.t_s, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(2, -10 - 10 * (i % 3)),  # stagger labels of close changes
                    textcoords="offset points",
                    fontsize=7,
                    color="tab:red",
                )
            if not r.gpu_power:
                ax.text(0.5, 0.5, "no GPU power samples", transform=ax.transAxes, ha="center")
            ax.set_title(_title(r), fontsize=9, loc="left")
            ax.set_xlabel("time since start (s)")
            ax.set_ylabel("GPU power (W)")
            ax.set_ylim(bottom=0)  # power read against zero, not against its own wiggle
            ax.grid(alpha=0.3)
            if r.gpu_power:
                ax.legend(loc="lower right", fontsize=7)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def _error(msg: str) -> int:
    print(f"wattflow: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    sessions: list[str] = list(args.sessions or [])
    csv_path: str | None = getattr(args, "csv", None)
    as_json: bool = bool(getattr(args, "json", False))
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
            reports.append(analyse(s, keep_series=plot_path is not None))
        except SessionError as e:
            return _error(str(e))

    # With --json, stdout holds only the JSON; side notes go to stderr.
    info = sys.stderr if as_json else sys.stdout
    if as_json:
        out: dict[str, Any] = {"sessions": [report_dict(r) for r in reports]}
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2, default=str).decode())
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
