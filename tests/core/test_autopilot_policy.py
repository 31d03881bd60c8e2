"""The autopilot's decision rule on hand-made measurements: what counts as a setting that
cannot keep up, how far a violated setting is kept away, when a lower cap may be tried,
and that the batch limit does not swing between a TTFT and a TPOT violation."""

from __future__ import annotations

import pytest

from app.core.autopilot.measure import Measurement
from app.core.autopilot.objective import parse_objective
from app.core.autopilot.params import AutopilotParams
from app.core.autopilot.policy import BACKING_OFF, EXPLORING, HOLDING, Cell, Grid, Policy, cell_of

OBJECTIVE = "ttft_p90=1s,tpot_p90=50ms"
CAPS = [300.0, 400.0, 500.0, 600.0, 700.0]
BATCHES = [16.0, 32.0, 64.0, 128.0, 256.0]


def policy(**overrides: float) -> Policy:
    params = AutopilotParams()
    for k, v in overrides.items():
        setattr(params, k, v)
    return Policy(parse_objective(OBJECTIVE), Grid({"power_cap": list(CAPS),
                                                    "batch_limit": list(BATCHES)}), params)


def cell(cap: float = 700.0, batch: float = 64.0) -> Cell:
    return cell_of({"power_cap": cap, "batch_limit": batch})


def measured(t0: float, t1: float, ttft: float = 0.4, tpot: float = 0.02,
             rate: float = 1000.0, jpt: float = 0.5, backlog: tuple[int, int] = (0, 0),
             growth: float = 0.0, mean_out: float = 20.0, queue_share: float = 0.0,
             n: int = 200) -> Measurement:
    """One epoch: every target judged on `n` requests, J/token `jpt` told with 1% noise,
    `rate` tokens/s over the epoch."""
    m = Measurement(t0, t1, finished=n, j_per_token=jpt, noise=0.01,
                    tokens=rate * (t1 - t0), backlog_start=backlog[0], backlog_end=backlog[1],
                    outstanding_growth=growth, outstanding_mean=mean_out,
                    queue_share=queue_share)
    for name, v in (("ttft_p90", ttft), ("tpot_p90", tpot)):
        m.observed[name] = v
        m.counts[name] = n
        m.over[name] = 0
        m.scatter[name] = 0.05
    return m


# -- requests piling up ------------------------------------------------------------------

def test_one_epoch_of_outstanding_growth_is_not_yet_a_violation() -> None:
    p = policy()
    d = p.on_epoch(cell(), measured(0, 30, growth=40, backlog=(0, 3)), 30, 30)
    assert d.state != BACKING_OFF


def test_two_epochs_of_outstanding_growth_with_requests_waiting_back_off() -> None:
    p = policy()
    p.on_epoch(cell(600), measured(0, 30, growth=40, backlog=(0, 3)), 30, 30)
    d = p.on_epoch(cell(600), measured(40, 70, growth=40, backlog=(3, 6)), 70, 30)
    assert d.state == BACKING_OFF
    assert "outstanding rose by 40" in d.reason or "queue grows" in d.reason
    assert d.moves.get("power_cap", 0) > 600


def test_an_extended_epoch_is_not_a_second_epoch_of_growth() -> None:
    p = policy()
    p.on_epoch(cell(600), measured(0, 30, growth=40, backlog=(0, 3)), 30, 30)
    # The same epoch (same start) looked at again after measuring longer.
    d = p.on_epoch(cell(600), measured(0, 45, growth=40, backlog=(0, 3)), 45, 45)
    assert d.state != BACKING_OFF


def test_a_served_burst_is_not_a_setting_that_cannot_keep_up() -> None:
    """Outstanding requests rising two epochs running, but nothing waiting and every
    latency well inside its limit: a fan-out being served."""
    p = policy()
    p.on_epoch(cell(600), measured(0, 30, growth=40), 30, 30)
    d = p.on_epoch(cell(600), measured(40, 70, growth=40), 70, 30)
    assert d.state != BACKING_OFF


# -- where a lower cap is tried ----------------------------------------------------------

def settle_in(p: Policy, c: Cell, epochs: int, rate: float, t: float = 0.0) -> float:
    for _ in range(epochs):
        p.on_epoch(c, measured(t, t + 30, rate=rate), t + 30, 30)
        t += 40
    return t


