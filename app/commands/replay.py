"""`wattflow replay SESSION [--speed X] [--headless]`: play a recorded session back
through the same subscribers a live run has (progress lines, live stats).

`--follow` tails a session another wattflow is recording instead: its events as they
are written, until the end record (or until the file stops growing for
`--follow-timeout` seconds: the writer died). docs/replay.md says more.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from pathlib import Path
from typing import Any

from app.core.bus import EventBus
from app.core.events import Event
from app.core.replay import Replayer
from app.core.replay_follow import DEFAULT_TIMEOUT_S, FollowedSession, FollowTimeout
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


def add_arguments(p: argparse.ArgumentParser, number: Any) -> None:
    """The flags of `replay` (app/cli.py passes its number parser)."""
    p.add_argument("session")
    p.add_argument("other", nargs="?", metavar="SESSION_B",
                   help="a second session, played beside the first (differences: B minus A)")
    p.add_argument("--align", metavar="MARK", default=None,
                   help="with two sessions: line them up on their first mark MARK"
                        " (default: on their starts)")
    p.add_argument("--speed", type=parse_speed, default=1.0,
                   help="playback speed: 2 is twice as fast, max as fast as possible")
    p.add_argument("--headless", action="store_true", help="no dashboard: progress lines")
    p.add_argument("--follow", action="store_true",
                   help="tail a session another wattflow is recording, until its end record")
    p.add_argument("--follow-timeout", type=number(float, 0, 86400, lo_open=True, unit=" s"),
                   default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="with --follow: give up when the file has not grown for S seconds"
                        f" (default {DEFAULT_TIMEOUT_S:g})")


class _Stats:
    """The live statistics as a bus subscriber that cannot be dropped silently: an
    event they cannot take (values the reader let through but that make no sense
    together) stops the replay with a one-line error, as `report` does.
    `skip_header`: the statistics came from a seek index, which fed them the header."""

    def __init__(self, stats: LiveStats, path: str, *, skip_header: bool = False) -> None:
        self.stats = stats
        self.path = path
        self.skip_header = skip_header
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None

    def on_event(self, ev: Event) -> None:
        if self.error is not None or (self.skip_header and ev.kind == "session"):
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


def _error(msg: str) -> int:
    print(f"wattflow: error: {msg}", file=sys.stderr)
    return 2


def _print_summary(stats: LiveStats, path: str, wall_s: object = None) -> bool:
    try:
        snap = stats.snapshot().to_dict()
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as e:
        _error(f"{path}: events hold values of the wrong type: {type(e).__name__}: {e}")
        return False
    snap["wall_s"] = _wall_s(wall_s)
    for line in summary_lines(snap):
        print(line)
    return True


def follow(args: argparse.Namespace) -> int:
    """`replay --follow`: progress lines as the recording run writes its events."""
    stats = LiveStats()
    guard = _Stats(stats, args.session)
    try:
        stream = FollowedSession(args.session, timeout_s=args.follow_timeout)
    except SessionError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        print("follow stopped before the session began", file=sys.stderr)
        return 0
    from app.ui.terminal import has_terminal

    if not args.headless and has_terminal():
        return _follow_dashboard(stream, guard)
    printer = HeadlessPrinter(stats)
    print(f"following {stream.path} (Ctrl-C stops; the run goes on)", flush=True)
    guard.on_event(stream.header)
    failure: str | None = None
    stopped = False
    try:
        for ev in stream:
            guard.on_event(ev)
            if guard.error is not None:
                break
            printer.on_event(ev)
    except FollowTimeout as exc:
        failure = str(exc)
    except SessionError as exc:  # a bad line: the same refusal as a finished file's
        return _error(str(exc))
    except KeyboardInterrupt:
        stopped = True
    if guard.error is not None:
        return _error(guard.error)
    end = stream.end
    if end is not None:
        guard.on_event(end)
    if not _print_summary(stats, args.session,
                          end.summary.get("wall_s") if end is not None else None):
        return 2
    if stopped:
        print(f"follow stopped at t={stream.last_t_s:.1f} s", file=sys.stderr)
    elif failure is not None:
        print(f"wattflow: error: {failure}", file=sys.stderr)
        return 1
    elif stream.truncated:
        print("the session was cut short: its last line is incomplete (the writer died?)")
    else:
        print(f"the run ended ({end.reason if end is not None else '?'})")
    return 0


class _Prefixed:
    """A text stream that puts a prefix before each line (A's and B's progress)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def write(self, text: str) -> int:
        lines = text.splitlines(keepends=True)
        sys.stdout.write("".join(f"{self.prefix}{x}" if x.strip() else x for x in lines))
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()


