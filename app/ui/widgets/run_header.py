"""The top line: what is running (session, engine, model, workload), on which clock,
for how long, and in which state (live, paused replay at 2x, stopping...)."""

from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import Static

from app.ui import units
from app.ui.feed import Frame


def speed_text(speed: float | None) -> str:
    if speed is None:
        return ""
    return "max" if math.isinf(speed) else f"{speed:g}x"


class RunHeader(Static):
    def show(self, frame: Frame, *, mode: str, state: str, wall_s: float,
             speed: float | None = None, paused: bool = False) -> None:
        h = frame.header
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(" wattflow ", style="bold reverse")
        if mode == "replay":
            icon = "⏸ PAUSED" if paused else "▶ REPLAY"
            line.append(f" {icon} {speed_text(speed)} ", style="bold black on #ffb74d")
        else:
            line.append(" ● LIVE ", style="bold black on #81c784")
        line.append(f" {state}", style=_state_style(state))
        line.append("   t ", style="dim")
        line.append(units.duration(frame.now_s), style="bold")
        if h is not None and h.clock == "virtual" and mode == "live":
            line.append(f" virtual (wall {units.duration(wall_s)})", style="dim")
        elif h is not None:
            line.append(f" {h.clock}", style="dim")
        if h is not None:
            gpu = ", ".join(sorted({d.name for d in frame.devices if d.name}))
            # A model path or hub id: its last part names it well enough here.
            model = str(h.engine.get("model") or "?").rstrip("/").rsplit("/", 1)[-1]
            line.append("   │ ", style="dim")
            line.append(h.name or "(unnamed session)", style="bold")
            line.append(" │ ", style="dim")
            line.append(f"{h.engine.get('name', '?')} · {model}")
            line.append(" │ ", style="dim")
            line.append(f"workload {h.workload.get('name', '?')}")
            if gpu:
                line.append(" │ ", style="dim")
                line.append(gpu)
        self.update(line)


def _state_style(state: str) -> str:
    if state.startswith(("failed", "error")):
        return "bold red"
    if state.startswith(("stopping", "interrupted")):
        return "bold yellow"
    if state.startswith(("completed", "finished")):
        return "bold green"
    return ""
