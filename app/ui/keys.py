"""Every key of the dashboard, once: its binding, its label in the key bar, what the
help screen says of it, and the modes it belongs to. The bindings, the key bar, the
help screen (`?`) and the command palette are all made from this list."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

from app.core.knobs import SPECS, step_text

LIVE = frozenset({"live"})
REPLAY = frozenset({"replay"})
BOTH = LIVE | REPLAY
SEEK = frozenset({"seek"})  # a replay that can seek: its keys and the replay's


@dataclass(frozen=True, slots=True)
class Key:
    key: str  # Textual's key name
    shown: str  # as the user types it
    action: str
    label: str  # the key bar's word
    help: str  # the help screen's sentence
    modes: frozenset[str] = BOTH
    palette: str = ""  # the command palette's title; "" keeps it out of the palette


def _cap_step() -> str:
    st = SPECS["power_cap"].step
    return f"{st.amount:g} W" if st is not None else "one step"


KEYS: tuple[Key, ...] = (
    Key("left_square_bracket", "[", "cap(-1)", f"cap {step_text('power_cap', -1)}",
        f"power cap down {_cap_step()} (every GPU of the run)", LIVE,
        f"Power cap down {_cap_step()}"),
    Key("right_square_bracket", "]", "cap(1)", f"cap {step_text('power_cap', 1)}",
        f"power cap up {_cap_step()}, at most the GPU's own limit", LIVE,
        f"Power cap up {_cap_step()}"),
    Key("comma", ",", "batch(-1)", f"batch {step_text('batch_limit', -1)}",
        "batch limit halved: nobody new is admitted until the engine has drained to it",
        LIVE, "Batch limit halved"),
    Key("full_stop", ".", "batch(1)", f"batch {step_text('batch_limit', 1)}",
        "batch limit doubled: waiting requests are admitted at once", LIVE,
        "Batch limit doubled"),
    Key("k", "k", "knob_input", "knob",
        "type any knob's value (power_cap=300, rate=2, max_num_seqs=128, ...)", LIVE,
        "Set a knob's value (KNOB=VALUE)"),
    Key("m", "m", "mark", "mark", "drop a mark: recorded in the session, ticked on the chart",
        LIVE, "Drop a mark"),
    Key("a", "a", "autopilot", "autopilot",
        "autopilot off / on (a run started with --autopilot OBJECTIVE; its state is on the "
        "knobs panel's title, each knob's setter beside it)", LIVE, "Autopilot off / on"),
    Key("space", "space", "pause_play", "pause", "pause or play the replay", REPLAY,
        "Pause or play the replay"),
    Key("less_than_sign", "<", "speed(0.5)", "slower", "replay half as fast", REPLAY,
        "Replay slower (half speed)"),
    Key("greater_than_sign", ">", "speed(2)", "faster", "replay twice as fast", REPLAY,
        "Replay faster (double speed)"),
    # A replay that can seek (app/ui/replay_app.py, docs/replay.md): mode "seek"
    Key("g", "g", "goto", "go to", "jump to a time: type 5:30, 1:02:03 or 330", SEEK,
        "Go to a time"),
    Key("n", "n", "landmark(1)", "next", "the next knob change, mark or error", SEEK,
        "Next knob change, mark or error"),
    Key("p", "p", "landmark(-1)", "prev", "the previous knob change, mark or error", SEEK,
        "Previous knob change, mark or error"),
    Key("left", "←", "step(-10)", "-10s", "10 s back", SEEK),
    Key("right", "→", "step(10)", "+10s", "10 s on", SEEK),
    Key("shift+left", "shift+←", "step(-60)", "-60s", "60 s back", SEEK),
    Key("shift+right", "shift+→", "step(60)", "+60s", "60 s on", SEEK),
    Key("home", "home", "seek(0)", "start", "the start of the session", SEEK),
    Key("end", "end", "seek_end", "end", "the end of the session", SEEK),
    Key("question_mark", "?", "help", "help", "this help", BOTH),
    Key("ctrl+p", "^p", "command_palette", "commands",
        "the command palette: every action above by name", BOTH),
    Key("q", "q", "quit", "quit", "quit: a live run is stopped and its session closed cleanly;"
        " a replay stops", BOTH),
)


def keys_for(mode: str) -> list[Key]:
    modes = {mode, "replay"} if mode == "seek" else {mode}
    return [k for k in KEYS if modes & k.modes]


def bindings() -> list[Binding]:
    # Shown by the app's own key bar (one line per mode), not Textual's footer.
    out = [Binding(k.key, k.action, k.label, key_display=k.shown, show=False)
           for k in KEYS if k.action != "command_palette"]
    out.append(Binding("ctrl+c", "quit", "quit", show=False, priority=True))
    return out
