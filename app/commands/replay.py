"""`wattflow replay SESSION [--speed X] [--headless]`: play a recorded session back
through the same subscribers a live run has (progress lines, live stats)."""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys

from app.core.bus import EventBus
from app.core.events import Event
from app.core.replay import Replayer
from app.core.session_reader import SessionError
from app.core.stats import LiveStats
from app.headless import HeadlessPrinter, summary_lines


def parse_speed(text: str) -> float:
    if text.lower() in ("max", "inf", "fast"):
        return math.inf
    try:
        v = float(text.lower().removesuffix("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number like 2 or 0.5, or max") from None
    if not v > 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return v


class _Stats:
    """The live statistics as a bus subscriber that cannot be dropped silently: an
    event they cannot take (values the reader let through but that make no sense
    together) stops the replay with a one-line error, as `report` does."""

    def __init__(self, stats: LiveStats, path: str) -> None:
        self.stats = stats
        self.path = path
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None

    def on_event(self, ev: Event) -> None:
        if self.error is not None:
            return
        try:
            self.stats.on_event(ev)
        except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as e:
            self.error = (f"{self.path}: bad {ev.kind} event at t={ev.t_s}:"
                          f" {type(e).__name__}: {e}")
            if self.task is not None:
                self.task.cancel()


def _wall_s(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def run(args: argparse.Namespace) -> int:
    bus = EventBus()
    stats = LiveStats()
    guard = _Stats(stats, args.session)
    bus.subscribe(guard.on_event)
    try:
        replayer = Replayer(args.session, bus, speed=args.speed)
    except SessionError as exc:
        print(f"wattflow: error: {exc}", file=sys.stderr)
        return 2
    from app.ui.terminal import has_terminal

    headless = args.headless or not has_terminal()
    if headless:
        bus.subscribe(HeadlessPrinter(stats).on_event)

    async def main() -> bool:
        task = guard.task = asyncio.create_task(replayer.run())
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            return False
        return True

    try:
        if headless:
            finished = asyncio.run(main())
        else:
            from app.ui.replay import replay_dashboard

            finished = replay_dashboard(replayer, stats)
    except SessionError as exc:  # a bad line met half-way through the file
        print(f"wattflow: error: {exc}", file=sys.stderr)
        return 2
    if guard.error is not None:
        print(f"wattflow: error: {guard.error}", file=sys.stderr)
        return 2
    try:
        snap = stats.snapshot().to_dict()
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as e:
        print(f"wattflow: error: {args.session}: events hold values of the wrong type:"
              f" {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    end = replayer.stream.end
    if end is not None:
        snap["wall_s"] = _wall_s(end.summary.get("wall_s"))
    for line in summary_lines(snap):
        print(line)
    if not finished:
        print(f"replay stopped at t={replayer.position_s:.1f} s", file=sys.stderr)
    elif replayer.stream.truncated:
        print("the session was cut short: its last line is incomplete (crash?)")
    elif end is None:
        print("no end record: the run did not close cleanly")
    return 0
