"""`wattflow run` with the dashboard: the entry the CLI calls instead of the headless
printer. Returns once the run has ended and its session is closed."""

from __future__ import annotations

import asyncio

from app.core.runner import Runner, RunOutcome
from app.stop_watchdog import StopWatchdog
from app.ui.app import DashboardApp
from app.ui.backends import LiveBackend


async def run_dashboard_async(runner: Runner, *, virtual: bool, exit_on_end: bool = False,
                              watchdog: StopWatchdog | None = None) -> tuple[RunOutcome, bool]:
    backend = LiveBackend(runner, virtual=virtual)
    # With a watchdog the signals are its (it answers even when a loop is stuck) and
    # it asks the app to quit; without one the app takes SIGTERM/SIGHUP itself.
    app = DashboardApp(backend, exit_on_end=exit_on_end, handle_signals=watchdog is None)
    if watchdog is not None:
        watchdog.retarget(app.stop_by_signal)
        watchdog.install(asyncio.get_running_loop())
    try:
        await app.run_async()
    finally:
        # The app may have ended without `q` (a crash in a widget): the run still ends
        # through request_stop, and the runner closes the session itself.
        if backend.started:
            backend.request_quit("the dashboard closed")
            await backend.wait_done()
        if watchdog is not None:
            watchdog.finished()
    return backend.result(), app.terminated


def run_dashboard(runner: Runner, *, virtual: bool, exit_on_end: bool = False,
                  watchdog: StopWatchdog | None = None) -> tuple[RunOutcome, bool]:
    """Run `runner` under the dashboard until `q` (the run is stopped as "interrupted")
    or until the run ends and the user leaves. Returns (outcome, terminated by a signal).
    ConfigError/RunError from the runner are raised here, after the terminal is restored.

    `virtual`: the runner gets its own thread with a VirtualTimeEventLoop (`--fast`);
    the UI stays on wall time."""
    return asyncio.run(run_dashboard_async(runner, virtual=virtual, exit_on_end=exit_on_end,
                                           watchdog=watchdog))
