"""What the dashboard drives: a live run (on the UI's loop, or on its own thread in
virtual time) or a replay. The app talks to one `Backend`; the backend delivers
frames and the end of the run through a `Sink` (the app's thread-safe post_message).

Why a thread for virtual time: the runner's VirtualTimeEventLoop jumps time whenever
it would idle, which a terminal UI (timers, key reads) cannot live on. So in virtual
mode the runner gets its own thread and loop; everything that touches the runner
(knob changes, marks, stop, taking a frame) is marshalled onto that loop with
`call_soon_threadsafe`, and frames come back as messages. In wall-time mode the runner
is a plain task on the UI's loop and the same calls are direct.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from app.core.clock import run_async
from app.core.knobs import KnobError
from app.core.replay import Replayer
from app.core.runner import Runner, RunOutcome
from app.core.stats import LiveStats
from app.ui.feed import Feed, Frame

T = TypeVar("T")
# A knob change computed from the knob's value and the GPUs' power limits, at the moment
# it is applied (on the runner's loop).
# `<` from "as fast as possible" (no half of infinity) lands on this paced speed.
SLOWEST_FROM_MAX = 64.0
# How long a knob change may wait for the runner's loop to answer before the UI gives up.
CALL_TIMEOUT_S = 5.0


class Sink(Protocol):
    """Where a backend delivers; thread-safe (the app posts Textual messages)."""

    def frame_ready(self, frame: Frame) -> None: ...

    def run_finished(self) -> None: ...


class Backend(Protocol):
    mode: str  # "live" or "replay"
    virtual: bool
    done: bool

    def start(self, sink: Sink) -> None: ...

    def request_frame(self) -> None: ...

    async def step_knob(self, name: str, direction: int) -> tuple[float | None, float | None]:
        """One step of the knob's own rule (app/core/knobs.py), up (+1) or down (-1)."""
        ...

    async def set_knob(self, name: str, value: float | None) -> None: ...

    async def mark(self, label: str) -> None: ...

    async def toggle_autopilot(self) -> bool:
        """Turn the run's autopilot off or on; whether it is on now."""
        ...

    def request_quit(self, message: str) -> None: ...

    async def wait_done(self) -> None: ...

    # replay only
    def toggle_pause(self) -> bool: ...

    def scale_speed(self, factor: float) -> float: ...

    @property
    def speed(self) -> float | None: ...

    @property
    def paused(self) -> bool: ...