def test_no_lower_cap_is_tried_before_the_load_is_known() -> None:
    p = policy(min_load_epochs=4)
    d = p.on_epoch(cell(700), measured(0, 30), 30, 30)
    assert d.moves == {} and d.state == HOLDING


def test_no_lower_cap_is_tried_in_a_lull() -> None:
    p = policy(min_load_epochs=4)
    # The first epochs hold (load not yet known), then a lower cap would be tried...
    t = 0.0
    for _ in range(3):
        d = p.on_epoch(cell(700), measured(t, t + 30, rate=1000), t + 30, 30)
        t += 40
    assert d.moves == {}
    # ...but this epoch carries half the usual load: a setting that copes with a lull
    # says nothing of the next burst.
    d = p.on_epoch(cell(700), measured(t, t + 30, rate=500), t + 30, 30)
    assert d.moves == {} and "below its usual" in d.reason
    t += 40
    d = p.on_epoch(cell(700), measured(t, t + 30, rate=1000), t + 30, 30)
    assert d.state == EXPLORING and d.moves == {"power_cap": 600.0}


# -- how long a violated setting is left alone ---------------------------------------------

def test_a_violated_setting_and_the_lower_caps_below_it_are_left_alone() -> None:
    p = policy(infeasible_s=600.0)
    p.on_violation(cell(500), [], measured(0, 30, backlog=(0, 30)), 100.0)
    assert p.infeasible[cell(500)] == pytest.approx(700.0)
    # A lower cap with the same batch limit is slower still.
    assert p.infeasible[cell(400)] >= 700.0 and p.infeasible[cell(300)] >= 700.0
    assert cell(600) not in p.infeasible and cell(500, 128) not in p.infeasible


def test_a_setting_that_violates_again_is_left_alone_twice_as_long() -> None:
    p = policy(infeasible_s=600.0)
    p.on_violation(cell(500), [], measured(0, 30, backlog=(0, 30)), 100.0)
    p.on_violation(cell(500), [], measured(800, 830, backlog=(0, 30)), 900.0)
    assert p.infeasible[cell(500)] == pytest.approx(900.0 + 1200.0)


# -- the batch limit between TTFT and TPOT -----------------------------------------------

def test_the_batch_limit_does_not_swing_between_ttft_and_tpot_violations() -> None:
    p = policy()
    objective = p.objective.targets
    ttft = [t for t in objective if t.metric == "ttft"]
    tpot = [t for t in objective if t.metric == "tpot"]
    # At the highest cap, TTFT over with requests waiting: a larger batch limit.
    d1 = p.on_violation(cell(700, 64), ttft, measured(0, 10, ttft=3.0, backlog=(5, 20),
                                                      queue_share=0.8), 10.0)
    assert d1.moves == {"batch_limit": 128.0}
    # There, time per token over: back to the smaller batch once (a queue drains, time
    # per token at a batch too large does not)...
    d2 = p.on_violation(cell(700, 128), tpot, measured(20, 30, tpot=0.09), 30.0)
    assert d2.moves == {"batch_limit": 64.0}
    # ...and when TTFT is over there again, by less than time per token was at 128, it
    # holds here: the objective cannot be met.
    d3 = p.on_violation(cell(700, 64), ttft, measured(40, 50, ttft=1.5, backlog=(20, 30),
                                                      queue_share=0.8), 50.0)
    assert d3.state == HOLDING and d3.moves == {}
    assert "cannot be met" in d3.reason
    # Over again here: still holding, no swing back to 128.
    d4 = p.on_violation(cell(700, 64), ttft, measured(60, 70, ttft=1.6, backlog=(30, 40),
                                                      queue_share=0.8), 70.0)
    assert d4.state == HOLDING and d4.moves == {}


