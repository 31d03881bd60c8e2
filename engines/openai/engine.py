"""Any OpenAI-compatible server (vllm serve, SGLang, TGI, llama.cpp, transformers serve),
streamed over aiohttp.

Timing is client-side: each network read that brings content becomes one `TokenEvent`
stamped with the run's clock when it arrived, so TTFT and inter-token times are what a
client sees. Token counts come from the server's usage report when it gives one
(`stream_options.include_usage`), else one token per content delta. The server's own
view (running, waiting, KV-cache use) is scraped from its Prometheus `/metrics` page
about once a second and emitted as `engine_state` events.

Several endpoints (replicas, or several routers) are given as a list of URLs or a file
of them, and each request goes to one by a client-side policy (engines/openai/endpoints.py);
each request's endpoint is recorded (a `TokenEvent` carrying only `endpoint` opens each
attempt). An endpoint that cannot be connected to is marked lost (an `error` event) and
probed until it answers again; a request that got no token from a lost or dying
endpoint is sent to another one (`failover=retry`), one cut mid-answer fails (its
tokens were counted). One URL may also be a router in front of many servers: to the
engine it is one endpoint.

The API key is read from an environment variable at start and lives only in the HTTP
session's default headers: it is never part of `info()`, the options echoed into a
session, or an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from app.core.events import EngineStateEvent, ErrorEvent
from app.core.options import OptionSchema, option
from engines.base import (
    ENGINE_STATE,
    EngineContext,
    EngineError,
    EngineInfo,
    EngineOptionError,
    Request,
    TokenEvent,
)
from engines.openai.endpoints import (
    POLICIES,
    Endpoint,
    EndpointError,
    Router,
    make_endpoints,
    read_urls_file,
)
from engines.openai.metrics import EngineGauges, parse_gauges
from engines.openai.sse import SSEDecoder

APIS = ("completions", "chat")
DEFAULT_TIMEOUT_S = 300.0  # idle time between chunks: generous, a loaded server queues
_DONE = b"[DONE]"
_DRAIN_S = 0.5


def _short(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _error_message(body: bytes) -> str:
    """The human part of an error body: OpenAI-style {"error": {"message"}}, vLLM's
    {"message"}, FastAPI's {"detail"}, or the text itself."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _short(body.decode("utf-8", "replace"))
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            for key in ("message", "detail", "msg"):
                if isinstance(err.get(key), str):
                    return _short(err[key])
        elif isinstance(err, str):
            return _short(err)
    return _short(body.decode("utf-8", "replace"))


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read what follows [DONE] (the chunked body's terminator, which servers such as
    uvicorn write separately) so that the connection goes back to the pool instead of
    being closed; a server that keeps the body open is given up on quickly."""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(_DRAIN_S):
            while await content.readany():
                pass



class EndpointFailure(EngineError):
    """The endpoint failed at the connection level (refused, unreachable, disconnected,
    the stream cut), not the request: another endpoint may answer it. `down`: it could
    not even be connected to, so it is lost."""

    def __init__(self, message: str, down: bool) -> None:
        super().__init__(message)
        self.down = down


FAILOVER = ("retry", "none")


@dataclass(slots=True)
class OpenAIOptions:
    url: str | list[str] | None = option(
        None, "the server, http(s)://HOST[:PORT] or its /v1 (--url); several: a list "
        "(--url A --url B); one of url and urls_file is required")
    urls_file: str | None = option(None, "a file of endpoints, one 'URL [NAME]' a line "
                                   "(# comments)")
    policy: str = option("least_outstanding", "how a request picks an endpoint among "
                         "several", choices=POLICIES)
    failover: str = option("retry", "a request that got no token from a lost endpoint: "
                           "retry it on another (retry) or fail it (none)", choices=FAILOVER)
    probe_interval_s: float = option(2.0, "probe a lost endpoint this often (s)", lo=0,
                                     lo_open=True)
    model: str | None = option(None, "the model to ask for; unset: the server's first model")
    api: str = option("completions", "the endpoint: /v1/completions or /v1/chat/completions",
                      choices=APIS)
    api_key_env: str = option("OPENAI_API_KEY", "environment variable holding the API key "
                              "(never recorded)")
    timeout_s: float = option(DEFAULT_TIMEOUT_S, "connect timeout and longest wait between "
                              "chunks (s)", lo=0, lo_open=True)
    metrics_interval_s: float = option(1.0, "scrape /metrics this often (s); 0: never", lo=0)
    seed: int | None = option(None, "the run's seed, passed to every engine; unused here")


OPTIONS = OptionSchema.of(OpenAIOptions, "openai engine", error=EngineOptionError)


def _given_endpoints(url: str | list[str] | None,
                     urls_file: str | None) -> list[tuple[str, str | None]]:
    given: list[tuple[str, str | None]] = []
    if isinstance(url, list):
        given.extend((u, None) for u in url)
    elif url is not None:
        given.append((url, None))
    if urls_file:
        given.extend(read_urls_file(urls_file))
    if not given:
        raise EndpointError("option url is required (e.g. http://127.0.0.1:8000)")
    return given


class OpenAIEngine:
    name = "openai"

    def __init__(self, ctx: EngineContext, url: str | list[str] | None = None,
                 model: str | None = None,
                 api: str = "completions", api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = DEFAULT_TIMEOUT_S, metrics_interval_s: float = 1.0, *,
                 urls_file: str | None = None, policy: str = "least_outstanding",
                 failover: str = "retry", probe_interval_s: float = 2.0) -> None:
        self._ctx = ctx
        try:
            self.endpoints = make_endpoints(_given_endpoints(url, urls_file))
            self._router = Router(self.endpoints, policy)
        except EndpointError as exc:
            raise EngineError(f"openai engine: {exc}") from None
        if api not in APIS:
            raise EngineError(f"openai engine: api must be completions or chat, got {api!r}")
        if failover not in FAILOVER:
            raise EngineError(f"openai engine: failover must be retry or none, got {failover!r}")
        self.api = api
        self.policy = policy
        self.failover = failover
        self.probe_interval_s = probe_interval_s
        self.model = model or ""
        self._model_given = bool(model)
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.metrics_interval_s = metrics_interval_s
        self._path = "/v1/completions" if api == "completions" else "/v1/chat/completions"
        self._several = len(self.endpoints) > 1
        self._session: aiohttp.ClientSession | None = None
        self._scraper: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._gauges: dict[Endpoint, EngineGauges] = {}
        self._checking: dict[Endpoint, asyncio.Task[None]] = {}

    @property
    def base_url(self) -> str:
        """The first endpoint's root (the only one for a single server)."""
        return self.endpoints[0].url

    @classmethod
    def from_options(cls, ctx: EngineContext, options: dict[str, Any]) -> OpenAIEngine:
        o = OPTIONS.build(options)
        return cls(ctx, o.url, model=o.model or None, api=o.api,
                   api_key_env=o.api_key_env or "OPENAI_API_KEY", timeout_s=o.timeout_s,
                   metrics_interval_s=o.metrics_interval_s, urls_file=o.urls_file,
                   policy=o.policy, failover=o.failover, probe_interval_s=o.probe_interval_s)

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # No cap on connections: the runner's batch limit is the one cap on requests in
        # flight. sock_read is the idle timeout between chunks (and before the headers).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout_s,
                                          sock_read=self.timeout_s),
            auto_decompress=False,
            raise_for_status=False,
        )
        if not self._model_given:
            asked, where = await self._ask_model()
            self.model = asked or "default"
            self._note(f"model {self.model} (from {where}/v1/models)" if asked else
                       f"model default (no answer from {where}/v1/models)")
        if self.metrics_interval_s > 0:
            self._scraper = asyncio.create_task(self._scrape_metrics())
        if self._several:
            self._prober = asyncio.create_task(self._probe_lost())

    async def stop(self) -> None:
        for task in (self._scraper, self._prober, *self._checking.values()):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._scraper = self._prober = None
        if self._several:
            self._note("endpoints: " + "; ".join(
                f"{e.name} {e.requests} requests" + (f", lost {e.times_lost}x" if e.times_lost
                                                     else "")
                + (f", {e.failovers} failed over" if e.failovers else "")
                for e in self.endpoints))
        if self._session is not None:
            await self._session.close()
            self._session = None

    def info(self) -> EngineInfo:
        details: dict[str, Any] = {
            "url": self.endpoints[0].shown_url,
            "api": self.api,
            "api_key_env": self.api_key_env,
            "api_key_set": bool(os.environ.get(self.api_key_env)),
            "timeout_s": self.timeout_s,
            "metrics_interval_s": self.metrics_interval_s,
        }
        if self._several:
            details.update(endpoints=[e.record() for e in self.endpoints], policy=self.policy,
                           failover=self.failover, probe_interval_s=self.probe_interval_s)
        return EngineInfo(name=self.name, model=self.model,
                          capabilities=["stream", "usage", ENGINE_STATE], details=details)

    def _note(self, text: str) -> None:
        self._ctx.emit(EngineStateEvent(t_s=self._ctx.clock.now(), source="engine", note=text))

    async def _ask_model(self) -> tuple[str | None, str]:
        """The first model the first endpoint to answer serves, and where it was asked."""
        assert self._session is not None
        for ep in self.endpoints:
            try:
                async with self._session.get(ep.url + "/v1/models") as resp:
                    if resp.status != 200:
                        continue
                    obj = orjson.loads(await resp.read())
                first = obj["data"][0]["id"]
                if isinstance(first, str):
                    return first, ep.shown_url
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, KeyError,
                    IndexError, TypeError):
                continue
        return None, self.endpoints[0].shown_url if len(self.endpoints) == 1 else \
            f"any of {len(self.endpoints)} endpoints"

    # -- endpoints lost and found ------------------------------------------------------
    def _mark_lost(self, ep: Endpoint, reason: str) -> None:
        if ep.lost or not self._several:
            return
        ep.lost = True
        ep.lost_at = self._ctx.clock.now()
        ep.lost_reason = reason
        ep.times_lost += 1
        self._gauges.pop(ep, None)
        left = len(self._router.live())
        self._ctx.emit(ErrorEvent(t_s=ep.lost_at, source="engine", message=(
            f"endpoint {ep.name} lost ({reason}); {left} of {len(self.endpoints)} endpoints "
            "left" + ("" if left else ": requests still try the lost ones"))))

    def _mark_back(self, ep: Endpoint) -> None:
        if ep.lost:
            ep.lost = False
            self._note(f"endpoint {ep.name} is back ({len(self._router.live())} of "
                       f"{len(self.endpoints)} endpoints live)")

    def _check_soon(self, ep: Endpoint) -> None:
        """Probe `ep` now (once at a time): if it cannot be connected to, it is lost."""
        if ep.lost or ep in self._checking or self._session is None:
            return
        task = asyncio.create_task(self._check(ep))
        self._checking[ep] = task
        task.add_done_callback(lambda _: self._checking.pop(ep, None))

    async def _check(self, ep: Endpoint) -> None:
        assert self._session is not None
        limit = aiohttp.ClientTimeout(total=max(1.0, min(5.0, self.timeout_s)))
        try:
            async with self._session.get(ep.url + "/v1/models", timeout=limit) as r:
                await r.read()
        except aiohttp.ClientConnectorError as exc:
            self._mark_lost(ep, f"cannot connect to {ep.shown_url}: "
                                f"{_short(str(exc.os_error or exc))}")
        except (aiohttp.ClientError, TimeoutError):
            pass  # answered somehow, or slow: not lost on that

    async def _probe_lost(self) -> None:
        """Ask each lost endpoint for its models every probe interval; one that answers is
        back."""
        assert self._session is not None
        limit = aiohttp.ClientTimeout(total=max(1.0, min(5.0, self.probe_interval_s)))
        while True:
            await asyncio.sleep(self.probe_interval_s)
            for ep in [e for e in self.endpoints if e.lost]:
                try:
                    async with self._session.get(ep.url + "/v1/models", timeout=limit) as r:
                        if r.status == 200:
                            self._mark_back(ep)
                except (aiohttp.ClientError, TimeoutError):
                    pass

    # -- requests --------------------------------------------------------------------
    def _body(self, request: Request) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": request.prompt}]
        else:
            body["prompt"] = (request.prompt_token_ids if request.prompt_token_ids
                              else request.prompt)
        if request.ignore_eos:
            # vLLM's extensions to generate exactly max_tokens; other servers ignore them.
            body["ignore_eos"] = True
            body["min_tokens"] = request.max_tokens
        return orjson.dumps(body)

    async def generate(self, request: Request) -> AsyncIterator[TokenEvent]:
        if self._session is None:
            raise EngineError("openai engine: not started")
        if not self._several:
            async for ev in self._stream(self.endpoints[0], request):
                yield ev
            return
        tried: set[Endpoint] = set()
        while True:
            ep = self._router.pick(request.workflow_id, tried)
            assert ep is not None  # the loop leaves before every endpoint is tried
            tried.add(ep)
            # The attempt's endpoint, for the request's record (no tokens in it).
            yield TokenEvent(t_s=self._ctx.clock.now(), endpoint=ep.name)
            produced = False
            ep.outstanding += 1
            ep.requests += 1
            try:
                async for ev in self._stream(ep, request):
                    produced = True
                    yield ev
                if ep.lost:
                    self._mark_back(ep)
                return
            except EndpointFailure as exc:
                if exc.down:
                    self._mark_lost(ep, str(exc))
                else:
                    self._check_soon(ep)  # cut or dropped: dead, or one bad answer?
                if produced or self.failover == "none" or len(tried) == len(self.endpoints):
                    raise EngineError(f"{exc} (endpoint {ep.name})" if produced
                                      else str(exc)) from None
                ep.failovers += 1
            finally:
                ep.outstanding -= 1

    async def _stream(self, ep: Endpoint, request: Request) -> AsyncIterator[TokenEvent]:
        session = self._session
        if session is None:
            raise EngineError("openai engine: not started")
        clock = self._ctx.clock
        chat = self.api == "chat"
        loads = orjson.loads
        answered = False
        shown = ep.shown_url
        try:
            async with session.post(ep.url + self._path, data=self._body(request)) as resp:
                answered = True
                if resp.status != 200:
                    body = await resp.content.read(4096)
                    raise EngineError(f"HTTP {resp.status}: {_error_message(body)}")
                decoder = SSEDecoder()
                content = resp.content
                counted = 0  # output tokens reported so far
                first = True
                finish: str | None = None
                usage: dict[str, Any] | None = None
                done = eof = False
                while not (done or eof):
                    chunk = await content.readany()
                    t_s = clock.now()
                    if chunk:
                        payloads = decoder.feed(chunk)
                    else:
                        eof = True
                        payloads = decoder.flush()
                    n = 0
                    texts: list[str] = []
                    for p in payloads:
                        if p == _DONE:
                            done = True
                            break
                        obj = loads(p)
                        choices = obj.get("choices")
                        if choices:
                            c = choices[0]
                            piece = (c.get("delta") or {}).get("content") if chat else c.get("text")
                            if piece:
                                n += 1
                                texts.append(piece)
                            if c.get("finish_reason"):
                                finish = c["finish_reason"]
                        elif "error" in obj:
                            err = obj["error"]
                            msg = err.get("message") if isinstance(err, dict) else err
                            raise EngineError(f"server error mid-stream: {_short(str(msg))}")
                        u = obj.get("usage")
                        if u:
                            usage = u
                    if done and not content.at_eof():
                        await _drain(content)
                    reported = usage.get("completion_tokens") if usage else None
                    if isinstance(reported, int) and reported > counted + n:
                        n = reported - counted  # the server counted tokens we saw no text for
                    end = done or (eof and finish is not None)
                    if eof and not end:
                        raise EndpointFailure("stream cut before finish", down=False)
                    if not (n or end):
                        continue
                    counted += n
                    ev = TokenEvent(t_s=t_s, decode_tokens=n, text="".join(texts))
                    if first:
                        first = False
                        known = usage.get("prompt_tokens") if usage else None
                        ev.prefill_tokens = known if isinstance(known, int) else request.prompt_tokens
                    if end:
                        ev.finished = True
                        ev.finish_reason = finish or "stop"
                        ev.output_tokens = reported if isinstance(reported, int) else counted
                        if usage and isinstance(usage.get("prompt_tokens"), int):
                            ev.prompt_tokens = usage["prompt_tokens"]
                    yield ev
        except EngineError:
            raise
        except aiohttp.ConnectionTimeoutError:
            raise EndpointFailure(f"connect timeout after {self.timeout_s:g} s to {shown}",
                                  down=True) from None
        except aiohttp.ServerTimeoutError:
            raise EngineError(f"stalled: no data for {self.timeout_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                raise EndpointFailure(f"connection refused to {shown}", down=True) from None
            raise EndpointFailure(f"cannot connect to {shown}: "
                                  f"{_short(str(exc.os_error or exc))}", down=True) from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError) as exc:
            if answered:
                raise EndpointFailure("stream cut before finish", down=False) from None
            raise EndpointFailure(f"server disconnected from {shown} before answering "
                                  f"({type(exc).__name__})", down=False) from None
        except orjson.JSONDecodeError:
            raise EngineError("bad stream: an event is not JSON") from None
        except (aiohttp.ClientError, AttributeError, TypeError) as exc:
            raise EngineError(f"bad response from {shown}: "
                              f"{type(exc).__name__}: {_short(str(exc))}") from None

    # -- engine-side state -----------------------------------------------------------
    async def _scrape_one(self, ep: Endpoint, limit: aiohttp.ClientTimeout) -> bool:
        """Read one endpoint's gauges into `_gauges`; False when it has none to read
        (not scraped again)."""
        assert self._session is not None
        try:
            async with self._session.get(ep.url + "/metrics", timeout=limit) as resp:
                status = resp.status
                page = await resp.text() if status == 200 else ""
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
            self._gauges.pop(ep, None)  # down or busy: the requests will say so
            return True
        if 400 <= status < 500:
            self._note(f"no /metrics at {ep.shown_url} (HTTP {status}); "
                       "engine-side state not scraped")
            return False
        if status == 200:
            g = parse_gauges(page)
            if g.empty():
                self._note(f"{ep.shown_url}/metrics has no known engine gauges; not scraped")
                return False
            self._gauges[ep] = g
        return True

    async def _scrape_metrics(self) -> None:
        """Every interval, each endpoint's running and waiting requests and KV-cache use,
        summed (the cache averaged) over the endpoints that answered: one engine_state."""
        limit = aiohttp.ClientTimeout(total=max(2.0, 2 * self.metrics_interval_s))
        scraped = list(self.endpoints)
        while scraped:
            live = [e for e in scraped if not e.lost]
            keep = await asyncio.gather(*(self._scrape_one(e, limit) for e in live))
            for ep, ok in zip(live, keep, strict=True):
                if not ok:
                    scraped.remove(ep)
                    self._gauges.pop(ep, None)
            got = [self._gauges[e] for e in live if e in self._gauges]
            if got:
                running = [g.running for g in got if g.running is not None]
                waiting = [g.waiting for g in got if g.waiting is not None]
                cache = [g.kv_cache_pct for g in got if g.kv_cache_pct is not None]
                self._ctx.emit(EngineStateEvent(
                    t_s=self._ctx.clock.now(), source="engine",
                    running=sum(running) if running else None,
                    waiting=sum(waiting) if waiting else None,
                    kv_cache_pct=sum(cache) / len(cache) if cache else None))
            if scraped:
                await asyncio.sleep(self.metrics_interval_s)
