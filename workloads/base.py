"""A workflow is a DAG of LLM calls; a workload is a source of workflows.

Each node of the DAG is a stage: it waits for its dependencies, then builds one or
more calls (its fan-out) from its parents' outputs, submits them all at once, and
finishes when all of them have. `run_workflow` executes one workflow against any
`submit` function, emitting `stage` and `workflow` events, so the same DAG code
drives the simulated twin, vLLM and a remote server alike.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.core.clock import Clock
from app.core.events import RUN_ENDED, Event, StageEvent, WorkflowEvent
from engines.base import Request

#: Bounds on one workflow's DAG, so a typo such as `chunks=100000000` is a one-line
#: error instead of a run that allocates until the machine swaps. Generous: the study's
#: largest stage has tens of calls.
MAX_CALLS_PER_STAGE = 4096
MAX_STAGES_PER_WORKFLOW = 1024


@dataclass(slots=True)
class Call:
    """One LLM call a stage wants made."""

    prompt: str
    prompt_tokens: int
    max_tokens: int
    prefix_key: str | None = None
    prefix_tokens: int = 0


@dataclass(slots=True)
class CallResult:
    request_id: str
    text: str
    prompt_tokens: int
    output_tokens: int


@dataclass(slots=True)
class StageInputs:
    """What a stage's builder sees: its parents' results, by node id."""

    workflow_id: str
    parents: dict[str, list[CallResult]]
    rng: random.Random

    def parent_texts(self) -> list[str]:
        return [r.text for results in self.parents.values() for r in results]

    def parent_tokens(self) -> int:
        return sum(r.output_tokens for results in self.parents.values() for r in results)


@dataclass(slots=True)
class StageSpec:
    node: str  # unique within the workflow
    stage: str  # label that statistics group by ("summarize", "reduce", ...)
    build: Callable[[StageInputs], list[Call]]
    deps: tuple[str, ...] = ()
    calls: int = 1  # declared fan-out, for the DAG shown before the stage runs
    delay_s: float = 0.0  # wait after the dependencies finish (a user's think time)


@dataclass(slots=True)
class WorkflowSpec:
    workflow_id: str
    workload: str  # the tag: composite mixes several and keeps them apart
    stages: list[StageSpec]
    seed: int = 0

    def validate(self) -> list[StageSpec]:
        """Check the DAG; returns its stages in dependency order."""
        nodes = [s.node for s in self.stages]
        if len(nodes) > MAX_STAGES_PER_WORKFLOW:
            raise ValueError(f"workflow {self.workflow_id}: {len(nodes)} stages; at most"
                             f" {MAX_STAGES_PER_WORKFLOW}")
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"workflow {self.workflow_id}: duplicate stage names")
        known = set(nodes)
        for s in self.stages:
            for d in s.deps:
                if d not in known:
                    raise ValueError(f"stage {s.node!r} depends on unknown stage {d!r}")
        return topo_order(self.stages)


def topo_order(stages: list[StageSpec]) -> list[StageSpec]:
    """Stages in dependency order; raises ValueError naming a stage on a cycle."""
    by_node = {s.node: s for s in stages}
    state: dict[str, int] = {}
    out: list[StageSpec] = []

    def visit(node: str, path: tuple[str, ...]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = " -> ".join((*path[path.index(node) :], node))
            raise ValueError(f"dependency cycle: {cycle}")
        state[node] = 1
        for d in by_node[node].deps:
            visit(d, (*path, node))
        state[node] = 2
        out.append(by_node[node])

    for s in stages:
        visit(s.node, ())
    return out


@dataclass(slots=True)
class Arrival:
    """How workflows start: open loop (Poisson at `rate_per_s` workflows/s) when a
    rate is set, else closed loop with `concurrency` workflows in flight."""

    rate_per_s: float | None = None
    concurrency: int = 1


class Workload(Protocol):
    name: str

    def params(self) -> dict[str, Any]: ...

    def arrival(self) -> Arrival: ...

    def workflow(self, index: int, rng: random.Random) -> WorkflowSpec:
        """The `index`-th workflow; deterministic for the rng's seed."""
        ...


Submit = Callable[[Request], Awaitable[CallResult]]


@dataclass(slots=True)
class WorkflowResult:
    workflow_id: str
    ok: bool
    latency_s: float
    critical_path: list[str]
    results: dict[str, list[CallResult]] = field(default_factory=dict)
    reason: str | None = None


