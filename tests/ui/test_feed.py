"""The feed between the bus and the dashboard: bounded memory, nothing but telemetry
dropped, a log of what the operator needs to see."""

from __future__ import annotations

import asyncio

import pytest

from app.core.bus import EventBus
from app.core.events import ErrorEvent, KnobEvent, MarkEvent, RequestEvent, Sample
from app.core.stats import LiveStats
from app.ui.feed import MAX_LABEL_CHARS, MAX_LOG_CHARS, QUEUE_SOFT_LIMIT, Feed


def _sample(t: float, w: float = 300.0) -> Sample:
    return Sample(t_s=t, meter="fake", device="gpu0", component="gpu", energy_mj=t * 1000,
                  power_w=w, power_limit_w=700.0)


def test_a_feed_nobody_drains_stays_bounded_and_keeps_every_knob_event() -> None:
    bus = EventBus()
    stats = LiveStats()
    bus.subscribe(stats.on_event)
    feed = Feed(bus, stats)
    n = 5 * QUEUE_SOFT_LIMIT
    for i in range(n):
        bus.publish(_sample(i * 0.1))
        if i % 1000 == 0:
            bus.publish(KnobEvent(t_s=i * 0.1, knob="batch_limit", value=i // 1000 + 1,
                                  previous=None, source="ui"))
    queued = len(feed._sub)
    assert queued <= QUEUE_SOFT_LIMIT + 1  # samples were coalesced while nobody read
    bus.close()
    asyncio.run(feed.pump())
    frame = feed.frame(now_s=n * 0.1)
    knob_lines = [x for x in frame.log if x.level == "knob"]
    assert len(knob_lines) == n // 1000
    # the stats (an inline subscriber) saw every sample regardless
    assert frame.snapshot.energy_j["gpu"] == pytest.approx((n - 1) * 0.1)


def test_power_history_keeps_only_the_window() -> None:
    bus = EventBus()
    feed = Feed(bus, LiveStats(), history_s=10.0)
    for i in range(300):
        feed.digest(_sample(i * 0.1, w=100 + i))
    pts = feed.frame(now_s=29.9).gpus[0].points
    assert pts[-1] == pytest.approx((29.9, 399.0))
    assert pts[0][0] >= 29.9 - 11.0
    assert feed.frame(now_s=29.9).gpus[0].limit_w == 700.0  # the limit in force, as read


def test_a_label_of_megabytes_is_clipped_on_screen_with_its_length() -> None:
    feed = Feed(EventBus(), LiveStats())
    label = "z" * 3_000_000
    feed.digest(MarkEvent(t_s=1, label=label))
    feed.digest(MarkEvent(t_s=2, label="short"))
    frame = feed.frame(3)
    big, small = frame.log
    assert len(big.text) < MAX_LOG_CHARS + 50 and big.text.endswith("(3,000,000 characters)")
    assert small.text == "mark: short"  # an ordinary one whole
    ticks = [t.label for t in frame.ticks if t.kind == "mark"]
    assert len(ticks[0]) < MAX_LABEL_CHARS + 30 and ticks[1] == "short"


def test_log_has_one_line_per_failure_reason_and_the_last_line_of_a_traceback() -> None:
    feed = Feed(EventBus(), LiveStats())
    for i in range(5):
        feed.digest(RequestEvent(t_s=i, request_id=str(i), phase="failed", reason="HTTP 500"))
    feed.digest(RequestEvent(t_s=6, request_id="x", phase="failed", reason="run ended"))
    feed.digest(MarkEvent(t_s=7, label="m1"))
    feed.digest(ErrorEvent(t_s=8, source="runner", fatal=True,
                           message="Traceback (most recent call last):\n  File x\nValueError: boom"))
    lines = [(x.level, x.text) for x in feed.frame(9).log]
    assert lines == [("warning", "request failed: HTTP 500"), ("mark", "mark: m1"),
                     ("error", "[runner] ValueError: boom")]
