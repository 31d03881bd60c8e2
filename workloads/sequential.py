"""Sequential: chain summarization of a document, and its map-reduce variant.

Chain (Parrot's evaluation): the document is cut into `chunks` chunks of
`chunk_tokens`; step k's prompt holds the summary so far and chunk k, so each call
waits for the previous one. Map-reduce: every chunk is summarized in parallel, then
one reduce call summarizes the summaries.

Parrot's evaluation used chunks of 512/1024/1536/2048 tokens and 25/50/75/100 output
tokens per chain step, and 15 chunks of 1,000 tokens for map-reduce; other values are
allowed (tests use tiny ones). Prompts are counted by `text.compose`, the same rule a
TOML re-creation of this workload uses (workloads/examples/sequential-*.toml).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from app.core.options import option
from workloads.base import (
    MAX_CALLS_PER_STAGE,
    MAX_STAGES_PER_WORKFLOW,
    Arrival,
    Call,
    StageInputs,
    StageSpec,
    WorkflowSpec,
)
from workloads.lengths import LENGTH_HELP, Length, LengthValue, param_length
from workloads.params import MAX_CONCURRENCY, MAX_RATE, MAX_TOKENS, bounded, build_params
from workloads.text import Piece, compose, passage

CHAIN_INSTRUCTION = "Refine the running summary with the next part of the document."
MAP_INSTRUCTION = "Summarize this part of the document in a few sentences."
REDUCE_INSTRUCTION = "Combine these partial summaries into one summary of the document."


@dataclass(slots=True)
class SequentialParams:
    variant: str = "chain"  # chain | mapreduce
    # one stage per chunk in a chain; one call per chunk in map-reduce
    chunks: int = bounded(8, 1, min(MAX_CALLS_PER_STAGE, MAX_STAGES_PER_WORKFLOW - 1))
    # lengths: N, or a distribution (workloads/lengths.py), drawn per chunk / call
    chunk_tokens: LengthValue = option(1024, LENGTH_HELP, lo=1, hi=MAX_TOKENS)
    output_tokens: LengthValue = option(50, LENGTH_HELP, lo=1, hi=MAX_TOKENS)
    reduce_tokens: LengthValue = option(200, LENGTH_HELP, lo=1, hi=MAX_TOKENS)
    concurrency: int = bounded(1, 1, MAX_CONCURRENCY)  # documents at once (closed loop)
    rate: float | None = bounded(None, 0, MAX_RATE, lo_open=True)  # per second (open loop)

    def validate(self) -> None:
        if self.variant not in ("chain", "mapreduce"):
            raise ValueError(f"variant must be chain or mapreduce, got {self.variant!r}")
        for name in ("chunks", "concurrency"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        self.lengths()
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be positive, got {self.rate}")

    def lengths(self) -> dict[str, Length]:
        return {name: param_length(getattr(self, name), "sequential", name)
                for name in ("chunk_tokens", "output_tokens", "reduce_tokens")}


class SequentialWorkload:
    name = "sequential"

    def __init__(self, params: SequentialParams | None = None) -> None:
        self.p = params or SequentialParams()
        self.p.validate()
        self.lengths = self.p.lengths()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SequentialWorkload:
        return cls(build_params(SequentialParams, params, "sequential"))

    def params(self) -> dict[str, Any]:
        return asdict(self.p)

    def arrival(self) -> Arrival:
        return Arrival(rate_per_s=self.p.rate, concurrency=self.p.concurrency)

    def workflow(self, index: int, rng: random.Random) -> WorkflowSpec:
        wid = f"seq{index}"
        doc_rng = random.Random(rng.random())
        lengths = self.lengths
        # Fixed lengths draw nothing, so the default draws are the passages alone.
        chunks: list[Piece] = []
        for _ in range(self.p.chunks):
            n = lengths["chunk_tokens"].sample(doc_rng)
            chunks.append(Piece(passage(n, doc_rng), n))
        outs = [lengths["output_tokens"].sample(doc_rng) for _ in chunks]
        reduce = lengths["reduce_tokens"].sample(doc_rng)
        stages = (self._chain(chunks, outs) if self.p.variant == "chain" else
                  self._mapreduce(chunks, outs, reduce))
        return WorkflowSpec(workflow_id=wid, workload=self.name, stages=stages)

    def _chain(self, chunks: list[Piece], outs: list[int]) -> list[StageSpec]:
        stages: list[StageSpec] = []
        for k, chunk in enumerate(chunks):

            def build(inp: StageInputs, chunk: Piece = chunk, out: int = outs[k]) -> list[Call]:
                summary = Piece("\n".join(inp.parent_texts()), inp.parent_tokens())
                prompt, tokens = compose([f"{CHAIN_INSTRUCTION}\nSummary so far: ", summary,
                                          "\nNext part: ", chunk])
                return [Call(prompt=prompt, prompt_tokens=tokens, max_tokens=out)]

            deps = (f"summarize_{k - 1}",) if k else ()
            stages.append(StageSpec(node=f"summarize_{k}", stage="summarize", build=build,
                                    deps=deps))
        return stages

    def _mapreduce(self, chunks: list[Piece], outs: list[int], reduce: int) -> list[StageSpec]:
        stages: list[StageSpec] = []
        for k, chunk in enumerate(chunks):

            def build_map(inp: StageInputs, chunk: Piece = chunk,
                          out: int = outs[k]) -> list[Call]:
                prompt, tokens = compose([f"{MAP_INSTRUCTION}\n", chunk])
                return [Call(prompt=prompt, prompt_tokens=tokens, max_tokens=out)]

            stages.append(StageSpec(node=f"map_{k}", stage="map", build=build_map))

        def build_reduce(inp: StageInputs) -> list[Call]:
            summaries = Piece("\n".join(inp.parent_texts()), inp.parent_tokens())
            prompt, tokens = compose([f"{REDUCE_INSTRUCTION}\n", summaries])
            return [Call(prompt=prompt, prompt_tokens=tokens, max_tokens=reduce)]

        stages.append(StageSpec(node="reduce", stage="reduce", build=build_reduce,
                                deps=tuple(f"map_{k}" for k in range(len(chunks)))))
        return stages