async def run_workflow(
    spec: WorkflowSpec,
    submit: Submit,
    emit: Callable[[Event], None],
    clock: Clock,
    rng: random.Random,
    *,
    max_tokens_cap: Callable[[], int | None] = lambda: None,
) -> WorkflowResult:
    """Run one workflow's DAG: every stage starts as soon as its dependencies are done."""
    order = spec.validate()
    t0 = clock.now()
    wid = spec.workflow_id
    emit(WorkflowEvent(t_s=t0, workflow_id=wid, workload=spec.workload, phase="started"))
    for s in spec.stages:
        emit(
            StageEvent(t_s=t0, workflow_id=wid, node=s.node, stage=s.stage, phase="declared",
                       deps=list(s.deps), calls=s.calls)
        )
    done: dict[str, asyncio.Future[list[CallResult]]] = {
        s.node: asyncio.get_running_loop().create_future() for s in spec.stages
    }
    finish_t: dict[str, float] = {}
    counter = 0

    async def run_stage(s: StageSpec) -> None:
        nonlocal counter
        # shield: cancelling this stage must not cancel the parent's shared future
        parents = {d: await asyncio.shield(done[d]) for d in s.deps}
        if s.delay_s > 0:
            await asyncio.sleep(s.delay_s)
        ts = clock.now()
        calls = s.build(StageInputs(workflow_id=wid, parents=parents, rng=rng))
        if len(calls) > MAX_CALLS_PER_STAGE:
            raise ValueError(f"stage {s.node!r} made {len(calls)} calls; at most"
                             f" {MAX_CALLS_PER_STAGE}")
        emit(StageEvent(t_s=ts, workflow_id=wid, node=s.node, stage=s.stage, phase="started",
                        deps=list(s.deps), calls=len(calls)))
        parent_ids = [r.request_id for rs in parents.values() for r in rs]
        reqs = []
        cap = max_tokens_cap()
        for c in calls:
            counter += 1
            max_tokens = c.max_tokens if cap is None else max(1, min(c.max_tokens, cap))
            reqs.append(
                Request(
                    request_id=f"{wid}.{counter}", prompt=c.prompt, prompt_tokens=c.prompt_tokens,
                    max_tokens=max_tokens, workflow_id=wid, stage=s.stage, node=s.node,
                    parents=parent_ids, prefix_key=c.prefix_key, prefix_tokens=c.prefix_tokens,
                )
            )
        try:
            # Collect every call's outcome so no failure is left unretrieved, then
            # fail the stage on the first one.
            if len(reqs) == 1:
                results = [await submit(reqs[0])]  # no gather, no extra task: the common case
            else:
                outcomes = await asyncio.gather(*(submit(r) for r in reqs),
                                                return_exceptions=True)
                errors = [o for o in outcomes if isinstance(o, BaseException)]
                if errors:
                    raise errors[0]
                results = [o for o in outcomes if not isinstance(o, BaseException)]
        except BaseException as exc:
            emit(StageEvent(t_s=clock.now(), workflow_id=wid, node=s.node, stage=s.stage,
                            phase="failed", deps=list(s.deps), calls=len(calls),
                            latency_s=clock.now() - ts))
            fut = done[s.node]
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                # Dependents still see the exception when they await it; marking it
                # retrieved now keeps asyncio from logging "Future exception was never
                # retrieved" when no dependent ever awaits (a leaf, or a drain cancelled it).
                fut.exception()
            raise
        finish_t[s.node] = clock.now()
        emit(StageEvent(t_s=finish_t[s.node], workflow_id=wid, node=s.node, stage=s.stage,
                        phase="finished", deps=list(s.deps), calls=len(calls),
                        latency_s=finish_t[s.node] - ts))
        done[s.node].set_result(results)

    # A workflow of one stage (a chat turn, a load generator's call) runs it in its own
    # task: no task and no gather per stage where nothing runs beside it.
    tasks = [asyncio.create_task(run_stage(s)) for s in order] if len(order) != 1 else []
    try:
        if len(order) == 1:
            await run_stage(order[0])
        else:
            await asyncio.gather(*tasks)
    except BaseException as exc:
        cancelled = isinstance(exc, asyncio.CancelledError)
        for t in tasks:
            t.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            # The run ended while this workflow was already failing: it still gets its
            # one closing event below (the failure came first, so its reason stands).
            cancelled = True
        for f in done.values():
            if f.done() and not f.cancelled():
                f.exception()  # mark retrieved
        reason = (RUN_ENDED if isinstance(exc, asyncio.CancelledError)
                  else str(exc) or type(exc).__name__)
        emit(WorkflowEvent(t_s=clock.now(), workflow_id=wid, workload=spec.workload, phase="failed",
                           latency_s=clock.now() - t0, reason=reason))
        if cancelled:
            raise asyncio.CancelledError from None
        return WorkflowResult(wid, False, clock.now() - t0, [], reason=reason)
    results = {n: f.result() for n, f in done.items()}
    path = critical_path(spec.stages, finish_t)
    out_tokens = sum(r.output_tokens for rs in results.values() for r in rs)
    latency = clock.now() - t0
    emit(WorkflowEvent(t_s=clock.now(), workflow_id=wid, workload=spec.workload, phase="finished",
                       latency_s=latency, critical_path=path,
                       requests=sum(len(rs) for rs in results.values()),
                       output_tokens=out_tokens))
    return WorkflowResult(wid, True, latency, path, results)


def critical_path(stages: list[StageSpec], finish_t: dict[str, float]) -> list[str]:
    """The chain of stages that decided the end-to-end latency: from the stage that
    finished last, walk back through the dependency that finished last."""
    if not finish_t:
        return []
    by_node = {s.node: s for s in stages}
    node = max(finish_t, key=lambda n: finish_t[n])
    path = [node]
    while by_node[node].deps:
        node = max(by_node[node].deps, key=lambda n: finish_t.get(n, 0.0))
        path.append(node)
    return path[::-1]