def test_where_neither_batch_direction_meets_it_the_lesser_miss_is_held() -> None:
    """Time per token 7% over at batch 64 halves the batch; at 32 requests wait and TTFT
    is 3x over: back to 64, which missed by less, and held there through its next
    violations (not swung between the two)."""
    p = policy()
    objective = p.objective.targets
    ttft = [t for t in objective if t.metric == "ttft"]
    tpot = [t for t in objective if t.metric == "tpot"]
    d1 = p.on_violation(cell(700, 64), tpot, measured(0, 10, tpot=0.0535), 10.0)
    assert d1.moves == {"batch_limit": 32.0}
    d2 = p.on_violation(cell(700, 32), ttft, measured(20, 30, ttft=3.0, backlog=(5, 25),
                                                      queue_share=0.8), 30.0)
    assert d2.state == HOLDING and d2.moves == {"batch_limit": 64.0}
    assert "by less" in d2.reason
    for k in range(3):
        t0 = 40.0 + 20 * k
        d = p.on_violation(cell(700, 64), tpot, measured(t0, t0 + 10, tpot=0.054), t0 + 10)
        assert d.state == HOLDING and d.moves == {}, d.reason
    # An epoch that meets it ends the hold: the next violation may move the batch again.
    p.on_epoch(cell(700, 64), measured(120, 150), 150.0, 30.0)
    d = p.on_violation(cell(700, 64), tpot, measured(160, 170, tpot=0.06), 170.0)
    assert d.state == BACKING_OFF and d.moves == {"batch_limit": 32.0}


# -- the share of the limit kept free ----------------------------------------------------

@pytest.mark.parametrize("scatter", [0.05, 0.1, 0.15])
def test_the_share_kept_free_keeps_windows_over_the_limit_rare(scatter: float) -> None:
    """A quantile at (1 - share) x limit, scattering by `scatter` relative SD from window to
    window, goes over the limit in a window only beyond z standard deviations."""
    p = policy(safety=0.0, max_safety=1.0)
    t = p.objective.targets[0]
    m = measured(0, 30)
    m.scatter[t.name] = scatter
    share = p.safety(t, m)
    q = (1.0 - share) * t.limit_s
    z_over = (t.limit_s / q - 1.0) / scatter
    assert z_over == pytest.approx(p.p.safety_z, rel=1e-9)


# -- a load that comes again --------------------------------------------------------------

def at_load(m: Measurement, load: float) -> Measurement:
    m.load_per_s = load
    return m


def search(p: Policy, load: float, epochs: int = 5, here: Cell | None = None,
           t: float = 0.0) -> tuple[Cell, float]:
    """`epochs` epochs that meet the objective at `load`, following each move."""
    here = here if here is not None else cell(700)
    for _ in range(epochs):
        d = p.on_epoch(here, at_load(measured(t, t + 30, rate=1000 * load), load), t + 30, 30)
        here = cell_of({**dict(here), **d.moves})
        t += 40
    return here, t


def test_a_load_that_comes_again_starts_from_the_best_setting_met_at_it() -> None:
    p = policy(min_load_epochs=2)
    t = 0.0
    # At 1/s the search walks down to 500 W (700 -> 600 -> 500), 400 W violates.
    here = cell(700)
    for _ in range(12):
        d = p.on_epoch(here, at_load(measured(t, t + 30), 1.0), t + 30, 30)
        here = cell_of({**dict(here), **d.moves})
        t += 40
        if dict(here)["power_cap"] == 400.0:
            d = p.on_violation(here, [], at_load(measured(t, t + 30, backlog=(0, 30)), 1.0), t)
            here = cell_of({**dict(here), **d.moves})
            t += 40
            break
    assert here == cell(500) and cell(400) in p.infeasible
    # The load quadruples: the search starts again (the violation backs off from 500 W).
    d = p.on_violation(here, [], at_load(measured(t, t + 30, backlog=(0, 30)), 4.0), t)
    here = cell_of({**dict(here), **d.moves})
    assert dict(here)["power_cap"] > 500.0
    for _ in range(3):
        t += 40
        d = p.on_epoch(here, at_load(measured(t, t + 30), 4.0), t + 30, 30)
        here = cell_of({**dict(here), **d.moves})
    # Back to 1/s after far longer than bans last: the first epoch at it still serves
    # what the peak left, then straight to 500 W, not a new walk...
    t += 2000.0
    d = p.on_epoch(here, at_load(measured(t, t + 30), 1.0), t + 30, 30)
    assert d.moves == {}
    t += 40
    d = p.on_epoch(here, at_load(measured(t, t + 30), 1.0), t + 30, 30)
    assert d.state == EXPLORING and d.moves.get("power_cap") == 500.0
    assert "back to 1/s" in d.reason
    # ...and 400 W, which violated at this load, is left alone anew.
    assert p.infeasible.get(cell(400), 0.0) > t + 30


