"""The autopilot's safety rules and its search, against a scripted fake of the
measurements (tests/fakes/fake_plant.py): every knob change it makes goes through the
knob path with source `autopilot` and a reason, inside the bounds, never faster than the
readings settle; it backs off after a violation, holds when the data cannot decide, and
yields to the user's hand."""

from __future__ import annotations

import itertools

from app.core.autopilot.controller import PAUSED, Autopilot
from app.core.autopilot.objective import parse_objective
from app.core.autopilot.params import params_from
from app.core.autopilot.policy import BACKING_OFF
from app.core.events import AutopilotEvent, EngineStateEvent, Event, RequestEvent
from tests.fakes.fake_plant import FakeKnobPath, FakePlant, Truth

CAP_RANGE = (200.0, 700.0)


def capped(knobs: dict[str, float | None], _t: float) -> Truth:
    """Lower caps save energy down to 300 W; TTFT grows as the cap falls."""
    cap = knobs.get("power_cap") or 700.0
    jpt = 0.2 + 0.3 * (cap - 300.0) / 400.0 if cap >= 300 else 0.2 + (300.0 - cap) / 500.0
    return jpt, 0.45 * 700.0 / cap, 0.03, 1000.0


def make(objective: str = "ttft_p90=1s", bounds: list[str] | None = None,
         knobs: dict[str, float | None] | None = None) -> tuple[Autopilot, FakeKnobPath,
                                                                list[Event]]:
    path = FakeKnobPath(knobs=knobs or {"power_cap": 700.0, "batch_limit": 64},
                        bounds={"power_cap": CAP_RANGE})
    published: list[Event] = []
    pilot = Autopilot(path, parse_objective(objective), params_from(bounds), published.append,
                      lambda: path.now)
    path.listener = pilot.on_event
    pilot.start()
    return pilot, path, published


def drive(pilot: Autopilot, path: FakeKnobPath, plant: FakePlant, t0: int, t1: int) -> None:
    for t in range(t0, t1):
        path.now = float(t)
        for ev in plant.second(float(t), path.knobs):
            pilot.on_event(ev)
        pilot.tick(float(t))


def autopilot_changes(path: FakeKnobPath, knob: str | None = None) -> list[tuple[float, float]]:
    return [(t, v) for t, k, v, src, _ in path.changes
            if src == "autopilot" and (knob is None or k == knob) and v is not None]


def cap_at(path: FakeKnobPath, t: float) -> float | None:
    cap = None
    for when, knob, value, _, _ in path.changes:
        if knob == "power_cap" and when <= t:
            cap = value
    return cap


def test_finds_the_least_energy_setting_that_meets_the_objective() -> None:
    pilot, path, published = make()
    drive(pilot, path, FakePlant(capped), 1, 1800)
    # TTFT p90 ~ 0.45 * 700 / cap * 1.16 <= 1 s needs cap >= ~366 W; J/token falls with
    # the cap down to 300 W: the best feasible grid point is 400 W.
    assert path.knobs["power_cap"] == 400.0
    # Once found it stays there, but for brief re-checks of a neighbour.
    at_best = sum(1 for t in range(900, 1800) if cap_at(path, t) == 400.0)
    assert at_best >= 0.9 * 900
    for _, _, _, source, reason in path.changes:
        assert source == "autopilot" and reason  # every decision says why
    states = {e.state for e in published if isinstance(e, AutopilotEvent)}
    assert {"exploring", "holding"} <= states


def test_never_leaves_the_users_bounds() -> None:
    def rough(knobs: dict[str, float | None], t: float) -> Truth:
        cap, batch = knobs.get("power_cap") or 700.0, knobs.get("batch_limit") or 64
        # Violations at random-looking moments push it around the whole grid.
        bad = int(t / 97) % 3 == 0
        return 0.3 + 100.0 / cap + 1.0 / batch, 2.5 if bad else 0.2, 0.02 * (batch / 64), 800.0

    pilot, path, _ = make("ttft_p90=1s,tpot_p90=40ms",
                          ["power_cap=500..650", "batch_limit=16..128"])
    drive(pilot, path, FakePlant(rough, seed=3, queue_frac=0.5), 1, 3600)
    caps = [v for _, v in autopilot_changes(path, "power_cap")]
    batches = [v for _, v in autopilot_changes(path, "batch_limit")]
    assert caps and batches
    assert all(500.0 <= v <= 650.0 for v in caps)
    assert all(16 <= v <= 128 for v in batches)
    # The start (700 W, outside the bounds) was moved inside at once.
    assert path.changes[0][:3] == (0.0, "power_cap", 650.0)


def test_backs_off_toward_performance_soon_after_a_violation() -> None:
    step_at = 900.0

    def load_step(knobs: dict[str, float | None], t: float) -> Truth:
        jpt, ttft, tpot, tps = capped(knobs, t)
        return jpt, ttft * (1.8 if t >= step_at else 1.0), tpot, tps

    pilot, path, published = make()
    plant = FakePlant(load_step)
    drive(pilot, path, plant, 1, int(step_at))
    cap_before = path.knobs["power_cap"]
    assert cap_before is not None and cap_before < 700.0
    drive(pilot, path, plant, int(step_at), int(step_at) + 200)
    ups = [(t, v) for t, v in autopilot_changes(path, "power_cap") if t >= step_at]
    assert ups, "no back-off after the violation"
    first_t, first_v = ups[0]
    assert first_v > cap_before
    # Within one settle plus a few seconds of samples, not a whole epoch later.
    assert first_t - step_at <= pilot.params.settle_s + 10
    assert any(isinstance(e, AutopilotEvent) and e.state == BACKING_OFF for e in published)
    # It keeps raising until the objective holds again (0.45*700/cap*1.8*1.16 <= 1: 700 W).
    assert path.knobs["power_cap"] == 700.0


