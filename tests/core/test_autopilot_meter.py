"""The epoch meter judges a setting on the requests it served: the queue a setting left
behind, draining after a back-off, is not held against the next one."""

from __future__ import annotations

from app.core.autopilot.measure import EpochMeter
from app.core.autopilot.objective import parse_objective
from app.core.events import RequestEvent


def served(meter: EpochMeter, rid: str, submitted: float, ttft: float, tpot: float,
           tokens: int = 50) -> None:
    first = submitted + ttft
    done = first + tpot * (tokens - 1)
    meter.on_event(RequestEvent(t_s=submitted, request_id=rid, phase="submitted"))
    meter.on_event(RequestEvent(t_s=first, request_id=rid, phase="first_token", ttft_s=ttft))
    meter.on_event(RequestEvent(t_s=done, request_id=rid, phase="finished", ttft_s=ttft,
                                tpot_s=tpot, latency_s=done - submitted, output_tokens=tokens))


def test_requests_queued_under_the_setting_before_do_not_count_early() -> None:
    meter = EpochMeter(parse_objective("ttft_p90=1s,tpot_p90=50ms"))
    # Under the setting backed off from: requests that began decoding before the epoch
    # at 80 ms per token and finish inside it, and requests queued before it that get
    # their first token inside it, 6 s after they came.
    meter.reset(80.0)
    for i in range(10):
        meter.on_event(RequestEvent(t_s=90.0 + 0.1 * i, request_id=f"slow{i}",
                                    phase="submitted"))
        meter.on_event(RequestEvent(t_s=93.0 + 0.1 * i, request_id=f"slow{i}",
                                    phase="first_token", ttft_s=3.0))
        meter.on_event(RequestEvent(t_s=95.0 + 0.1 * i, request_id=f"queued{i}",
                                    phase="submitted"))
    meter.reset(100.0)
    for i in range(10):
        meter.on_event(RequestEvent(t_s=101.0 + 0.1 * i, request_id=f"slow{i}",
                                    phase="finished", ttft_s=3.0, tpot_s=0.08,
                                    latency_s=11.0, output_tokens=100))
        sub = 95.0 + 0.1 * i
        meter.on_event(RequestEvent(t_s=sub + 6.0, request_id=f"queued{i}",
                                    phase="first_token", ttft_s=6.0))
    # Served under this setting: well inside the limits.
    for i in range(10):
        served(meter, f"new{i}", 100.5 + i, 0.3, 0.02)
    now = 112.0
    own = meter.recent(now, 12.0)
    assert own.observed["ttft_p90"] < 1.0 and own.observed["tpot_p90"] < 0.05
    assert own.counts["ttft_p90"] >= 10
    # The whole epoch, as judged when no back-off preceded it, holds the old ones too.
    whole = meter.measure(now)
    assert whole.observed["ttft_p90"] > 1.0 and whole.observed["tpot_p90"] > 0.05
    own_epoch = meter.measure(now, own_only=True)
    assert own_epoch.observed["ttft_p90"] < 1.0 and own_epoch.observed["tpot_p90"] < 0.05


def test_a_setting_that_keeps_its_own_requests_waiting_still_shows() -> None:
    meter = EpochMeter(parse_objective("ttft_p90=1s"))
    meter.reset(100.0)
    for i in range(8):  # submitted in the epoch, no first token 5 s and more later
        meter.on_event(RequestEvent(t_s=100.0 + i * 0.5, request_id=f"r{i}",
                                    phase="submitted"))
    m = meter.recent(110.0, 10.0)
    assert m.counts["ttft_p90"] == 8 and m.observed["ttft_p90"] > 5.0


def test_the_stages_submitted_are_kept_across_epochs() -> None:
    meter = EpochMeter(parse_objective("reduce:ttft_p90=1s"))
    meter.reset(0.0)
    meter.on_event(RequestEvent(t_s=1.0, request_id="a", phase="submitted", stage="map"))
    meter.reset(30.0)  # a new epoch: what was seen before still names the stages
    meter.on_event(RequestEvent(t_s=31.0, request_id="b", phase="submitted", stage="reduce"))
    meter.on_event(RequestEvent(t_s=32.0, request_id="c", phase="submitted", stage=""))
    assert meter.measure(40.0).stages_seen == ("map", "reduce")
