"""Per-stage table: calls done and failed, latency p50/p99, TTFT p50, output tokens,
attributed energy, J per output token."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from app.ui import units
from app.ui.feed import Frame

COLUMNS = ("stage", "done", "fail", "p50", "p99", "TTFT", "out tok", "energy", "J/tok")


def stage_rows(frame: Frame) -> list[tuple[Text | str, ...]]:
    rows: list[tuple[Text | str, ...]] = []
    for st in frame.snapshot.stages:
        failed = Text(units.count(st.failed), style="bold red") if st.failed else Text("0")
        rows.append((
            st.stage,
            Text(units.count(st.count), justify="right"),
            Text.assemble(failed, justify="right"),
            Text(units.seconds(st.latency_p50_s), justify="right"),
            Text(units.seconds(st.latency_p99_s), justify="right"),
            Text(units.seconds(st.ttft_p50_s), justify="right"),
            Text(units.tokens(st.output_tokens), justify="right"),
            Text(units.joules(st.energy_j if st.energy_j else None), justify="right"),
            Text(units.per_token(st.j_per_output_token), justify="right"),
        ))
    return rows


class StageTable(DataTable[Text | str]):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, show_cursor=False, zebra_stripes=True)
        self._last: list[tuple[Text | str, ...]] | None = None

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def show(self, frame: Frame) -> None:
        rows = stage_rows(frame)
        if rows == self._last:
            return  # nothing new: keep the table (and its scroll position) as it is
        self._last = rows
        self.clear()
        self.add_rows(rows)