class LiveBackend:
    """A Runner, started by the dashboard and stopped by it."""

    mode = "live"

    def __init__(self, runner: Runner, *, virtual: bool = False) -> None:
        self.runner = runner
        self.virtual = virtual
        self.feed = Feed(runner.bus, runner.stats)
        self.outcome: RunOutcome | None = None
        self.error: BaseException | None = None
        self.done = False
        self.ready = False
        self.stopping = False
        self.started = False
        self._sink: Sink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the runner's loop
        self._accepting = False  # the runner exists on its loop: request_stop works
        self._quit_message: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()

    # -- life ----------------------------------------------------------------------
    def start(self, sink: Sink) -> None:
        self._sink = sink
        self.started = True
        if self.virtual:
            self._thread = threading.Thread(target=self._thread_main, name="wattflow-runner",
                                            daemon=True)
            self._thread.start()
        else:
            # A plain task rather than a Textual worker: the app's shutdown cancels its
            # workers, and the runner must always get to close the session itself.
            self._task = asyncio.get_running_loop().create_task(self._main())

    def _thread_main(self) -> None:
        run_async(self._main(), virtual=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        pump = asyncio.create_task(self.feed.pump())
        run = asyncio.create_task(self.runner.run(on_ready=self._on_ready))
        await asyncio.sleep(0)  # run() has created its stop event now
        self._accepting = True
        if self._quit_message is not None:
            self.runner.request_stop("interrupted", self._quit_message)
        try:
            self.outcome = await run
        except BaseException as exc:  # ConfigError, RunError: re-raised to the CLI
            self.error = exc
        finally:
            self.feed.close()
            await pump
            self.done = True
            self._finished.set()
            if self._sink is not None:
                self._sink.frame_ready(self.feed.frame(self._now()))
                self._sink.run_finished()

    def _on_ready(self, runner: Runner) -> None:
        self.ready = True

    def _now(self) -> float:
        try:
            return self.runner.clock.now()
        except AssertionError:  # run() has not started its clock yet
            return 0.0

    # -- calls onto the runner's loop -------------------------------------------------
    async def _call(self, fn: Callable[[], T]) -> T:
        if self.done:
            raise KnobError("the run has ended")
        if not self.ready or self._loop is None:
            raise KnobError("the run is still starting")
        if self.stopping:
            raise KnobError("the run is stopping")
        if not self.virtual:
            return fn()
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def go() -> None:
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:
                    fut.set_exception(exc)

        try:
            self._loop.call_soon_threadsafe(go)
        except RuntimeError:  # the runner's loop has closed
            raise KnobError("the run has ended") from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), CALL_TIMEOUT_S)
        except TimeoutError:
            raise KnobError("the run did not answer in time") from None

    def request_frame(self) -> None:
        if self._sink is None or self._loop is None or self.done:
            return
        sink, feed = self._sink, self.feed

        def take() -> None:
            sink.frame_ready(feed.frame(self._now()))

        if self.virtual:
            # The loop may close between the check and the call: the last frame is posted
            # by _main then.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(take)
        else:
            take()

    async def step_knob(self, name: str, direction: int) -> tuple[float | None, float | None]:
        """The core steps the knob (its rule, its bounds in force) on the runner's loop,
        so two quick key presses step twice even if no frame came in between."""
        return await self._call(lambda: self.runner.step_knob(name, direction, source="ui"))

    async def set_knob(self, name: str, value: float | None) -> None:
        await self._call(lambda: self.runner.set_knob(name, value, source="ui"))

    async def mark(self, label: str) -> None:
        await self._call(lambda: self.runner.mark(label))

    async def toggle_autopilot(self) -> bool:
        def toggle() -> bool:
            pilot = self.runner.autopilot
            if pilot is None:
                raise KnobError("this run has no autopilot: start it with --autopilot OBJECTIVE")
            pilot.set_enabled(not pilot.enabled)
            return pilot.enabled

        return await self._call(toggle)

    def request_quit(self, message: str) -> None:
        if self.done:
            return
        self.stopping = True
        if not self._accepting or self._loop is None:
            self._quit_message = message  # picked up as soon as the run exists
            return

        def stop() -> None:
            self.runner.request_stop("interrupted", message)

        if self.virtual:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(stop)
        else:
            stop()

    async def wait_done(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)
        elif self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def result(self) -> RunOutcome:
        """The run's outcome, or the exception that kept it from running."""
        if self.error is not None:
            raise self.error
        assert self.outcome is not None, "the run has not finished"
        return self.outcome

    # -- replay-only controls ----------------------------------------------------
    def toggle_pause(self) -> bool:
        raise KnobError("pause and play are for replays; a live run goes on")

    def scale_speed(self, factor: float) -> float:
        raise KnobError("replay speed is for replays; a live run runs in its own time")

    @property
    def speed(self) -> float | None:
        return None

    @property
    def paused(self) -> bool:
        return False


class ReplayBackend:
    """A Replayer on the UI's loop (replays run in wall time, paced by their speed)."""

    mode = "replay"
    virtual = False

    def __init__(self, replayer: Replayer, stats: LiveStats) -> None:
        self.replayer = replayer
        self.feed = Feed(replayer.bus, stats)
        self.done = False
        self.finished = False  # reached the end of the file (not stopped early)
        self.error: BaseException | None = None
        self._sink: Sink | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, sink: Sink) -> None:
        self._sink = sink
        self._task = asyncio.get_running_loop().create_task(self._main())

    async def _main(self) -> None:
        pump = asyncio.create_task(self.feed.pump())
        try:
            await self.replayer.run()
            self.finished = True
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # SessionError half-way through the file
            self.error = exc
        finally:
            self.feed.close()
            await pump
            self.done = True
            if self._sink is not None:
                self._sink.frame_ready(self.feed.frame(self.replayer.now_s()))
                self._sink.run_finished()

    def request_frame(self) -> None:
        if self._sink is not None and not self.done:
            self._sink.frame_ready(self.feed.frame(self.replayer.now_s()))

    async def step_knob(self, name: str, direction: int) -> tuple[float | None, float | None]:
        raise KnobError("knobs are read-only in a replay")

    async def set_knob(self, name: str, value: float | None) -> None:
        raise KnobError("knobs are read-only in a replay")

    async def mark(self, label: str) -> None:
        raise KnobError("marks are recorded in live runs only")

    async def toggle_autopilot(self) -> bool:
        raise KnobError("the autopilot acts in live runs only (a replay shows its decisions)")

    def request_quit(self, message: str) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def wait_done(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def toggle_pause(self) -> bool:
        if self.replayer.paused:
            self.replayer.resume()
        else:
            self.replayer.pause()
        return self.replayer.paused

    def scale_speed(self, factor: float) -> float:
        speed = self.replayer.speed
        if math.isinf(speed):
            # "as fast as possible" has no half: slow down to the fastest paced speed.
            speed = SLOWEST_FROM_MAX if factor < 1 else speed
        else:
            speed *= factor
        self.replayer.set_speed(speed)
        return self.replayer.speed

    @property
    def speed(self) -> float | None:
        return self.replayer.speed

    @property
    def paused(self) -> bool:
        return self.replayer.paused
