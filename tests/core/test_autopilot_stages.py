"""An objective's stage is checked against the workload before the run: a stage no
workflow has is refused in one line (with the stages it has, and the nearest name);
a stage that is there, even in few workflows, passes."""

from __future__ import annotations

import random

import pytest

from app.core.autopilot.objective import AutopilotError, parse_objective
from app.core.autopilot.stages import check_stages, workload_stages
from workloads.base import Arrival, StageSpec, WorkflowSpec


class FakeWorkload:
    """A fake workload: every `rare`-th workflow has a stage 'audit' besides 'map'."""

    name = "fake"

    def __init__(self, rare: int = 0, fail: bool = False) -> None:
        self.rare, self.fail, self.drawn = rare, fail, 0

    def params(self) -> dict[str, object]:
        return {}

    def arrival(self) -> Arrival:
        return Arrival(rate_per_s=1.0)

    def workflow(self, index: int, rng: random.Random) -> WorkflowSpec:
        if self.fail:
            raise RuntimeError("cannot build")
        self.drawn += 1
        stages = [StageSpec(node="m", stage="map", build=lambda _: [])]
        if self.rare and index % self.rare == self.rare - 1:
            stages.append(StageSpec(node="a", stage="audit", build=lambda _: [], deps=("m",)))
        return WorkflowSpec(workflow_id=f"w{index}", workload=self.name, stages=stages)


def test_a_misspelt_stage_is_refused_with_the_stages_and_the_nearest_name() -> None:
    with pytest.raises(AutopilotError) as e:
        check_stages(parse_objective("mapp:ttft_p90=1s"), FakeWorkload())
    msg = str(e.value)
    assert "\n" not in msg
    assert "'mapp'" in msg and "its stages: map" in msg and "did you mean 'map'" in msg


def test_a_stage_in_few_workflows_passes_and_drawing_stops_once_seen() -> None:
    w = FakeWorkload(rare=300)
    check_stages(parse_objective("audit:ttft_p90=1s,map:tpot_p90=50ms"), w)
    assert w.drawn == 300  # stopped at the first workflow with it, not at the bound


def test_no_stage_in_the_objective_draws_nothing() -> None:
    w = FakeWorkload()
    check_stages(parse_objective("ttft_p90=1s,workflow_p90=10s"), w)
    assert w.drawn == 0


def test_a_workload_that_cannot_draw_is_left_to_the_run() -> None:
    check_stages(parse_objective("map:ttft_p90=1s"), FakeWorkload(fail=True))
    assert workload_stages(FakeWorkload(fail=True), 0, {"map"}) is None


def test_drawing_is_bounded() -> None:
    w = FakeWorkload()
    found = workload_stages(w, 0, {"nosuch"}, max_workflows=50)
    assert found == ({"map"}, 50) and w.drawn == 50
