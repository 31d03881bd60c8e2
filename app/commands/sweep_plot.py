"""`wattflow sweep ... --plot DIR`: the study's figures from a sweep.

For each swept knob, one figure (`DIR/<knob>.png`) with three panels against that
knob: energy per output token, output tokens per second, and p90 request latency;
one line per workload and per value of the other swept knobs. Beside each figure the
CSV it was drawn from (`DIR/<knob>.csv`), one row per session.

The figures are of the measured window (the drain after the duration left out) where
the session records one, else of the whole run, as `report` reads them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.commands.report import analyse
from app.core.knobs import SPECS

#: (column, axis label) of each panel, in order.
METRICS = (
    ("j_per_output_token", "energy per output token (J)"),
    ("tokens_per_s", "output tokens / s"),
    ("latency_p90_s", "p90 request latency (s)"),
)
CSV_COLUMNS = ["session", "workload", "knob", "value", "series", "j_per_output_token",
               "tokens_per_s", "latency_p90_s", "workflow_latency_p90_s", "energy_total_j",
               "output_tokens", "requests_finished", "requests_failed"]


@dataclass(slots=True)
class Point:
    """One session of the sweep: its knob values and what it measured."""

    path: Path
    workload: str
    knobs: dict[str, float | None]
    j_per_output_token: float | None
    tokens_per_s: float | None
    latency_p90_s: float | None
    workflow_latency_p90_s: float | None
    energy_total_j: float
    output_tokens: int | None
    requests_finished: int
    requests_failed: int


def measure(path: Path, knobs: dict[str, float | None]) -> Point:
    """The figures of one session (SessionError if it cannot be read)."""
    r = analyse(path)
    s = r.stats
    windowed = s.window_end_s is not None
    return Point(
        path=path, workload=str(r.header.workload.get("name") or "?"), knobs=dict(knobs),
        j_per_output_token=s.window_j_per_output_token if windowed else s.j_per_output_token,
        tokens_per_s=s.window_tokens_per_s if windowed else s.tokens_per_s,
        latency_p90_s=s.latency_p90_s, workflow_latency_p90_s=s.workflow_latency_p90_s,
        energy_total_j=s.window_energy_total_j if windowed else s.energy_total_j,
        output_tokens=s.window_output_tokens if windowed else s.output_tokens,
        requests_finished=s.requests_finished, requests_failed=s.requests_failed,
    )


def _value_text(knob: str, v: float | None) -> str:
    if v is None:
        return "none"
    spec = SPECS.get(knob)
    unit = f" {spec.unit}" if spec is not None and spec.unit in ("W", "tok") else (
        spec.unit if spec is not None else "")
    return f"{v:g}{unit}"


def series_name(p: Point, knob: str, knobs: Sequence[str], workloads: int) -> str:
    """What tells this point's line apart: its workload (when several) and the values
    of the other swept knobs."""
    parts = [p.workload] if workloads > 1 or len(knobs) == 1 else []
    parts += [f"{k}={_value_text(k, p.knobs.get(k))}" for k in knobs if k != knob]
    return ", ".join(parts) or p.workload


def _rows(points: Sequence[Point], knob: str, knobs: Sequence[str]) -> list[dict[str, Any]]:
    workloads = len({p.workload for p in points})
    rows = []
    for p in points:
        rows.append({
            "session": str(p.path), "workload": p.workload, "knob": knob,
            "value": p.knobs.get(knob), "series": series_name(p, knob, knobs, workloads),
            "j_per_output_token": p.j_per_output_token, "tokens_per_s": p.tokens_per_s,
            "latency_p90_s": p.latency_p90_s,
            "workflow_latency_p90_s": p.workflow_latency_p90_s,
            "energy_total_j": p.energy_total_j, "output_tokens": p.output_tokens,
            "requests_finished": p.requests_finished, "requests_failed": p.requests_failed,
        })
    rows.sort(key=lambda r: (r["series"], math.inf if r["value"] is None else r["value"]))
    return rows


def write_sweep_figures(points: Sequence[Point], knobs: Sequence[str], out_dir: Path
                        ) -> list[Path]:
    """`<knob>.png` and `<knob>.csv` in `out_dir` for each swept knob; returns the files
    written. OSError if the folder cannot be written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for knob in knobs:
        rows = _rows(points, knob, knobs)
        csv_path = out_dir / f"{knob}.csv"
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            w.writeheader()
            for row in rows:
                w.writerow({k: "" if v is None else v for k, v in row.items()})
        written.append(csv_path)
        png = out_dir / f"{knob}.png"
        fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6),
                                 layout="constrained", squeeze=False)
        try:
            _draw(axes[0], rows, knob)
            fig.suptitle(f"sweep of {knob}: {len(rows)} sessions", fontsize=10)
            fig.savefig(png, dpi=110)
        finally:
            plt.close(fig)
        written.append(png)
    return written


def _draw(axes: Any, rows: list[dict[str, Any]], knob: str) -> None:
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["value"] is not None:  # "none" has no place on a numeric axis: CSV only
            series.setdefault(row["series"], []).append(row)
    values = [r["value"] for r in rows if r["value"] is not None]
    spec = SPECS.get(knob)
    unit = f" ({spec.unit})" if spec is not None and spec.unit else ""
    # Batch sizes and the like double from point to point: a log axis spaces them evenly.
    log_x = bool(values) and min(values) > 0 and max(values) / min(values) >= 8
    for ax, (metric, label) in zip(axes, METRICS, strict=True):
        for name, pts in series.items():
            xs = [p["value"] for p in pts if p[metric] is not None]
            ys = [p[metric] for p in pts if p[metric] is not None]
            ax.plot(xs, ys, marker="o", linewidth=1.2, markersize=4, label=name)
        if log_x:
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
        if values:
            ax.set_xticks(sorted(set(values)))
            ax.set_xticklabels([f"{v:g}" for v in sorted(set(values))], fontsize=7)
        ax.set_xlabel(f"{knob}{unit}")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if not any(p[metric] is not None for pts in series.values() for p in pts):
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center")
    if len(series) > 1 or (series and next(iter(series)) != ""):
        axes[0].legend(fontsize=7)
