"""Run totals: energy per component, J/token, throughput, requests, latency quantiles.

"live"/"streamed": tokens as they stream (any request), J/token of all energy so far per
streamed token; "done": finished requests' figures; "knob Δ": since the last knob change.
Latency quantiles are of finished requests, TTFT of every first token; TPOT is the median
of finished requests ("done") and the mean of the requests still running ("running")."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from app.ui import units
from app.ui.feed import Frame

_ORDER = {"gpu": 0, "cpu": 1, "dram": 2}


def totals_table(frame: Frame) -> Table | Group:
    s = frame.snapshot
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column(style="dim", no_wrap=True)
    for _ in range(3):
        t.add_column(justify="right", no_wrap=True, min_width=7)

    t.add_row(Text("energy", style="bold"), Text("J", style="dim"), Text("avg", style="dim"),
              Text("now", style="dim"))
    now_w: dict[str, float] = {}
    for dev, w in s.power_w.items():
        comp = dev.rstrip("0123456789")
        now_w[comp] = now_w.get(comp, 0.0) + w
    comps = sorted(set(s.energy_j) | set(now_w), key=lambda c: (_ORDER.get(c, 9), c))
    if not comps:
        t.add_row("  (no meter)", units.DASH, units.DASH, units.DASH)
    for comp in comps:
        t.add_row(f"  {comp.upper()}", units.joules(s.energy_j.get(comp)),
                  units.watts(s.avg_power_w.get(comp)), units.watts(now_w.get(comp)))
    if len(comps) > 1:
        t.add_row("  total", units.joules(s.energy_total_j),
                  units.watts(sum(s.avg_power_w.values()) or None),
                  units.watts(sum(now_w.values()) or None))
    knob = s.views.get("knob")
    t.add_row(Text("J/token", style="bold"), Text("live", style="dim"),
              Text("done", style="dim"), Text("knob Δ", style="dim"))
    t.add_row("  all", units.per_token(s.j_per_streamed_token),
              units.per_token(s.j_per_output_token),
              units.per_token(knob.j_per_token if knob else None))
    t.add_row("  GPU", units.per_token(s.gpu_j_per_streamed_token),
              units.per_token(s.gpu_j_per_output_token), "")
    t.add_row(Text("tokens/s", style="bold"), Text("10 s", style="dim"),
              Text("run", style="dim"), Text("knob Δ", style="dim"))
    t.add_row("  streamed", units.rate(s.recent_tokens_per_s, ""),
              units.rate(s.streamed_tokens_per_s, ""),
              units.rate(knob.tokens_per_s if knob else None, ""))
    t.add_row(Text("requests", style="bold"), Text("done", style="dim"),
              Text("running", style="dim"), Text("failed", style="dim"))
    failed = Text(units.count(s.requests_failed), style="bold red" if s.requests_failed else "")
    t.add_row("  calls", units.count(s.requests_finished), units.count(s.requests_in_flight),
              failed)
    wf_failed = Text(units.count(s.workflows_failed), style="bold red" if s.workflows_failed
                     else "")
    t.add_row("  workflows", units.count(s.workflows_finished), "", wf_failed)
    t.add_row("  TPOT", units.seconds(s.tpot_p50_s), units.seconds(s.running_tpot_s), "")
    if s.requests_cancelled:
        t.add_row("  cut off by the end", units.count(s.requests_cancelled), "", "")
    t.add_row(Text("latency", style="bold"), Text("p50", style="dim"), Text("p90", style="dim"),
              Text("p99", style="dim"))
    t.add_row("  request done", units.seconds(s.latency_p50_s),
              units.seconds(s.latency_p90_s), units.seconds(s.latency_p99_s))
    if knob is not None:
        t.add_row("  ...knob Δ", units.seconds(knob.latency_p50_s),
                  units.seconds(knob.latency_p90_s), units.seconds(knob.latency_p99_s))
    t.add_row("  TTFT", units.seconds(s.ttft_p50_s), units.seconds(s.ttft_p90_s),
              units.seconds(s.ttft_p99_s))

    t.add_row("  workflow", units.seconds(s.workflow_latency_p50_s),
              units.seconds(s.workflow_latency_p90_s), "")
    e = frame.engine_state
    if e is None:
        return t
    line = Text("engine", style="bold", no_wrap=True, overflow="ellipsis")
    for label, value in (("run", e.running), ("wait", e.waiting)):
        if value is not None:
            line.append(f" {label} ", style="dim")
            line.append(str(value))
    for label, pct in (("KV", e.kv_cache_pct), ("prefix", e.prefix_hit_pct)):
        if pct is not None:
            line.append(f" {label} ", style="dim")
            line.append(f"{pct:.0f}%")
    return Group(t, line)


class Totals(Static):
    def show(self, frame: Frame) -> None:
        self.update(totals_table(frame))
