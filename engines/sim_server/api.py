"""The OpenAI request bodies the server accepts, and the chunks it streams back.

Shaped like vLLM's answers: completions chunks carry `choices[0].text`, chat chunks a
`delta` (the first one the role only); with `stream_options.include_usage` a last chunk
with empty choices carries the usage; then `data: [DONE]`. Errors are vLLM's
`{"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from engines.tokens import estimate_tokens

#: max_tokens when a request gives none (vLLM would fill the context; a twin that
#: streams a hundred thousand tokens by default helps nobody).
DEFAULT_MAX_TOKENS = 256
MAX_MAX_TOKENS = 1_000_000
# Chat templates wrap each message in a few special tokens (Llama 3: about 4).
_CHAT_TOKENS_PER_MESSAGE = 4
# The twin's output text: real words so that clients counting words see plausible text.
_WORDS = ("the", "model", "energy", "of", "a", "request", "is", "measured", "per",
          "token", "and", "power", "GPU", "batch", "in", "time")


class BadRequest(ValueError):
    """A request body the server refuses (HTTP 400, or `status`); one line."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class ParsedRequest:
    chat: bool
    model: str | None
    prompt_text: str  # what the prefix cache hashes
    prompt_tokens: int
    prompt_token_ids: list[int] | None
    max_tokens: int
    stream: bool
    include_usage: bool


def _int_field(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadRequest(f"{name} must be an integer in {lo}-{hi}, got {v!r}")
    return v


def parse_body(raw: bytes, chat: bool) -> ParsedRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("model must be a string")
    if _int_field(body, "n", 1, 1, 1_000_000) != 1:
        raise BadRequest("the simulated server answers n=1 only")
    ids: list[int] | None = None
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list")
        parts: list[str] = []
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            if not isinstance(content, str):
                raise BadRequest("each message needs a string content")
            parts.append(content)
        text = "\n".join(parts)
        prompt_tokens = sum(estimate_tokens(p) for p in parts) + \
            _CHAT_TOKENS_PER_MESSAGE * len(parts)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]  # a batch of one
        if isinstance(prompt, str):
            if not prompt:
                raise BadRequest("prompt must not be empty")
            text, prompt_tokens = prompt, estimate_tokens(prompt)
        elif isinstance(prompt, list) and prompt and all(
                isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids = prompt
            text, prompt_tokens = " ".join(map(str, prompt)), len(prompt)
        else:
            raise BadRequest("prompt must be a string or a list of token ids (one prompt)")
    max_tokens = _int_field(body, "max_completion_tokens" if chat and "max_tokens" not in body
                            else "max_tokens", DEFAULT_MAX_TOKENS, 1, MAX_MAX_TOKENS)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false")
    opts = body.get("stream_options") or {}
    include_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
    return ParsedRequest(chat, model, text, prompt_tokens, ids, max_tokens, stream,
                         include_usage)


def error_body(message: str, status: int) -> bytes:
    kind = {400: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError"}.get(
        status, "InternalServerError")
    return orjson.dumps({"error": {"message": message, "type": kind, "code": status},
                         "object": "error", "message": message, "type": kind, "code": status})


def token_text(i: int) -> str:
    """The text of output token `i` (0-based): one word, a space before it."""
    return " " + _WORDS[i % len(_WORDS)]


class ChunkWriter:
    """Builds the SSE chunks of one streamed answer."""

    __slots__ = ("_head", "chat", "created", "model", "rid")

    def __init__(self, rid: str, model: str, chat: bool) -> None:
        self.rid = rid
        self.model = model
        self.chat = chat
        self.created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        self._head = {"id": rid, "object": obj, "created": self.created, "model": model}

    def role(self) -> bytes:
        return _sse({**self._head, "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
             "finish_reason": None}]})

    def tokens(self, first: int, n: int, finish: str | None) -> bytes:
        """`n` chunks of one token each (one write, so one read for the client), the
        last one carrying `finish` if given."""
        out = []
        for k in range(n):
            reason = finish if k == n - 1 else None
            text = token_text(first + k)
            if self.chat:
                choice: dict[str, Any] = {"index": 0, "delta": {"content": text},
                                          "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason,
                          "stop_reason": None}
            out.append(_sse({**self._head, "choices": [choice]}))
        return b"".join(out)

    def finish_only(self, finish: str) -> bytes:
        choice: dict[str, Any] = ({"index": 0, "delta": {}, "logprobs": None,
                                   "finish_reason": finish} if self.chat else
                                  {"index": 0, "text": "", "logprobs": None,
                                   "finish_reason": finish, "stop_reason": None})
        return _sse({**self._head, "choices": [choice]})

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return _sse({**self._head, "choices": [], "usage": usage(prompt_tokens,
                                                                  completion_tokens)})

    def whole(self, text: str, finish: str, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The non-streamed answer."""
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant",
                                                              "content": text},
                                      "logprobs": None, "finish_reason": finish}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                      "stop_reason": None}
            obj = "text_completion"
        return orjson.dumps({**self._head, "object": obj, "choices": [choice],
                             "usage": usage(prompt_tokens, completion_tokens)})


DONE = b"data: [DONE]\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
