"""Interactive: a search copilot (Bing-Copilot-like, as in Parrot's evaluation).

One workflow is one user's conversation. Its first query carries a large system
prompt shared by every query of every user (~1,750 words), retrieved snippets and the
question; prompts come to ~5.5k-6.9k tokens and answers are 183-800 tokens. After
each answer the user asks a follow-up with probability `followup_prob` (at most
`max_followups`), after an exponential think time; a follow-up's prompt holds the
whole conversation so far, then fresh snippets and the new question.

Conversations arrive as a Poisson process at `rate` per second (the runner's `rate`
knob; this workload's default is 1/s). Shared prefixes are named for engines with
prefix caching: the system prompt by `interactive.system`, a follow-up's conversation
so far by the workflow and the previous turn.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from app.core.options import option
from workloads.base import Arrival, Call, StageInputs, StageSpec, WorkflowSpec
from workloads.lengths import LENGTH_HELP, Length, LengthValue, Uniform, param_length
from workloads.params import MAX_RATE, MAX_TOKENS, bounded, build_params
from workloads.text import TOKENS_PER_WORD, Piece, compose, passage

SYSTEM_PREFIX_KEY = "interactive.system"
SYSTEM_HEAD = (
    "You are a search copilot. Answer the user's question from the retrieved web snippets"
    " below, cite the snippets you use by number, say so when they do not answer the"
    " question, and keep the answer readable. Reference material follows."
)


@dataclass(slots=True)
class InteractiveParams:
    rate: float = bounded(1.0, 0, MAX_RATE, lo_open=True)  # conversations/s (Poisson)
    system_words: int = bounded(1750, 1, MAX_TOKENS)
    snippet_tokens_min: int = bounded(3150, 0, MAX_TOKENS)
    snippet_tokens_max: int = bounded(4500, 0, MAX_TOKENS)
    question_tokens_min: int = bounded(20, 0, MAX_TOKENS)
    question_tokens_max: int = bounded(60, 0, MAX_TOKENS)
    output_tokens_min: int = bounded(183, 0, MAX_TOKENS)
    output_tokens_max: int = bounded(800, 0, MAX_TOKENS)
    followup_prob: float = bounded(0.3, 0.0, 1.0)
    max_followups: int = bounded(3, 0, 100)
    think_s: float = bounded(15.0, 0.0, 86_400.0)  # mean think time before a follow-up
    followup_snippet_tokens_min: int = bounded(500, 0, MAX_TOKENS)
    followup_snippet_tokens_max: int = bounded(1500, 0, MAX_TOKENS)
    # Each length as a distribution (workloads/lengths.py), in place of its _min/_max
    # pair (which means uniform); None: the pair.
    snippet_tokens: LengthValue | None = option(None, LENGTH_HELP, lo=0, hi=MAX_TOKENS)
    question_tokens: LengthValue | None = option(None, LENGTH_HELP, lo=1, hi=MAX_TOKENS)
    output_tokens: LengthValue | None = option(None, LENGTH_HELP, lo=1, hi=MAX_TOKENS)
    followup_snippet_tokens: LengthValue | None = option(None, LENGTH_HELP, lo=0, hi=MAX_TOKENS)

    def validate(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        for name in ("system_words", "question_tokens_min", "output_tokens_min"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for lo in ("snippet_tokens", "question_tokens", "output_tokens",
                   "followup_snippet_tokens"):
            a, b = getattr(self, f"{lo}_min"), getattr(self, f"{lo}_max")
            if a < 0:
                raise ValueError(f"{lo}_min must not be negative, got {a}")
            if b < a:
                raise ValueError(f"{lo}_max ({b}) is below {lo}_min ({a})")
        if not 0.0 <= self.followup_prob <= 1.0:
            raise ValueError(f"followup_prob must be between 0 and 1, got {self.followup_prob}")
        if self.max_followups < 0:
            raise ValueError(f"max_followups must not be negative, got {self.max_followups}")
        if self.think_s < 0:
            raise ValueError(f"think_s must not be negative, got {self.think_s}")
        self.lengths()

    def lengths(self) -> dict[str, Length]:
        """Each length's distribution: the parameter if given, else uniform over its pair
        (`rng.randint`, as before distributions existed: the same seed, the same draws)."""
        out: dict[str, Length] = {}
        for name, floor in _LENGTHS.items():
            value = getattr(self, name)
            out[name] = (Uniform(getattr(self, f"{name}_min"), getattr(self, f"{name}_max"))
                         if value is None else
                         param_length(value, "interactive", name, floor=floor))
        return out


#: The lengths with a _min/_max pair, and the least each may be.
_LENGTHS = {"snippet_tokens": 0, "question_tokens": 1, "output_tokens": 1,
            "followup_snippet_tokens": 0}


@lru_cache(maxsize=8)
def system_prompt(words: int) -> Piece:
    """The shared system prompt: the same text for every query of every run."""
    head_words = len(SYSTEM_HEAD.split())
    body_tokens = max(1, round((words - head_words) * TOKENS_PER_WORD))
    body = passage(body_tokens, random.Random("interactive.system"))
    text, tokens = compose([SYSTEM_HEAD, "\n", body])
    return Piece(text, tokens)


@dataclass(slots=True)
class _Turn:
    snippets: str
    snippet_tokens: int
    question: str
    question_tokens: int
    output_tokens: int


class InteractiveWorkload:
    name = "interactive"

    def __init__(self, params: InteractiveParams | None = None) -> None:
        self.p = params or InteractiveParams()
        self.p.validate()
        self.lengths = self.p.lengths()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> InteractiveWorkload:
        return cls(build_params(InteractiveParams, params, "interactive"))

    def params(self) -> dict[str, Any]:
        return asdict(self.p)

    def arrival(self) -> Arrival:
        return Arrival(rate_per_s=self.p.rate)

    def workflow(self, index: int, rng: random.Random) -> WorkflowSpec:
        p = self.p
        wid = f"chat{index}"
        # One draw from the shared rng: the conversation is fixed by it, whatever runs.
        r = random.Random(rng.random())
        followups = 0
        while followups < p.max_followups and r.random() < p.followup_prob:
            followups += 1
        lengths = self.lengths
        turns: list[_Turn] = []
        for k in range(followups + 1):
            st = lengths["snippet_tokens" if k == 0 else "followup_snippet_tokens"].sample(r)
            qt = lengths["question_tokens"].sample(r)
            turns.append(_Turn(snippets=passage(st, r) if st else "", snippet_tokens=st,
                               question=passage(qt, r), question_tokens=qt,
                               output_tokens=lengths["output_tokens"].sample(r)))
        thinks = [r.expovariate(1.0 / p.think_s) if p.think_s > 0 else 0.0
                  for _ in range(followups)]
        system = system_prompt(p.system_words)
        # Each turn's prompt, kept for the next turn's "conversation so far".
        said: dict[int, Piece] = {}
        stages: list[StageSpec] = []
        for k, turn in enumerate(turns):

            def build(inp: StageInputs, k: int = k, turn: _Turn = turn) -> list[Call]:
                if k == 0:
                    head: list[str | Piece] = [system]
                    prefix_key, prefix_tokens = SYSTEM_PREFIX_KEY, system.tokens
                else:
                    # The conversation so far is the previous prompt and its answer.
                    answer = Piece("".join(inp.parent_texts()), inp.parent_tokens())
                    head = [said[k - 1], "\nAssistant: ", answer]
                    prefix_key = f"{wid}.turn{k - 1}"
                    prefix_tokens = compose(head)[1]
                prompt, tokens = compose([*head, "\nSnippets: ",
                                          Piece(turn.snippets, turn.snippet_tokens),
                                          "\nUser: ", Piece(turn.question, turn.question_tokens)])
                said[k] = Piece(prompt, tokens)
                return [Call(prompt=prompt, prompt_tokens=tokens, max_tokens=turn.output_tokens,
                             prefix_key=prefix_key, prefix_tokens=prefix_tokens)]

            stages.append(StageSpec(
                node=f"turn_{k}", stage="query" if k == 0 else "followup", build=build,
                deps=(f"turn_{k - 1}",) if k else (), delay_s=thinks[k - 1] if k else 0.0,
            ))
        return WorkflowSpec(workflow_id=wid, workload=self.name, stages=stages)

