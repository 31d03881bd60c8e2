"""`wattflow replay SESSION` with the dashboard."""

from __future__ import annotations

import asyncio

from app.core.replay import Replayer
from app.core.stats import LiveStats
from app.ui.app import DashboardApp
from app.ui.backends import ReplayBackend


async def replay_dashboard_async(replayer: Replayer, stats: LiveStats) -> bool:
    backend = ReplayBackend(replayer, stats)
    app = DashboardApp(backend)
    try:
        await app.run_async()
    finally:
        backend.request_quit("the dashboard closed")
        await backend.wait_done()
    if backend.error is not None:
        raise backend.error
    return backend.finished


def replay_dashboard(replayer: Replayer, stats: LiveStats) -> bool:
    """Play `replayer` under the dashboard; True if it reached the end of the session,
    False if the user left before. A SessionError met mid-file is raised here."""
    return asyncio.run(replay_dashboard_async(replayer, stats))