def test_a_lower_load_starts_from_what_met_a_higher_one() -> None:
    p = policy(min_load_epochs=2)
    here, t = search(p, 2.0)
    assert p.incumbent is not None  # the best setting met (the last move is a try)
    met_at_2 = dict(p.incumbent)["power_cap"]
    assert met_at_2 < 700.0
    # The load quadruples and the autopilot backs off to 700 W...
    d = p.on_violation(here, [], at_load(measured(t, t + 30, backlog=(0, 30)), 8.0), t)
    here = cell(700)
    t += 40
    p.on_epoch(here, at_load(measured(t, t + 30), 8.0), t + 30, 30)
    # ...then falls to 1.5/s, below 2/s: what met 2/s meets it (after an epoch of the
    # transition).
    t += 40
    assert p.on_epoch(here, at_load(measured(t, t + 30), 1.5), t + 30, 30).moves == {}
    t += 40
    d = p.on_epoch(here, at_load(measured(t, t + 30), 1.5), t + 30, 30)
    assert d.moves.get("power_cap") == met_at_2
    assert "met at 2/s" in d.reason


def test_a_higher_load_than_any_met_keeps_searching_from_where_it_is() -> None:
    p = policy(min_load_epochs=2)
    t = 0.0
    for _ in range(3):
        p.on_epoch(cell(600), at_load(measured(t, t + 30), 1.0), t + 30, 30)
        t += 40
    d = p.on_epoch(cell(600), at_load(measured(t, t + 30), 3.0), t + 30, 30)
    assert d.moves == {}  # nothing remembered meets 3/s: nothing to jump to


def test_a_higher_load_goes_up_to_what_met_it_at_once() -> None:
    p = policy(min_load_epochs=2)
    _, t = search(p, 4.0)
    assert p.incumbent is not None
    met_at_4 = dict(p.incumbent)["power_cap"]
    # At 1/s it walks further down...
    p.on_epoch(cell(300), at_load(measured(t, t + 30), 1.0), t + 30, 30)
    for _ in range(3):
        t += 40
        p.on_epoch(cell(300), at_load(measured(t, t + 30), 1.0), t + 30, 30)
    # ...and when 4/s comes again, it goes up to what met 4/s in the first epoch.
    t += 40
    d = p.on_epoch(cell(300), at_load(measured(t, t + 30), 4.0), t + 30, 30)
    assert d.state == BACKING_OFF and d.moves.get("power_cap") == met_at_4


def test_going_down_to_a_remembered_setting_waits_for_the_load_to_be_down() -> None:
    """The rate knob falls, but what the peak left (a queue, conversations' next turns)
    still carries the tokens of the peak: no lower setting until an epoch carries no
    more than the remembered setting met."""
    p = policy(min_load_epochs=2)
    here, t = search(p, 1.0)  # at 1/s (1000 tokens/s) it settles below 700 W
    assert p.incumbent is not None
    met_at_1 = dict(p.incumbent)["power_cap"]
    # 4/s: back off to 700 W and hold there.
    p.on_violation(here, [], at_load(measured(t, t + 30, backlog=(0, 30)), 4.0), t)
    for _ in range(2):
        t += 40
        p.on_epoch(cell(700), at_load(measured(t, t + 30, rate=4000), 4.0), t + 30, 30)
    # Back to 1/s: the next epochs still carry 3000 and 2000 tokens/s...
    for rate in (3000, 2000):
        t += 40
        d = p.on_epoch(cell(700), at_load(measured(t, t + 30, rate=rate), 1.0), t + 30, 30)
        assert d.moves == {}
    # ...then 1000 tokens/s again: down to what met it.
    t += 40
    d = p.on_epoch(cell(700), at_load(measured(t, t + 30, rate=1000), 1.0), t + 30, 30)
    assert d.moves.get("power_cap") == met_at_1


