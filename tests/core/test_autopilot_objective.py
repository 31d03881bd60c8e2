"""The autopilot's objective and bounds as a user types them."""

from __future__ import annotations

import pytest

from app.core.autopilot.objective import AutopilotError, parse_duration, parse_objective
from app.core.autopilot.params import params_from, parse_bound


def test_objective_targets_with_units_and_stages() -> None:
    o = parse_objective("ttft_p90=2s, tpot_p90=80ms,summarize:latency_p99=1.5,workflow_p50=1m")
    got = [(t.metric, t.quantile, t.limit_s, t.stage) for t in o.targets]
    assert got == [("ttft", 0.9, 2.0, None), ("tpot", 0.9, 0.08, None),
                   ("latency", 0.99, 1.5, "summarize"), ("workflow", 0.5, 60.0, None)]
    assert o.text() == "ttft_p90=2s,tpot_p90=80ms,summarize:latency_p99=1.5s,workflow_p50=60s"
    assert parse_objective(o.text()) == o  # what is recorded reads back the same


@pytest.mark.parametrize(("text", "words"), [
    ("", "empty"),
    ("ttft=2s", "METRIC_pNN"),
    ("ttft_p90", "expected METRIC_pNN=LIMIT"),
    ("speed_p90=2s", "unknown metric"),
    ("ttft_p10=2s", "p50 to p99.9"),
    ("ttft_p90=fast", "not a duration"),
    ("ttft_p90=0s", "more than 0"),
    ("ttft_p90=1s,ttft_p90=2s", "twice"),
    ("summarize:workflow_p90=10s", "end to end"),
])
def test_bad_objectives_say_what_is_wrong_in_one_line(text: str, words: str) -> None:
    with pytest.raises(AutopilotError) as err:
        parse_objective(text)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_durations() -> None:
    assert parse_duration("80ms") == pytest.approx(0.08)
    assert parse_duration("2") == 2.0
    assert parse_duration(".5s") == 0.5


def test_bounds() -> None:
    assert parse_bound("power_cap=300..700") == ("power_cap", (300.0, 700.0))
    assert parse_bound("batch_limit=4-256") == ("batch_limit", (4, 256))
    p = params_from(["max_num_seqs=16:256"])
    assert "max_num_seqs" in p.knobs and p.bounds["max_num_seqs"] == (16, 256)
    for bad, words in [("power_cap", "KNOB=LO..HI"), ("rate=1..2", "turns"),
                       ("power_cap=700..300", "at most HI"), ("batch_limit=0..8", "batch_limit"),
                       ("bogus=1..2", "unknown knob")]:
        with pytest.raises(AutopilotError) as err:
            parse_bound(bad)
        assert words in str(err.value)
