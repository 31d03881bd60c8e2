"""`k`: type `KNOB=VALUE` (or `KNOB VALUE`; a unique prefix of the knob's name will
do). The value is parsed by knobs.parse_value and applied by the runner; a bad name or
value, or a refusal from the runner, is shown on one line and the dialog stays open."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Static

from app.core.knobs import KNOB_NAMES, SPECS, KnobError, parse_value, resolve

ApplyKnob = Callable[[str, float | None], Awaitable[None]]

_ENTRY = re.compile(r"^\s*([A-Za-z_]+)\s*(?:[=:\s]\s*(.*?))?\s*$")


def parse_entry(text: str) -> tuple[str, float | None]:
    """`power_cap=300`, `rate 2`, `max_tokens: none` -> (knob, value); KnobError if bad."""
    m = _ENTRY.match(text)
    if not m:
        raise KnobError("expected KNOB=VALUE, e.g. power_cap=300 or rate=2")
    name = resolve(m.group(1))
    if not m.group(2):
        raise KnobError(f"{name} needs a value, e.g. {name}={SPECS[name].example}")
    return name, parse_value(name, m.group(2))


class KnobInputScreen(ModalScreen[str | None]):
    """Dismissed with a one-line description of the change, or None if cancelled."""

    DEFAULT_CSS = """
    KnobInputScreen { align: center middle; }
    KnobInputScreen > Vertical {
        width: 96%; max-width: 84; height: auto; max-height: 100%; border: thick $accent;
        background: $surface; padding: 0 1;
    }
    KnobInputScreen #knob-help { color: $text-muted; margin-bottom: 1; }
    KnobInputScreen #knob-error { color: $error; height: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, apply: ApplyKnob, current: dict[str, float | None]) -> None:
        super().__init__()
        self._apply = apply
        self._current = current

    def compose(self) -> ComposeResult:
        help_text = Text()
        help_text.append("Set a knob: KNOB=VALUE  (none unsets power_cap, rate, max_tokens)\n")
        for name in KNOB_NAMES:
            spec = SPECS[name]
            now = self._current.get(name)
            help_text.append(f"  {name:<12}", style="bold")
            shown = "unset" if now is None else f"{now:g} {spec.unit}".strip()
            help_text.append(f" now {shown}".ljust(16))
            help_text.append(f" {spec.help} ({spec.range_text()})\n", style="dim")
        with Vertical():
            yield Static(help_text, id="knob-help")
            yield Input(placeholder="e.g. power_cap=300", id="knob-entry",
                        suggester=SuggestFromList([f"{k}=" for k in KNOB_NAMES]))
            yield Static("", id="knob-error")

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        error = self.query_one("#knob-error", Static)
        try:
            name, value = parse_entry(event.value)
            await self._apply(name, value)
        except KnobError as exc:
            error.update(str(exc).splitlines()[0])
            return
        self.dismiss(f"{name}={'none' if value is None else f'{value:g}'}")

    def action_cancel(self) -> None:
        self.dismiss(None)