def test_one_violation_after_a_long_run_of_met_epochs_is_left_alone_briefly() -> None:
    p = policy(infeasible_s=600.0, brief_ban_s=300.0, good_epochs=19)
    t = 0.0
    for _ in range(19):
        p.on_epoch(cell(500), measured(t, t + 30), t + 30, 30)
        t += 40
    p.on_violation(cell(500), [], measured(t, t + 30, backlog=(0, 30)), t)
    assert p.infeasible[cell(500)] == pytest.approx(t + 300.0)
    # A setting that violates after a few epochs is left alone the usual 10 minutes.
    q = policy(infeasible_s=600.0, brief_ban_s=300.0, good_epochs=19)
    for i in range(3):
        q.on_epoch(cell(500), measured(40 * i, 40 * i + 30), 40 * i + 30, 30)
    q.on_violation(cell(500), [], measured(120, 150, backlog=(0, 30)), 150.0)
    assert q.infeasible[cell(500)] == pytest.approx(750.0)


def test_a_try_near_the_limit_is_measured_once_more_before_it_is_left() -> None:
    p = policy(min_load_epochs=2)
    t = settle_in(p, cell(600), 3, 1000.0)
    assert p.incumbent == cell(600)
    # With a window scatter of 5% the share kept free is ~7.6% of the limit. The try at
    # 500 W reads 0.95 s against a 1 s TTFT limit (inside that share, in its nearer
    # half): once, measured again; the second time, back.
    d = p.on_epoch(cell(500), measured(t, t + 30, ttft=0.95), t + 30, 30)
    assert d.state == HOLDING and d.moves == {} and "measuring again" in d.reason
    t += 40
    d = p.on_epoch(cell(500), measured(t, t + 30, ttft=0.95), t + 30, 30)
    assert d.moves.get("power_cap") == 600.0 and cell(500) in p.infeasible
    # A try in the far half of that share (0.99 s) goes back at once.
    q = policy(min_load_epochs=2)
    t = settle_in(q, cell(600), 3, 1000.0)
    d = q.on_epoch(cell(500), measured(t, t + 30, ttft=0.99), t + 30, 30)
    assert d.moves.get("power_cap") == 600.0


def test_a_try_near_the_limit_under_which_requests_pile_up_is_left_at_once() -> None:
    """The same try as above, but requests waiting grew over its epoch: a queue being
    built below the knee is not measured a second time (it costs the windows it takes
    to drain)."""
    p = policy(min_load_epochs=2)
    t = settle_in(p, cell(600), 3, 1000.0)
    d = p.on_epoch(cell(500), measured(t, t + 30, ttft=0.95, backlog=(0, 6)), t + 30, 30)
    assert d.moves.get("power_cap") == 600.0 and cell(500) in p.infeasible
    assert "measuring again" not in d.reason


def test_no_larger_batch_is_tried_on_the_queue_a_violation_left() -> None:
    """After a back-off requests wait for admission while the queue drains: that is not
    the batch limit binding. Once `drain_s` has passed, waiting for admission is."""
    p = policy(min_load_epochs=2, drain_s=100.0)
    t = settle_in(p, cell(700), 3, 1000.0)
    ttft = [x for x in p.objective.targets if x.metric == "ttft"]
    d = p.on_violation(cell(600), ttft, measured(t, t + 10, ttft=1.5, backlog=(0, 20)),
                       t + 10)
    assert d.moves.get("power_cap") == 700.0
    t += 20
    d = p.on_epoch(cell(700), measured(t, t + 30, ttft=0.5, queue_share=0.5), t + 30, 30)
    assert "batch_limit" not in d.moves, d.reason
    t += 100
    d = p.on_epoch(cell(700), measured(t, t + 30, ttft=0.5, queue_share=0.5), t + 30, 30)
    assert d.moves == {"batch_limit": 128.0}, d.reason


# -- a warm start (a sweep remembered) -------------------------------------------------------

def test_a_remembered_setting_for_the_first_load_is_where_the_search_starts() -> None:
    p = policy()
    p.remember(1.0, cell(500), [cell(400)], 1000.0)
    d = p.on_epoch(cell(700), at_load(measured(0, 30, rate=1000), 1.0), 30, 30)
    assert d.moves == {"power_cap": 500.0} and "warm start" in d.reason
    # What missed the objective in the sweep is left alone (and the caps below it).
    assert cell(400) in p.infeasible and cell(300) in p.infeasible


