from __future__ import annotations

import asyncio

from app.core.bus import EventBus
from app.core.events import KnobEvent, RequestEvent, Sample


def test_slow_queue_subscriber_coalesces_telemetry_but_keeps_every_request() -> None:
    async def main() -> None:
        bus = EventBus()
        sub = bus.subscribe_queue(soft_limit=50)
        inline: list[int] = []
        bus.subscribe(lambda ev: inline.append(1))
        for i in range(1000):
            bus.publish(Sample(t_s=i, device="gpu0", power_w=float(i)))
            bus.publish(Sample(t_s=i, device="gpu1", power_w=float(i)))
            if i % 10 == 0:
                bus.publish(RequestEvent(t_s=i, request_id=f"r{i}", phase="submitted"))
        bus.publish(KnobEvent(t_s=1000, knob="rate", value=2.0))
        # The publisher never waited for the consumer, and the inline subscriber saw all.
        assert len(inline) == 2101
        batch = await sub.get_batch()
        reqs = [e for e in batch if e.kind == "request"]
        samples = [e for e in batch if e.kind == "sample"]
        assert [r.request_id for r in reqs] == [f"r{i}" for i in range(0, 1000, 10)]  # type: ignore[attr-defined]
        assert batch[-1].kind == "knob"
        assert len(samples) < 200 and sub.coalesced > 1500
        # The newest reading of each device survives.
        newest = {s.device: s.power_w for s in samples}  # type: ignore[attr-defined]
        assert newest == {"gpu0": 999.0, "gpu1": 999.0}
        bus.close()
        assert await sub.get_batch() == []

    asyncio.run(main())


def test_failing_inline_subscriber_is_dropped_not_fatal() -> None:
    bus = EventBus()
    seen: list[str] = []

    def bad(ev: object) -> None:
        raise RuntimeError("boom")

    bus.subscribe(bad)
    bus.subscribe(lambda ev: seen.append(ev.kind))  # type: ignore[attr-defined]
    bus.publish(KnobEvent(t_s=0, knob="rate", value=1.0))
    bus.publish(KnobEvent(t_s=1, knob="rate", value=2.0))
    assert seen == ["knob", "knob"]
