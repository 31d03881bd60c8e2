"""The essentials, in as few lines as they fit: power now and cap per GPU with its
utilization, energy so far, J/token, tokens/s, and where the requests are (waiting at
admission, running or waiting in the engine as the engine reports it, done, failed,
shed). Shown at every terminal size, so every line fits in 36 columns (its width at
80x24)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from app.ui import units
from app.ui.feed import Frame, GpuTrace

LABEL = "dim"
VALUE = "bold"
#: Width of one GPU's cell when several share a line ("gpu3 412/500W 97%"), its gap
#: included: two fit the 36 columns of the panel at 80x24.
CELL_W = 18


def _gpu_line(g: GpuTrace) -> Text:
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"{g.device:<5}", style=LABEL)
    line.append(units.watts(g.points[-1][1] if g.points else None).rjust(5), style=VALUE)
    line.append(" cap ", style=LABEL)
    line.append(units.watts(g.limit_w), style="#ff5252")
    if g.util_pct is not None:
        line.append("  util ", style=LABEL)
        line.append(f"{g.util_pct:.0f}%")
    return line


def _gpu_cell(g: GpuTrace) -> Text:
    """"gpu3 412/500W 97%": power now and cap in watts, utilization."""
    now = f"{g.points[-1][1]:.0f}" if g.points else units.DASH
    cap = f"{g.limit_w:.0f}" if g.limit_w is not None else units.DASH
    cell = Text(no_wrap=True, overflow="ellipsis")
    cell.append(f"{g.device[-5:]} ", style=LABEL)
    cell.append(now, style=VALUE)
    cell.append("/", style=LABEL)
    cell.append(cap, style="#ff5252")
    cell.append("W", style=LABEL)
    if g.util_pct is not None:
        cell.append(f" {g.util_pct:.0f}%")
    cell.truncate(CELL_W - 1, pad=True)
    return cell


#: More GPUs than this are summed on one line here (the chart has a strip for each).
CELLS_UP_TO = 4


def _total_line(gpus: list[GpuTrace]) -> Text:
    now = sum(g.points[-1][1] for g in gpus if g.points)
    caps = [g.limit_w for g in gpus if g.limit_w is not None]
    utils = [g.util_pct for g in gpus if g.util_pct is not None]
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"{len(gpus)} GPU ", style=LABEL)
    line.append(f"{now:,.0f} W", style=VALUE)
    line.append(" cap ", style=LABEL)
    line.append(f"{sum(caps):,.0f} W" if len(caps) == len(gpus) else units.DASH,
                style="#ff5252")
    if utils:
        line.append(" util ", style=LABEL)
        line.append(f"{sum(utils) / len(utils):.0f}%")
    return line


def gpu_lines(frame: Frame, width: int) -> list[Text]:
    """One line per GPU while they are few; up to CELLS_UP_TO, as many cells per line as
    fit; beyond, their sum (power, cap) and mean utilization on one line."""
    if not frame.gpus:
        return [Text("GPU   no power readings", style=LABEL)]
    if len(frame.gpus) <= 2:
        return [_gpu_line(g) for g in frame.gpus]
    if len(frame.gpus) > CELLS_UP_TO:
        return [_total_line(frame.gpus)]
    per_line = max(1, (width + 1) // CELL_W)
    lines: list[Text] = []
    for i in range(0, len(frame.gpus), per_line):
        line = Text(no_wrap=True, overflow="ellipsis")
        for g in frame.gpus[i:i + per_line]:
            line.append_text(_gpu_cell(g))
            line.append(" ")
        lines.append(line)
    return lines


def request_lines(frame: Frame) -> list[Text]:
    """Where the calls are. `admission`: made by a workflow, held back by the batch
    limit; `engine`: as the engine reports it (else what wattflow admitted to it)."""
    s = frame.snapshot
    client, engine = frame.client_state, frame.engine_state
    a = Text(no_wrap=True, overflow="ellipsis")
    a.append("admission ", style=LABEL)
    a.append(units.count(client.waiting if client else None), style=VALUE)
    a.append(" waiting", style=LABEL)
    e = Text(no_wrap=True, overflow="ellipsis")
    e.append("engine    ", style=LABEL)
    if engine is not None and (engine.running is not None or engine.waiting is not None):
        e.append(units.count(engine.running), style=VALUE)
        e.append(" running ", style=LABEL)
        e.append(units.count(engine.waiting), style=VALUE)
        e.append(" waiting", style=LABEL)
    else:
        e.append(units.count(client.running if client else None), style=VALUE)
        e.append(" in it (no engine report)", style=LABEL)
    d = Text(no_wrap=True, overflow="ellipsis")
    d.append("done ", style=LABEL)
    d.append(units.count(s.requests_finished), style=VALUE)
    d.append("  failed ", style=LABEL)
    d.append(units.count(s.requests_failed), style="bold red" if s.requests_failed else VALUE)
    if s.requests_cancelled:
        d.append("  cut ", style=LABEL)
        d.append(units.count(s.requests_cancelled))
    d.append("  shed ", style=LABEL)
    d.append(units.count(s.workflows_shed), style="bold yellow" if s.workflows_shed else VALUE)
    return [a, e, d]


def vitals_text(frame: Frame, width: int) -> Text:
    s = frame.snapshot
    lines = gpu_lines(frame, width)
    energy = Text(no_wrap=True, overflow="ellipsis")
    energy.append("energy ", style=LABEL)
    energy.append(units.joules(s.energy_total_j if s.energy_j else None).rjust(8), style=VALUE)
    # J/token and tokens/s move with the tokens as they stream (app/core/stats.py); the
    # finished requests' J/token and the figures since the last knob change beside them.
    knob = s.views.get("knob")
    live = s.j_per_streamed_token if s.j_per_streamed_token is not None else s.j_per_output_token
    energy.append("  J/tok ", style=LABEL)
    energy.append(units.per_token(live), style="bold #81c784")
    energy.append(" live", style=LABEL)
    wide = width >= 64  # room for the finished requests' and the since-the-knob figures
    if wide:
        energy.append(" ")
        energy.append(units.per_token(s.j_per_output_token))
        energy.append(" done", style=LABEL)
    if knob is not None and wide:
        energy.append("  ")
        energy.append(units.per_token(knob.j_per_token))
        energy.append(" knob Δ", style=LABEL)
    lines.append(energy)
    tps = Text(no_wrap=True, overflow="ellipsis")
    run_tps = s.streamed_tokens_per_s if s.streamed_tokens_per_s is not None else s.tokens_per_s
    tps.append("tok/s  ", style=LABEL)
    tps.append(units.rate(s.recent_tokens_per_s, "").strip().rjust(8), style="bold #4fc3f7")
    tps.append(" now  ", style=LABEL)
    tps.append(units.rate(run_tps, "").strip())
    tps.append(" run", style=LABEL)
    if knob is not None and wide:
        tps.append("  ")
        tps.append(units.rate(knob.tokens_per_s, "").strip())
        tps.append(" knob Δ", style=LABEL)
    lines.append(tps)
    lines.extend(request_lines(frame))
    out = Text(no_wrap=True, overflow="ellipsis")
    for i, line in enumerate(lines):
        if i:
            out.append("\n")
        out.append_text(line)
    return out


class Vitals(Static):
    def show(self, frame: Frame) -> None:
        self.update(vitals_text(frame, self.content_region.width or 36))
