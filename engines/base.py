"""The engine protocol: what the runner needs from an inference engine.

An engine turns a `Request` into a stream of `TokenEvent`s. The runner owns
admission (the batch limit and rate), timing and energy attribution; the engine
only generates. Engines that can see their own scheduler state (running and
waiting requests, KV-cache use) report it through the `emit` callback they are
given at construction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.core.clock import Clock
from app.core.events import Event


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


@dataclass(slots=True)
class EngineInfo:
    name: str
    model: str
    max_num_seqs: int | None = None
    capabilities: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class EngineError(RuntimeError):
    """A request or the engine failed; the message is one line for the user."""


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
