"""The engine protocol: what the runner needs from an inference engine.

An engine turns a `Request` into a stream of `TokenEvent`s. The runner owns
admission (the batch limit and rate), timing and energy attribution; the engine
only generates. Engines that can see their own scheduler state (running and
waiting requests, KV-cache use) report it through the `emit` callback they are
given at construction.

Optional abilities are declared, not probed: an engine that can restart with a new
max_num_seqs implements `Restartable`, one with a real tokenizer `HasTokenizer`, one
that reports its own scheduler state lists `ENGINE_STATE` in `info().capabilities`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from app.core.clock import Clock
from app.core.events import Event
from app.core.options import OptionError
from engines.tokens import TokenCounter

#: The capability (in `EngineInfo.capabilities`) of an engine that emits
#: `EngineStateEvent`s from its own scheduler (running, waiting, KV-cache use).
ENGINE_STATE = "engine_state"


@dataclass(slots=True)
class Request:
    """One LLM call. `prompt` is real text for real engines; `prompt_tokens` is the
    target (or measured) prompt length, which is all the simulated twin needs.
    `prefix_key`/`prefix_tokens` name a prompt prefix shared by other requests
    (a system prompt, earlier conversation) so engines with prefix caching can reuse it."""

    request_id: str
    prompt: str
    prompt_tokens: int
    max_tokens: int
    workflow_id: str = ""
    stage: str = ""
    node: str = ""
    parents: list[str] = field(default_factory=list)
    prefix_key: str | None = None
    prefix_tokens: int = 0
    ignore_eos: bool = True
    prompt_token_ids: list[int] | None = None


@dataclass(slots=True)
class TokenEvent:
    """Progress of one request. `prefill_tokens` and `decode_tokens` count the work
    done since the previous event (used to attribute energy); `text` is the new text,
    if the engine produces any. The last event has `finished=True`."""

    t_s: float
    prefill_tokens: int = 0
    decode_tokens: int = 0
    text: str = ""
    finished: bool = False
    finish_reason: str | None = None
    prompt_tokens: int | None = None  # as the engine counted them, when known
    output_tokens: int | None = None  # cumulative, when known
    # The endpoint the request went to (an engine with several sends an event carrying
    # only this when it picks one, again on a failover).
    endpoint: str | None = None


@dataclass(slots=True)
class EngineInfo:
    name: str
    model: str
    max_num_seqs: int | None = None
    capabilities: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class EngineError(RuntimeError):
    """A request or the engine failed; the message is one line for the user."""


class EngineOptionError(EngineError, OptionError):
    """A bad engine option (`-E KEY=VALUE`); the message is one line."""


@dataclass(slots=True)
class EngineContext:
    clock: Clock
    emit: Callable[[Event], None]


class Engine(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def info(self) -> EngineInfo: ...

    def generate(self, request: Request) -> AsyncIterator[TokenEvent]: ...


# -- optional abilities ---------------------------------------------------------------
@runtime_checkable
class Restartable(Protocol):
    """Can change some of its own settings (max_num_seqs, max_num_batched_tokens...) by
    restarting; the caller drains it first. Each is a knob of the same name."""

    def settings(self) -> dict[str, int]:
        """The settings a restart can change, with their values now."""
        ...

    async def restart(self, **settings: int) -> None:
        """Restart with these settings changed; EngineError (one line) if it cannot."""
        ...


@runtime_checkable
class HasTokenizer(Protocol):
    """Has the model's tokenizer: the runner hands it to the workloads so that prompts
    hit their token targets under it."""

    def tokenizer(self) -> TokenCounter | None:
        """After start(): text -> token count, or None when this model has none."""
        ...


#: `InlineProgress`'s callback: (prefill_tokens, decode_tokens, output_tokens), the
#: work since the previous event and the cumulative output count.
Progress = Callable[[int, int, int], None]


@runtime_checkable
class InlineProgress(Protocol):
    """Can hand a request's intermediate progress to a callback at the instant it is
    made, instead of through the stream, so the consumer's task is not woken for each
    event (the simulated twin on virtual time makes millions of them an hour)."""

    def generate_inline(self, request: Request, progress: Progress) -> AsyncIterator[TokenEvent]:
        """Like `generate`, except for the events after the one that carries the first
        output token and before the last: those that carry no text and no new
        prompt_tokens go to `progress`, called from the engine's own task, and are not
        yielded. Only while the stream has been read up to date (an event still
        queued in the stream keeps the later ones behind it, in order) and never after
        the consumer has gone away. The first-token event, the last one and any other
        event are yielded as by `generate`."""
        ...
