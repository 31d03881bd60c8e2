"""Helpers for workload tests: run a workload through the Runner on the fake engine in
virtual time, or one workflow's DAG through run_workflow with a scripted submit."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from app.core.clock import ManualClock, run_async
from app.core.events import Event, RequestEvent, StageEvent, WorkflowEvent
from app.core.runner import RunConfig, Runner
from engines.base import Request
from workloads.base import CallResult, WorkflowSpec, Workload, run_workflow


@dataclass(slots=True)
class Run:
    events: list[Event]
    summary: dict[str, Any]
    runner: Runner

    def requests(self, phase: str) -> list[RequestEvent]:
        return [e for e in self.events if isinstance(e, RequestEvent) and e.phase == phase]

    def stages(self, phase: str) -> list[StageEvent]:
        return [e for e in self.events if isinstance(e, StageEvent) and e.phase == phase]

    def workflows(self, phase: str) -> list[WorkflowEvent]:
        return [e for e in self.events if isinstance(e, WorkflowEvent) and e.phase == phase]

    def by_node(self, phase: str) -> dict[tuple[str, str], RequestEvent]:
        return {(e.workflow_id, e.node): e for e in self.requests(phase)}


def run_fake(workload: str, params: dict[str, Any], **config: Any) -> Run:
    """A whole run on the fake engine (10 ms prefill, 10 ms a token) in virtual time."""
    base: dict[str, Any] = dict(workload=workload, workload_params=params, engine="fake",
                                meters=["fake"], batch_limit=64, workflows=1)
    base.update(config)
    runner = Runner(RunConfig(**base))
    events: list[Event] = []
    runner.bus.subscribe(events.append)
    outcome = run_async(runner.run(), virtual=True)
    assert outcome.reason == "completed", outcome.message
    return Run(events, outcome.summary, runner)


@dataclass(slots=True)
class Dag:
    """What one workflow asked for: its declared stages and every request, in order."""

    declared: list[tuple[str, str, tuple[str, ...], int]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)


def _answer(req: Request) -> CallResult:
    # A deterministic "model": the answer names the request, one word a token.
    words = [f"{req.node}-w{i}" for i in range(req.max_tokens)]
    return CallResult(req.request_id, " ".join(words), req.prompt_tokens, req.max_tokens)


def dag_of(workload: Workload, index: int = 0, seed: int = 0) -> tuple[WorkflowSpec, Dag]:
    """Run one workflow of `workload` against the scripted model; no engine, no clock."""
    rng = random.Random(seed)
    for i in range(index):
        workload.workflow(i, rng)
    spec = workload.workflow(index, rng)
    dag = Dag()

    async def submit(req: Request) -> CallResult:
        dag.requests.append(req)
        await asyncio.sleep(0)
        return _answer(req)

    def emit(ev: Event) -> None:
        if isinstance(ev, StageEvent) and ev.phase == "declared":
            dag.declared.append((ev.node, ev.stage, tuple(ev.deps), ev.calls))

    for s in spec.stages:
        s.delay_s = 0.0  # think times would need a clock; the DAG does not depend on them

    async def main() -> None:
        result = await run_workflow(spec, submit, emit, ManualClock(), rng)
        assert result.ok, result.reason

    asyncio.run(main())
    return spec, dag