def run_pair(args: argparse.Namespace) -> int:
    """Two sessions played together on A's clock (B shifted by the alignment):
    progress lines of each, their summaries, and B's differences from A."""
    from app.commands.report import make_console, snapshots_difference_table
    from app.core.replay_index import ReplayIndex
    from app.core.replay_pair import align_offset

    try:
        ia, ib = ReplayIndex.build(args.session), ReplayIndex.build(args.other)
        offset = align_offset(ia, ib, args.align)
    except SessionError as exc:
        return _error(str(exc))
    guards: list[_Stats] = []
    replayers: list[Replayer] = []
    for path, index, start in ((args.session, ia, 0.0), (args.other, ib, -offset)):
        bus = EventBus()
        guard = _Stats(index.stats_at(start), path, skip_header=True)
        bus.subscribe(guard.on_event)
        r = Replayer(path, bus, speed=args.speed, index=index)
        if start:
            r.seek(start)
        bus.subscribe(HeadlessPrinter(guard.stats, out=_Prefixed(  # type: ignore[arg-type]
            "A " if not guards else "B ")).on_event)
        guards.append(guard)
        replayers.append(r)
    if offset:
        print(f"aligned on mark {args.align!r}: B runs {abs(offset):.1f} s"
              f" {'behind' if offset > 0 else 'ahead of'} A")

    async def main() -> bool:
        tasks = [asyncio.create_task(r.run()) for r in replayers]
        for g, t in zip(guards, tasks, strict=True):
            g.task = t
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, lambda: [t.cancel() for t in tasks])
        done = await asyncio.gather(*tasks, return_exceptions=True)
        for d in done:
            if isinstance(d, SessionError):
                raise d
        return not any(isinstance(d, asyncio.CancelledError) for d in done)

    try:
        finished = asyncio.run(main())
    except SessionError as exc:
        return _error(str(exc))
    for g in guards:
        if g.error is not None:
            return _error(g.error)
    snaps = []
    for label, g, index in (("A", guards[0], ia), ("B", guards[1], ib)):
        print(f"{label}: {g.path}")
        snaps.append(g.stats.snapshot())
        if not _print_summary(g.stats, g.path,
                              index.end.summary.get("wall_s") if index.end else None):
            return 2
    make_console().print(snapshots_difference_table(
        ia.path.name if ia.path else "A", snaps[0], ib.path.name if ib.path else "B", snaps[1]))
    if not finished:
        print(f"replay stopped at t={replayers[0].now_s():.1f} s", file=sys.stderr)
    return 0


def _pair_dashboard(args: argparse.Namespace) -> int:
    from app.commands.report import make_console, snapshots_difference_table
    from app.ui.replay_pair import replay_pair_dashboard

    try:
        a, b = replay_pair_dashboard(args)
    except SessionError as exc:
        return _error(str(exc))
    make_console().print(snapshots_difference_table(Path(args.session).name, a,
                                                    Path(args.other).name, b))
    return 0


def _follow_dashboard(stream: FollowedSession, guard: _Stats) -> int:
    """`replay --follow` in a terminal: the dashboard on the session as it is written."""
    from app.core.replay_follow import FollowPlayer
    from app.ui.replay import replay_dashboard

    bus = EventBus()
    bus.subscribe(guard.on_event)
    player = FollowPlayer(stream, bus)
    try:
        replay_dashboard(player, guard.stats)
    except FollowTimeout as exc:
        print(f"wattflow: error: {exc}", file=sys.stderr)
        return 1
    except SessionError as exc:
        return _error(str(exc))
    if guard.error is not None:
        return _error(guard.error)
    end = stream.end
    if not _print_summary(guard.stats, str(stream.path),
                          end.summary.get("wall_s") if end is not None else None):
        return 2
    if end is None:
        print(f"follow stopped at t={player.position_s:.1f} s", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    other = getattr(args, "other", None)
    if getattr(args, "follow", False):
        if other is not None:
            return _error("--follow takes one session")
        return follow(args)
    if other is not None:
        from app.ui.terminal import has_terminal

        if args.headless or not has_terminal():
            return run_pair(args)
        return _pair_dashboard(args)
    if getattr(args, "align", None) is not None:
        return _error("--align needs two sessions: replay A B --align MARK")
    bus = EventBus()
    stats = LiveStats()
    guard = _Stats(stats, args.session)
    bus.subscribe(guard.on_event)
    from app.ui.terminal import has_terminal

    headless = args.headless or not has_terminal()
    index = None
    try:
        if not headless:
            # The dashboard seeks: the file is read once into an index first (about
            # two seconds for an hour-long session).
            from app.core.replay_index import ReplayIndex

            index = ReplayIndex.build(args.session)
        replayer = Replayer(args.session, bus, speed=args.speed, index=index,
                            hold_at_end=index is not None)
    except SessionError as exc:
        print(f"wattflow: error: {exc}", file=sys.stderr)
        return 2
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

            assert index is not None

            def seeked(new: LiveStats) -> None:
                guard.stats = new

            finished = replay_dashboard(replayer, stats, index=index, on_stats=seeked)
    except SessionError as exc:  # a bad line met half-way through the file
        print(f"wattflow: error: {exc}", file=sys.stderr)
        return 2
    if guard.error is not None:
        print(f"wattflow: error: {guard.error}", file=sys.stderr)
        return 2
    try:
        snap = guard.stats.snapshot().to_dict()  # the seeks' statistics, if any
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as e:
        print(f"wattflow: error: {args.session}: events hold values of the wrong type:"
              f" {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    end = replayer.stream.end if index is None else index.end
    if end is not None:
        snap["wall_s"] = _wall_s(end.summary.get("wall_s"))
    for line in summary_lines(snap):
        print(line)
    if not finished:
        print(f"replay stopped at t={replayer.position_s:.1f} s", file=sys.stderr)
    elif replayer.stream.truncated or (index is not None and index.truncated):
        print("the session was cut short: its last line is incomplete (crash?)")
    elif end is None:
        print("no end record: the run did not close cleanly")
    return 0
