"""FakeOpenAIServer: a real aiohttp HTTP server on 127.0.0.1 (ephemeral port) that speaks
the streamed OpenAI API the way vLLM does, with known token timings and fault modes.

- `POST /v1/completions`, `POST /v1/chat/completions` with `stream: true`: SSE chunks
  shaped like vLLM's (chat starts with a role-only delta; with `include_usage` a last
  chunk with empty choices carries the usage), then `data: [DONE]`.
- `GET /v1/models`, and `GET /metrics` in vLLM's Prometheus text format (old or new
  KV-cache gauge name), with the live number of requests in flight.
- Faults (`Behaviour.fault`, on every `fault_every`-th request): "http500", "stall" (a few
  tokens, then silence for `stall_s` at most), "cut" (a few tokens, then the connection is
  dropped), "drop" (the connection is dropped before any answer), "slow" (a few tokens,
  then one every `slow_token_s`). `Behaviour.fault_plan`, if set, picks each request's
  fault and its number of tokens before the fault instead (a soak's seeded random mix).
  `kill()` stops the server the way a crash would: the listener closes (new connections
  are refused) and open connections are aborted.

Timings are exact enough for tests: the first token is sent `first_token_s` after the
request arrives and each later one `token_s` after the previous.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

FAULTS = ("", "http500", "stall", "cut", "drop", "slow")


@dataclass(slots=True)
class Behaviour:
    model: str = "fake-model"
    first_token_s: float = 0.0
    token_s: float = 0.0
    tokens: int | None = None  # None: the request's max_tokens
    tokens_per_delta: int = 1  # >1: one delta carries several tokens (usage tells)
    send_usage: bool = True
    fault: str = ""
    fault_every: int = 1
    fault_after_tokens: int = 2  # tokens sent before a stall, cut or slow-down
    # request number (1, 2, ...) -> (fault, tokens before it); overrides the three above
    fault_plan: Callable[[int], tuple[str, int]] | None = None
    stall_s: float = 60.0  # a stall lasts this long at most (close() or kill() end it)
    slow_token_s: float = 1.0  # "slow": the gap between tokens after the first few
    metrics: bool = True
    metrics_name: str = "vllm:kv_cache_usage_perc"  # or the old vllm:gpu_cache_usage_perc
    kv_cache_fraction: float = 0.25
    waiting: int = 3
    one_write: bool = False  # the whole stream in one write (one read for the client)
    eof_delay_s: float = 0.0  # pause between [DONE] and the end of the chunked body


@dataclass(slots=True)
class Seen:
    """What the server saw, for tests to check."""

    requests: int = 0
    authorization: list[str | None] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    metrics_scrapes: int = 0
    peers: set[int] = field(default_factory=set)  # client ports: one per connection
    in_flight: int = 0
    max_in_flight: int = 0


def _chunk(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class FakeOpenAIServer:
    def __init__(self, behaviour: Behaviour | None = None, keep_bodies: bool = True) -> None:
        self.behaviour = behaviour or Behaviour()
        self.seen = Seen()
        self.keep_bodies = keep_bodies
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._release = asyncio.Event()  # wakes stalled handlers at shutdown
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeOpenAIServer:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))  # an ephemeral port, known before serving
        self.port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()
        return self

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def kill(self) -> None:
        """Die like a crashed process: refuse new connections, drop open ones."""
        self._release.set()
        if self._site is not None and self._site._server is not None:
            self._site._server.close()
        if self._runner is not None and self._runner.server is not None:
            for conn in list(self._runner.server.connections):
                if conn.transport is not None:
                    conn.transport.abort()
        await asyncio.sleep(0)

    async def __aenter__(self) -> FakeOpenAIServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- handlers ------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.behaviour.model, "object": "model", "owned_by": "fake"}]})

    async def _metrics(self, request: web.Request) -> web.Response:
        b = self.behaviour
        if not b.metrics:
            raise web.HTTPNotFound()
        self.seen.metrics_scrapes += 1
        label = f'{{engine="0",model_name="{b.model}"}}'
        page = (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{label} {float(self.seen.in_flight)}\n"
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{label} {float(b.waiting)}\n"
            f"# HELP {b.metrics_name} KV-cache usage. 1 means 100 percent usage.\n"
            f"# TYPE {b.metrics_name} gauge\n"
            f"{b.metrics_name}{label} {b.kv_cache_fraction}\n"
            "# TYPE vllm:e2e_request_latency_seconds histogram\n"
            f'vllm:e2e_request_latency_seconds_bucket{{le="0.3",model_name="{b.model}"}} 0.0\n'
        )
        return web.Response(text=page, content_type="text/plain")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, chat=True)

    async def _stream(self, request: web.Request, chat: bool) -> web.StreamResponse:
        b = self.behaviour
        seen = self.seen
        seen.requests += 1
        number = seen.requests
        seen.authorization.append(request.headers.get("Authorization"))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            seen.peers.add(peer[1])
        body = orjson.loads(await request.read())
        if self.keep_bodies:
            seen.bodies.append(body)
        if b.fault_plan is not None:
            fault, fault_after = b.fault_plan(number)
        else:
            fault = b.fault if b.fault and number % max(1, b.fault_every) == 0 else ""
            fault_after = b.fault_after_tokens
        if fault == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        if fault == "http500":
            return web.Response(status=500, content_type="application/json", body=orjson.dumps(
                {"error": {"message": "fake engine failure", "type": "InternalServerError",
                           "code": 500}}))
        total = b.tokens if b.tokens is not None else int(body.get("max_tokens", 16))
        if chat:
            prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
            prompt_tokens = len(prompt.split())
        else:
            p = body.get("prompt", "")
            prompt_tokens = len(p) if isinstance(p, list) else len(str(p).split())
        seen.in_flight += 1
        seen.max_in_flight = max(seen.max_in_flight, seen.in_flight)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            held: list[bytes] = []

            async def write(data: bytes) -> None:
                if b.one_write:
                    held.append(data)
                else:
                    await resp.write(data)
            obj: dict[str, Any] = {"id": f"cmpl-{number}", "object": "text_completion",
                                   "created": 0, "model": b.model}
            if chat:
                obj["object"] = "chat.completion.chunk"
                await write(_chunk({**obj, "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""},
                     "finish_reason": None}]}))
            if b.first_token_s:
                await asyncio.sleep(b.first_token_s)
            sent = 0
            while sent < total:
                slow = fault == "slow" and sent >= fault_after
                if fault and not slow and sent >= fault_after:
                    if fault == "stall":
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._release.wait(), b.stall_s)
                    elif request.transport is not None:
                        request.transport.abort()
                    return resp
                if sent and (slow or b.token_s):
                    await asyncio.sleep(b.slow_token_s if slow else b.token_s)
                k = min(b.tokens_per_delta, total - sent)
                sent += k
                text = "tok " * k
                last = "length" if sent >= total else None
                choice: dict[str, Any] = ({"index": 0, "delta": {"content": text},
                                           "finish_reason": last} if chat else
                                          {"index": 0, "text": text, "finish_reason": last})
                await write(_chunk({**obj, "choices": [choice], "usage": None}))
            opts = body.get("stream_options") or {}
            if b.send_usage and opts.get("include_usage"):
                await write(_chunk({**obj, "choices": [], "usage": {
                    "prompt_tokens": prompt_tokens, "completion_tokens": total,
                    "total_tokens": prompt_tokens + total}}))
            await write(b"data: [DONE]\n\n")
            if b.eof_delay_s:
                await asyncio.sleep(b.eof_delay_s)
            await resp.write_eof(b"".join(held))
            return resp
        finally:
            seen.in_flight -= 1
