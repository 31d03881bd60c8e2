from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from app.core.bus import EventBus
from app.core.clock import run_async
from app.core.events import Event
from app.core.replay import Replayer
from app.core.runner import RunConfig, Runner
from app.core.session_reader import SessionError
from app.core.stats import LiveStats


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "s.jsonl"
    cfg = RunConfig(workload="sequential", workload_params={"chunks": 3}, engine="sim",
                    meters=["sim"], duration_s=4.0, session_path=path)
    run_async(Runner(cfg).run(), virtual=True)
    return path


def _replay(path: Path, speed: float, during: object = None) -> tuple[list[Event], float]:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)

    async def main() -> float:
        r = Replayer(path, bus, speed)
        t0 = time.monotonic()
        task = asyncio.create_task(r.run())
        if during is not None:
            await during(r)  # type: ignore[operator]
        await task
        return time.monotonic() - t0

    return seen, asyncio.run(main())


def test_replay_publishes_every_event_and_stats_match_the_run(session: Path) -> None:
    events, _ = _replay(session, math.inf)
    assert events[0].kind == "session" and events[-1].kind == "end"
    stats = LiveStats()
    for ev in events:
        stats.on_event(ev)
    snap = stats.snapshot()
    end = events[-1].summary  # type: ignore[attr-defined]
    assert snap.output_tokens == end["output_tokens"] > 0
    assert snap.energy_j["gpu"] == pytest.approx(end["energy_j"]["gpu"])


def test_replay_is_paced_by_speed(session: Path) -> None:
    _, fast = _replay(session, 400.0)
    _, slow = _replay(session, 2.0)
    assert slow >= 4.0 / 2.0 * 0.9  # a 4 s session at 2x takes about 2 s
    assert fast < slow / 4


def test_pause_holds_events_and_speed_change_applies(session: Path) -> None:
    counts: dict[str, int] = {}

    async def during(r: Replayer) -> None:
        await asyncio.sleep(0.2)
        r.pause()
        n = r.events
        await asyncio.sleep(0.3)
        counts["while_paused"] = r.events - n
        r.resume()
        r.set_speed(1000.0)

    _, took = _replay(session, 1.0, during)
    assert counts["while_paused"] == 0
    assert took < 2.0  # 4 s of session at 1x would take 4 s


def test_bad_speed_and_bad_file_are_rejected(tmp_path: Path, session: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        Replayer(session, EventBus(), 0.0)
    junk = tmp_path / "junk.jsonl"
    junk.write_text("nope\n")
    with pytest.raises(SessionError):
        Replayer(junk, EventBus(), 1.0)
