"""Composite: interactive chat, summarization apps and agentic projects at once.

The runner knows one arrival process per workload, so composite is one Poisson
process at the sum of its parts' rates (`interactive_rate + sequential_rate +
agentic_rate` workflows/s, the default `rate` knob), and each arrival is given a kind
by a seeded choice weighted by those rates. Splitting a Poisson process that way gives
independent Poisson processes, one per kind, at exactly the configured rates; turning
the `rate` knob scales all three and keeps the mix. A rate of 0 leaves a kind out.

Each workflow keeps its own workload tag (interactive, sequential, agentic) and id
(chat<n>, seq<n>, agent<n>, n the arrival number), and its stage labels are prefixed
with the kind ("interactive.query", "sequential.map", "agentic.engineer", ...) so
statistics keep the kinds apart; node ids are unchanged.

Parameters of the parts pass through with a prefix: `-p sequential.chunks=10`,
`-p agentic.agents=4`, `-p interactive.followup_prob=0.5`. Defaults follow the study:
chat at 1 conversation/s mixed with map-reduce summarization (15 chunks of 1,000
tokens), plus a small agentic project now and then.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workloads.agentic import AgenticWorkload
from workloads.base import Arrival, WorkflowSpec, Workload
from workloads.interactive import InteractiveWorkload
from workloads.params import MAX_RATE, bounded, build_params
from workloads.sequential import SequentialWorkload

KINDS = ("interactive", "sequential", "agentic")
# The parts' own defaults inside composite (overridden by `-p KIND.KEY=VALUE`).
PART_DEFAULTS: dict[str, dict[str, Any]] = {
    "interactive": {},
    "sequential": {"variant": "mapreduce", "chunks": 15, "chunk_tokens": 1000,
                   "output_tokens": 50, "reduce_tokens": 200},
    "agentic": {"agents": 4, "rounds": 3},
}
_ARRIVAL_KEYS = ("rate", "concurrency")  # set by composite, not by the parts


@dataclass(slots=True)
class CompositeParams:
    interactive_rate: float = bounded(1.0, 0.0, MAX_RATE)
    sequential_rate: float = bounded(0.05, 0.0, MAX_RATE)
    agentic_rate: float = bounded(0.01, 0.0, MAX_RATE)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> None:
        rates = [self.interactive_rate, self.sequential_rate, self.agentic_rate]
        for kind, r in zip(KINDS, rates, strict=True):
            if r < 0:
                raise ValueError(f"composite: {kind}_rate must not be negative, got {r}")
        if sum(rates) <= 0:
            raise ValueError("composite: at least one of interactive_rate, sequential_rate,"
                             " agentic_rate must be positive")


class CompositeWorkload:
    name = "composite"

    def __init__(self, params: CompositeParams | None = None) -> None:
        self.p = params or CompositeParams()
        self.p.validate()
        self.parts: dict[str, Workload] = {}
        makers: dict[str, Callable[[dict[str, Any]], Workload]] = {
            "interactive": InteractiveWorkload.from_params,
            "sequential": SequentialWorkload.from_params,
            "agentic": AgenticWorkload.from_params,
        }
        for kind in KINDS:
            values = {**PART_DEFAULTS[kind], **self.p.parts.get(kind, {})}
            try:
                self.parts[kind] = makers[kind](values)
            except ValueError as exc:
                msg = str(exc).removeprefix(f"{kind}: ")
                raise ValueError(f"composite: {kind}: {msg}") from None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CompositeWorkload:
        own: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            kind, dot, sub = key.partition(".")
            if not dot:
                own[key] = value
                continue
            if kind not in KINDS:
                raise ValueError(f"composite: unknown part {kind!r} in {key!r} "
                                 f"(choose from {', '.join(KINDS)})")
            if sub in _ARRIVAL_KEYS:
                raise ValueError(f"composite: {key} is not used; set {kind}_rate instead")
            parts.setdefault(kind, {})[sub] = value
        if "parts" in own:
            raise ValueError("composite: unknown parameter 'parts'")
        p = build_params(CompositeParams, own, "composite")
        p.parts = parts
        return cls(p)

    def rates(self) -> dict[str, float]:
        return {"interactive": self.p.interactive_rate, "sequential": self.p.sequential_rate,
                "agentic": self.p.agentic_rate}

    def params(self) -> dict[str, Any]:
        return {**{f"{k}_rate": v for k, v in self.rates().items()},
                **{f"{kind}.{k}": v for kind, part in self.parts.items()
                   for k, v in part.params().items() if k not in _ARRIVAL_KEYS}}

    def arrival(self) -> Arrival:
        return Arrival(rate_per_s=sum(self.rates().values()))

    def kind_of(self, rng: random.Random) -> str:
        rates = self.rates()
        return rng.choices(KINDS, weights=[rates[k] for k in KINDS])[0]

    def workflow(self, index: int, rng: random.Random) -> WorkflowSpec:
        r = random.Random(rng.random())
        kind = self.kind_of(r)
        spec = self.parts[kind].workflow(index, r)
        for s in spec.stages:
            s.stage = f"{kind}.{s.stage}"
        return spec
