"""Run details beside the chart on larger terminals: energy per component (so far,
average and present power), latency quantiles, the engine's KV cache and prefix hits.
The essentials (energy total, J/token, tokens/s, requests) are the vitals panel's.
Twelve rows at most: the panel is as tall as the chart at 120x36.
Every row fits in 40 columns: labels are short and the last column takes the slack."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from app.ui import units
from app.ui.feed import Frame

_ORDER = {"gpu": 0, "cpu": 1, "dram": 2}


def totals_table(frame: Frame) -> Table:
    s = frame.snapshot
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column(style="dim", no_wrap=True, overflow="ellipsis", ratio=1)
    for _ in range(3):
        t.add_column(justify="right", no_wrap=True, min_width=7)

    t.add_row(Text("energy", style="bold"), Text("so far", style="dim"),
              Text("avg", style="dim"), Text("now", style="dim"))
    now_w: dict[str, float] = {}
    for dev, w in s.power_w.items():
        comp = dev.rstrip("0123456789")
        now_w[comp] = now_w.get(comp, 0.0) + w
    comps = sorted(set(s.energy_j) | set(now_w), key=lambda c: (_ORDER.get(c, 9), c))
    if not comps:
        t.add_row(" (no meter)", units.DASH, units.DASH, units.DASH)
    for comp in comps:
        t.add_row(f" {comp.upper()}", units.joules(s.energy_j.get(comp)),
                  units.watts(s.avg_power_w.get(comp)), units.watts(now_w.get(comp)))
    t.add_row(Text("latency", style="bold"), Text("p50", style="dim"), Text("p90", style="dim"),
              Text("p99", style="dim"))
    t.add_row(" request", units.seconds(s.latency_p50_s), units.seconds(s.latency_p90_s),
              units.seconds(s.latency_p99_s))
    t.add_row(" TTFT", units.seconds(s.ttft_p50_s), units.seconds(s.ttft_p90_s),
              units.seconds(s.ttft_p99_s))
    # TPOT: the finished requests' median (p50 column), and the mean of the requests still
    # running (p90 column: "run").
    t.add_row(" TPOT/run", units.seconds(s.tpot_p50_s), units.seconds(s.running_tpot_s),
              units.DASH)

    t.add_row(" workflow", units.seconds(s.workflow_latency_p50_s),
              units.seconds(s.workflow_latency_p90_s), "")
    wf_failed = Text(units.count(s.workflows_failed),
                     style="bold red" if s.workflows_failed else "")
    t.add_row(Text("workflows", style="bold"), Text("done", style="dim"),
              Text("failed", style="dim"), Text("shed", style="dim"))
    t.add_row("", units.count(s.workflows_finished), wf_failed, units.count(s.workflows_shed))
    e = frame.engine_state
    if e is not None and (e.kv_cache_pct is not None or e.prefix_hit_pct is not None):
        t.add_row(Text("engine", style="bold"),
                  "KV " + ("-" if e.kv_cache_pct is None else f"{e.kv_cache_pct:.0f}%"),
                  "pfx " + ("-" if e.prefix_hit_pct is None else f"{e.prefix_hit_pct:.0f}%"),
                  "" if not e.preempted_total else f"pre {units.count(e.preempted_total)}")
    return t


class Totals(Static):
    def show(self, frame: Frame) -> None:
        self.update(totals_table(frame))
