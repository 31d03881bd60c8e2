"""Answers SIGINT, SIGTERM and SIGHUP within a bound of wall time, whatever the run's
loop is doing.

asyncio's `add_signal_handler` runs the handler on the loop, so a loop that never gets
back to its selector (a saturated virtual-time loop, a subscriber stuck writing to a
pipe nobody reads) never stops. Here the C-level signal handler writes the signal
number to a socket (`signal.set_wakeup_fd`, which works whatever the main thread is
doing) and a watcher thread reads it:

- first signal: ask the run to stop on its loop (`on_stop`, through
  `call_soon_threadsafe`), then give it `grace_s` to close its session itself;
- if it has not finished by then, or on a second signal: `on_emergency` (close the
  session from another thread, restore power limits, exit the process);
- if even that has not exited the process `emergency_budget_s` later (a disk that does
  not answer an fsync), or on one more signal: `on_hard_exit` (leave now; the session
  may lack its end record, as after SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: Seconds the run gets to stop cleanly after a signal before the watchdog closes the
#: session itself; the promise to users is an answer within 2 s.
DEFAULT_GRACE_S = 1.5
#: Seconds the emergency close may take before the process leaves regardless.
DEFAULT_EMERGENCY_BUDGET_S = 0.4


class StopWatchdog:
    def __init__(self, on_stop: Callable[[int], None], on_emergency: Callable[[int], None],
                 on_hard_exit: Callable[[int], None], *, grace_s: float = DEFAULT_GRACE_S,
                 emergency_budget_s: float = DEFAULT_EMERGENCY_BUDGET_S) -> None:
        self._on_stop = on_stop
        self._on_emergency = on_emergency
        self._on_hard_exit = on_hard_exit
        self.grace_s = grace_s
        self.emergency_budget_s = emergency_budget_s
        self._done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._old_handlers: dict[int, object] = {}
        self._old_fd = -1
        self._rsock: socket.socket | None = None
        self._wsock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._signals_seen = 0
        self._emergency_started = threading.Event()
        self.installed = False

    def retarget(self, on_stop: Callable[[int], None]) -> None:
        """Send the first signal somewhere else (the dashboard asks its app to quit)."""
        self._on_stop = on_stop

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take over the signals; call from the main thread, with the loop that
        `on_stop` must run on."""
        if self.installed or threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread (tests, embeds)
        self._loop = loop
        self._rsock, self._wsock = socket.socketpair()
        self._wsock.setblocking(False)
        for sig in SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, _python_level_noop)
        self._old_fd = signal.set_wakeup_fd(self._wsock.fileno(), warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="wattflow-stop-watchdog",
                                        daemon=True)
        self._thread.start()
        self.installed = True

    def finished(self) -> None:
        """The run has closed its session: nothing left to guard."""
        self._done.set()

    def uninstall(self) -> None:
        if not self.installed:
            return
        self.installed = False
        self._done.set()
        signal.set_wakeup_fd(self._old_fd)
        for sig, handler in self._old_handlers.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, handler)  # type: ignore[arg-type]
        if self._wsock is not None:
            with contextlib.suppress(OSError):
                self._wsock.send(b"\0")  # wakes the watcher so it can end
        if self._thread is not None:
            self._thread.join(1.0)
        for s in (self._rsock, self._wsock):
            if s is not None:
                s.close()

    # -- watcher thread ------------------------------------------------------------
    def _watch(self) -> None:
        assert self._rsock is not None
        while True:
            try:
                data = self._rsock.recv(64)
            except OSError:
                return
            if not data or (self._done.is_set() and not self.installed):
                return
            for sig in data:
                if sig == 0:
                    continue  # the uninstall wake-up
                self._signals_seen += 1
                if self._signals_seen == 1:
                    self._ask_stop(sig)
                else:
                    self._emergency(sig)  # a second signal: the user insists

    def _ask_stop(self, sig: int) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to stop
                loop.call_soon_threadsafe(self._on_stop, sig)
        threading.Thread(target=self._deadline, args=(sig,), name="wattflow-stop-deadline",
                         daemon=True).start()

    def _deadline(self, sig: int) -> None:
        if not self._done.wait(self.grace_s):
            self._emergency(sig)

    def _emergency(self, sig: int) -> None:
        if self._done.is_set():
            return
        if self._emergency_started.is_set():
            self._on_hard_exit(sig)  # one more signal while closing: leave now
            return
        self._emergency_started.set()
        # The close runs on its own thread so that this one can still keep the deadline
        # when the close itself blocks (an fsync to a disk that does not answer).
        closer = threading.Thread(target=self._on_emergency, args=(sig,),
                                  name="wattflow-emergency-close", daemon=True)
        closer.start()
        closer.join(self.emergency_budget_s)
        if closer.is_alive():
            self._on_hard_exit(sig)


def _python_level_noop(signum: int, frame: object) -> None:
    """The wakeup fd carries the signal to the watcher; nothing to do in the main
    thread (and raising KeyboardInterrupt there could cut a write in half)."""


def signal_name(sig: int) -> str:
    return "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name
