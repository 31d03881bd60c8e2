"""`wattflow replay SESSION` with the dashboard: seekable when given the session's
index (app/ui/replay_app.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.core.replay import Replayer
from app.core.replay_index import ReplayIndex
from app.core.stats import LiveStats
from app.ui.app import DashboardApp
from app.ui.backends import ReplayBackend


async def replay_dashboard_async(replayer: Replayer, stats: LiveStats, *,
                                 index: ReplayIndex | None = None,
                                 on_stats: Callable[[LiveStats], None] | None = None) -> bool:
    backend: ReplayBackend
    app: DashboardApp
    if index is not None:
        from app.ui.replay_app import ReplayDashboardApp
        from app.ui.replay_seek import SeekableReplayBackend

        backend = seekable = SeekableReplayBackend(replayer, stats, index, on_stats)
        app = ReplayDashboardApp(seekable)
    else:
        backend = ReplayBackend(replayer, stats)
        app = DashboardApp(backend)
    try:
        await app.run_async()
    finally:
        backend.request_quit("the dashboard closed")
        await backend.wait_done()
    if backend.error is not None:
        raise backend.error
    # A seekable replay waits at its end for a seek back: having got there is finishing.
    return backend.finished or replayer.at_end


def replay_dashboard(replayer: Replayer, stats: LiveStats, *,
                     index: ReplayIndex | None = None,
                     on_stats: Callable[[LiveStats], None] | None = None) -> bool:
    """Play `replayer` under the dashboard; True if it reached the end of the session,
    False if the user left before. A SessionError met mid-file is raised here."""
    return asyncio.run(replay_dashboard_async(replayer, stats, index=index,
                                              on_stats=on_stats))