def test_holds_still_when_the_measurements_are_too_noisy() -> None:
    pilot, path, published = make()
    drive(pilot, path, FakePlant(capped, noise=0.9, noise_period_s=6.0), 1, 900)
    assert autopilot_changes(path) == []
    reasons = [e.reason for e in published if isinstance(e, AutopilotEvent)]
    assert any("too noisy" in r for r in reasons)


def test_holds_still_with_too_few_requests_to_judge_a_quantile() -> None:
    pilot, path, published = make()
    drive(pilot, path, FakePlant(capped, requests_per_s=0), 1, 600)
    assert autopilot_changes(path) == []
    assert any("too few requests" in e.reason for e in published
               if isinstance(e, AutopilotEvent))


def test_never_steps_the_power_cap_faster_than_the_readings_settle() -> None:
    def flappy(knobs: dict[str, float | None], t: float) -> Truth:
        jpt, ttft, tpot, tps = capped(knobs, t)
        return jpt, ttft * (1.3 if int(t / 97) % 2 else 0.6), tpot, tps

    pilot, path, _ = make()
    drive(pilot, path, FakePlant(flappy, seed=5), 1, 2400)
    times = [t for t, _ in autopilot_changes(path, "power_cap")]
    assert len(times) >= 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= pilot.params.settle_s


def test_the_users_hand_overrides_it_for_the_hold_time() -> None:
    pilot, path, published = make()
    plant = FakePlant(capped)
    drive(pilot, path, plant, 1, 300)
    path.now = 300.0
    path.set_knob("power_cap", 600.0, source="ui")  # a key press
    assert pilot.state == PAUSED
    hold = pilot.params.override_hold_s
    drive(pilot, path, plant, 301, int(300 + hold))
    assert [c for c in autopilot_changes(path) if 300 <= c[0] < 300 + hold] == []
    assert path.knobs["power_cap"] == 600.0
    drive(pilot, path, plant, int(300 + hold), int(300 + hold + 600))
    assert [c for c in autopilot_changes(path) if c[0] >= 300 + hold], "never resumed"
    assert any(isinstance(e, AutopilotEvent) and e.state == PAUSED and "ui" in e.reason
               for e in published)


def test_turned_off_it_does_nothing() -> None:
    pilot, path, published = make()
    pilot.set_enabled(False)
    plant = FakePlant(capped)
    drive(pilot, path, plant, 1, 600)
    assert autopilot_changes(path) == []
    assert published[-1].state == "off"  # type: ignore[attr-defined]
    pilot.set_enabled(True)
    drive(pilot, path, plant, 600, 900)
    assert autopilot_changes(path)


def test_a_change_of_load_starts_the_search_again() -> None:
    pilot, path, _published = make()
    plant = FakePlant(capped)
    drive(pilot, path, plant, 1, 1500)
    assert pilot.policy.table
    path.now = 1500.0
    path.set_knob("rate", 8.0, source="schedule")  # offered load moves: stale table
    drive(pilot, path, plant, 1501, 1600)
    # What was measured at the old load is gone; what is there was measured since.
    assert pilot.policy.table
    assert all(r.t_s > 1500 for r in pilot.policy.table.values())


def test_a_starved_queue_raises_the_batch_limit_before_any_request_finishes() -> None:
    """Long generations (nothing finishes for minutes) and a batch limit far too small:
    the requests waiting for their first token show the TTFT violation, and the queue
    says which way the batch limit must go."""
    path = FakeKnobPath(knobs={"power_cap": 700.0, "batch_limit": 4},
                        bounds={"power_cap": CAP_RANGE},
                        unavailable={"power_cap": "power_cap: needs --allow-power-cap"})
    published: list[Event] = []
    pilot = Autopilot(path, parse_objective("ttft_p90=5s"), params_from(["batch_limit=2..128"]),
                      published.append, lambda: path.now)
    path.listener = pilot.on_event
    pilot.start()
    n = 0
    for t in range(1, 200):
        path.now = float(t)
        # Two requests a second arrive; the engine admits batch_limit of them, ever.
        for _ in range(2):
            n += 1
            pilot.on_event(RequestEvent(t_s=t, request_id=f"r{n}", phase="submitted"))
        limit = int(path.knobs["batch_limit"] or 4)
        pilot.on_event(EngineStateEvent(t_s=t, source="client", running=limit,
                                        waiting=max(0, n - limit), output_tokens_total=10 * t))
        pilot.tick(float(t))
    ups = [v for _, v in autopilot_changes(path, "batch_limit")]
    assert ups and ups[0] == 8.0 and all(b > a for a, b in itertools.pairwise(ups))
    decisions = [e for e in published if isinstance(e, AutopilotEvent)]
    assert len(decisions) < 60  # not one a second


def test_the_offered_load_set_before_it_started_is_known() -> None:
    """The rate set on the command line comes before the autopilot subscribes: it is the
    load the first epochs are remembered under (else a schedule's first change of rate
    reads as a change from no load at all, and nothing is remembered of the first)."""
    pilot, _, _ = make(knobs={"power_cap": 700.0, "batch_limit": 64, "rate": 0.35})
    assert pilot.meter.rate == 0.35
    closed, _, _ = make()
    assert closed.meter.rate is None