def test_a_closed_loop_remembers_its_one_load() -> None:
    p = policy()
    p.remember(None, cell(600, 128), [], 800.0)
    d = p.on_epoch(cell(700), measured(0, 30, rate=800), 30, 30)
    assert d.moves == {"power_cap": 600.0, "batch_limit": 128.0}


def test_a_remembered_setting_for_another_load_is_not_used_at_a_higher_one() -> None:
    p = policy()
    p.remember(0.5, cell(400), [], 500.0)
    d = p.on_epoch(cell(700), at_load(measured(0, 30, rate=2000), 2.0), 30, 30)
    assert d.moves == {}


def test_violations_under_a_load_no_setting_meets_do_not_keep_lower_caps_away() -> None:
    """A burst beyond what even the highest cap serves: the lower caps that violated on
    the way up violated for the load, not for being too slow; once the top is reached and
    misses too, they are judged as before the burst."""
    p = policy(infeasible_s=600.0)
    t = settle_in(p, cell(500), 3, 1000.0)
    assert cell(400) not in p.infeasible
    ttft = [x for x in p.objective.targets if x.metric == "ttft"]
    here = cell(500)
    for _ in range(2):  # 500 -> 600 -> 700 W, each violated (TTFT 10% over, no queue)
        d = p.on_violation(here, ttft, measured(t, t + 30, ttft=1.1), t)
        here = cell_of({**dict(here), **d.moves})
        t += 40
    assert dict(here)["power_cap"] == 700.0 and cell(600) in p.infeasible
    # At 700 W (the top) it misses as well: the load is beyond every setting.
    d = p.on_violation(here, ttft, measured(t, t + 30, ttft=1.1), t)
    assert d.state == HOLDING and "cannot be met" in d.reason
    assert cell(600) not in p.infeasible and cell(500) not in p.infeasible


# -- an epoch that cannot be judged says why ----------------------------------------------

def test_a_stage_no_request_carries_is_named_not_called_too_few() -> None:
    """A misspelt stage in the objective would otherwise read as a thin epoch for ever."""
    p = Policy(parse_objective("summarise:ttft_p90=1s"), Grid({"power_cap": list(CAPS)}),
               AutopilotParams())
    m = Measurement(0, 30, finished=120, j_per_token=0.5, noise=0.01, tokens=30000,
                    stages_seen=("map", "reduce", "summarize"))
    m.counts["summarise:ttft_p90"] = 0
    d = p.on_epoch(cell_of({"power_cap": 700.0}), m, 30, 30)
    assert d.state == HOLDING and not d.moves
    assert "no request of stage 'summarise'" in d.reason
    assert "map, reduce, summarize" in d.reason
    # Held that long, it holds still (no move) and still names the stage.
    d = p.on_epoch(cell_of({"power_cap": 700.0}), m, 150, 150)
    assert not d.moves and not d.extend and "'summarise'" in d.reason


def test_a_thin_epoch_names_the_target_short_of_samples() -> None:
    p = policy()
    m = measured(0, 30, n=200)
    m.counts["tpot_p90"] = 7
    d = p.on_epoch(cell(), m, 30, 30)
    assert d.extend and not d.moves
    assert "too few requests to decide" in d.reason and "tpot_p90 7 of 20" in d.reason
    assert "ttft_p90" not in d.reason  # the one judged on enough is not named


def test_a_stage_that_comes_later_is_not_called_unknown_while_none_is_seen() -> None:
    """Before any request is submitted nothing is known of the stages: too few, not
    a wrong name."""
    p = Policy(parse_objective("summarise:ttft_p90=1s"), Grid({"power_cap": list(CAPS)}),
               AutopilotParams())
    m = Measurement(0, 30, finished=0, j_per_token=None)
    d = p.on_epoch(cell_of({"power_cap": 700.0}), m, 30, 30)
    assert "too few requests" in d.reason and "no request of stage" not in d.reason


def test_an_epoch_without_energy_readings_says_so_not_too_few_requests() -> None:
    p = policy()
    m = measured(0, 30, n=200)
    m.j_per_token = None  # latency judged on 200 requests; no GPU energy read
    d = p.on_epoch(cell(), m, 30, 30)
    assert not d.moves and "no GPU energy readings" in d.reason
    assert "too few requests" not in d.reason
    d = p.on_epoch(cell(), m, 150, 150)
    assert not d.moves and d.reason.startswith("after 150 s, no J/token")
