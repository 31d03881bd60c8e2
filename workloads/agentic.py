"""Agentic: multi-agent programming in the manner of MetaGPT (as Parrot evaluated it).

Round 0 is one architect call that writes the design. Then each of `rounds` rounds
has `agents` engineers writing one file each, in parallel; file i's reviewer starts
when engineer i is done, and its reviser when the review is done (a pipeline per
file). Round r starts when every reviser of round r-1 is done.

Every agent of a round reads the same shared context: the project brief, the
architect's design and a digest of every earlier round (the revised files, cut to
`context_growth_tokens` per round; with real engines that is the real text, padded
with corpus text when shorter). Prompts therefore grow round by round: ~13k
characters in round 1 to ~18k in round 10 with the defaults. The shared context is
named as a prefix (`<workflow>.ctx<r>`) so prefix caching can reuse it across the
round's agents.

Nodes: `architect`, `engineer_<r>_<i>`, `review_<r>_<i>`, `revise_<r>_<i>`
(r from 1, i from 0); stage labels: architect, engineer, reviewer, reviser.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from app.core.options import option
from workloads.base import (
    MAX_STAGES_PER_WORKFLOW,
    Arrival,
    Call,
    StageInputs,
    StageSpec,
    WorkflowSpec,
)
from workloads.lengths import LENGTH_HELP, Length, LengthValue, param_length
from workloads.params import MAX_CONCURRENCY, MAX_RATE, MAX_TOKENS, bounded, build_params
from workloads.text import Piece, compose, passage, words_for_tokens

ARCHITECT = "You are the architect. Write the design of the program described below: its files,"\
    " their interfaces and how they fit together."
ENGINEER = "You are an engineer. Write file {i} of the program in full, following the design."
REVIEWER = "You are a reviewer. Review this file against the design; list every defect."
REVISER = "You are an engineer. Revise the file to fix every defect the review lists."


@dataclass(slots=True)
class AgenticParams:
    agents: int = bounded(8, 1, 256)  # engineers per round (Parrot: 4, 8, 12, 16)
    rounds: int = bounded(10, 1, 300)
    # Lengths: N, or a distribution (workloads/lengths.py) drawn per workflow (brief),
    # round (digest), file (task) or call (outputs).
    # the brief every prompt starts with
    brief_tokens: LengthValue = option(2500, LENGTH_HELP, lo=1, hi=MAX_TOKENS)
    # a round's digest, added to later rounds
    context_growth_tokens: LengthValue = option(125, LENGTH_HELP, lo=0, hi=MAX_TOKENS)
    task_tokens: LengthValue = option(60, LENGTH_HELP, lo=0, hi=MAX_TOKENS)  # a file's task
    architect_tokens: LengthValue = option(800, LENGTH_HELP, lo=1, hi=MAX_TOKENS)  # outputs
    engineer_tokens: LengthValue = option(600, LENGTH_HELP, lo=1, hi=MAX_TOKENS)
    review_tokens: LengthValue = option(200, LENGTH_HELP, lo=1, hi=MAX_TOKENS)
    revise_tokens: LengthValue = option(600, LENGTH_HELP, lo=1, hi=MAX_TOKENS)
    concurrency: int = bounded(1, 1, MAX_CONCURRENCY)  # projects at once (closed loop)
    rate: float | None = bounded(None, 0, MAX_RATE, lo_open=True)  # projects/s (open loop)

    def validate(self) -> None:
        for name in ("agents", "rounds", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        self.lengths()
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        stages = 1 + 3 * self.agents * self.rounds  # architect, then engineer/reviewer/reviser
        if stages > MAX_STAGES_PER_WORKFLOW:
            raise ValueError(f"agents × rounds = {self.agents} × {self.rounds} makes {stages}"
                             f" stages; a workflow may have at most {MAX_STAGES_PER_WORKFLOW}")

    def lengths(self) -> dict[str, Length]:
        return {name: param_length(getattr(self, name), "agentic", name, floor=floor)
                for name, floor in _LENGTHS.items()}


#: The length parameters and the least each may be.
_LENGTHS = {"brief_tokens": 1, "context_growth_tokens": 0, "task_tokens": 0,
            "architect_tokens": 1, "engineer_tokens": 1, "review_tokens": 1,
            "revise_tokens": 1}


class AgenticWorkload:
    name = "agentic"

    def __init__(self, params: AgenticParams | None = None) -> None:
        self.p = params or AgenticParams()
        self.p.validate()
        self.lengths = self.p.lengths()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> AgenticWorkload:
        return cls(build_params(AgenticParams, params, "agentic"))

    def params(self) -> dict[str, Any]:
        return asdict(self.p)

    def arrival(self) -> Arrival:
        return Arrival(rate_per_s=self.p.rate, concurrency=self.p.concurrency)

    def workflow(self, index: int, rng: random.Random) -> WorkflowSpec:
        p = self.p
        wid = f"agent{index}"
        r = random.Random(rng.random())
        # Fixed lengths draw nothing from r: with them the draws are the passages alone.
        lengths = self.lengths
        n = lengths["brief_tokens"].sample(r)
        brief = Piece(passage(n, r), n)
        tasks: dict[tuple[int, int], Piece] = {}
        for rd in range(1, p.rounds + 1):
            for i in range(p.agents):
                n = lengths["task_tokens"].sample(r)
                tasks[(rd, i)] = Piece(passage(n, r), n) if n else Piece("", 0)
        growth: list[int] = []
        padding: list[str] = []
        for _ in range(p.rounds):
            n = lengths["context_growth_tokens"].sample(r)
            growth.append(n)
            padding.append(passage(n, r) if n else "")
        architect_out = lengths["architect_tokens"].sample(r)
        outs = {(rd, i): (lengths["engineer_tokens"].sample(r),
                          lengths["review_tokens"].sample(r),
                          lengths["revise_tokens"].sample(r))
                for rd in range(1, p.rounds + 1) for i in range(p.agents)}
        # The shared context of each round, built once by the first agent of the round.
        design: list[Piece] = []
        digests: list[Piece] = []
        contexts: dict[int, Piece] = {}

        def context(rd: int, inp: StageInputs) -> Piece:
            if rd not in contexts:
                if rd > 1:
                    revised = " ".join(inp.parent_texts())
                    digests.append(_digest(revised, padding[rd - 2], growth[rd - 2]))
                parts: list[str | Piece] = ["Project brief: ", brief, "\nDesign: ", design[0]]
                for q, d in enumerate(digests, start=1):
                    parts += [f"\nRound {q} files: ", d]
                contexts[rd] = Piece(*compose(parts))
            return contexts[rd]

        def build_architect(inp: StageInputs) -> list[Call]:
            prompt, tokens = compose([ARCHITECT, "\nProject brief: ", brief])
            return [Call(prompt, tokens, architect_out)]

        def remember_design(inp: StageInputs) -> None:
            if not design and "architect" in inp.parents:
                design.append(_output(inp, "architect"))

        stages = [StageSpec(node="architect", stage="architect", build=build_architect)]
        for rd in range(1, p.rounds + 1):
            prev = (("architect",) if rd == 1 else
                    tuple(f"revise_{rd - 1}_{i}" for i in range(p.agents)))
            for i in range(p.agents):
                eng, rev, fix = f"engineer_{rd}_{i}", f"review_{rd}_{i}", f"revise_{rd}_{i}"

                def build_eng(inp: StageInputs, rd: int = rd, i: int = i) -> list[Call]:
                    remember_design(inp)
                    ctx = context(rd, inp)
                    prompt, tokens = compose([ctx, "\n", ENGINEER.format(i=i), "\nTask: ",
                                              tasks[(rd, i)]])
                    return [Call(prompt, tokens, outs[(rd, i)][0], prefix_key=f"{wid}.ctx{rd}",
                                 prefix_tokens=ctx.tokens)]

                def build_rev(inp: StageInputs, rd: int = rd, i: int = i,
                              eng: str = eng) -> list[Call]:
                    ctx = contexts[rd]
                    code = _output(inp, eng)
                    prompt, tokens = compose([ctx, "\n", REVIEWER, "\nFile: ", code])
                    return [Call(prompt, tokens, outs[(rd, i)][1], prefix_key=f"{wid}.ctx{rd}",
                                 prefix_tokens=ctx.tokens)]

                def build_fix(inp: StageInputs, rd: int = rd, i: int = i, eng: str = eng,
                              rev: str = rev) -> list[Call]:
                    ctx = contexts[rd]
                    prompt, tokens = compose([ctx, "\n", REVISER, "\nFile: ", _output(inp, eng),
                                              "\nReview: ", _output(inp, rev)])
                    return [Call(prompt, tokens, outs[(rd, i)][2], prefix_key=f"{wid}.ctx{rd}",
                                 prefix_tokens=ctx.tokens)]

                stages += [
                    StageSpec(node=eng, stage="engineer", build=build_eng, deps=prev),
                    StageSpec(node=rev, stage="reviewer", build=build_rev, deps=(eng,)),
                    StageSpec(node=fix, stage="reviser", build=build_fix, deps=(eng, rev)),
                ]
        return WorkflowSpec(workflow_id=wid, workload=self.name, stages=stages)


def _output(inp: StageInputs, node: str) -> Piece:
    results = inp.parents[node]
    return Piece("".join(r.text for r in results), sum(r.output_tokens for r in results))


def _digest(text: str, padding: str, tokens: int) -> Piece:
    """`tokens` tokens of the round's real output, padded with corpus text if short."""
    want = words_for_tokens(tokens) if tokens else 0
    words = text.split()[:want]
    if len(words) < want:
        words += padding.split()[: want - len(words)]
    return Piece(" ".join(words), tokens)
