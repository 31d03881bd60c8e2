"""Any OpenAI-compatible server (vllm serve, SGLang, TGI, llama.cpp, transformers serve),
streamed over aiohttp.

Timing is client-side: each network read that brings content becomes one `TokenEvent`
stamped with the run's clock when it arrived, so TTFT and inter-token times are what a
client sees. Token counts come from the server's usage report when it gives one
(`stream_options.include_usage`), else one token per content delta. The server's own
view (running, waiting, KV-cache use) is scraped from its Prometheus `/metrics` page
about once a second and emitted as `engine_state` events.

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
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from app.core.events import EngineStateEvent
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
from engines.openai.metrics import parse_gauges
from engines.openai.sse import SSEDecoder

APIS = ("completions", "chat")
DEFAULT_TIMEOUT_S = 300.0  # idle time between chunks: generous, a loaded server queues
_DONE = b"[DONE]"
_DRAIN_S = 0.5


def _base_url(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise EngineError("openai engine: option url is required (e.g. http://127.0.0.1:8000)")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EngineError(f"openai engine: url must be http(s)://HOST[:PORT], got {url!r}")
    # Users paste the API base (".../v1") as often as the server root: accept both.
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _redact(url: str) -> str:
    """The URL without user:password@, for anything that gets recorded."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


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


@dataclass(slots=True)
class OpenAIOptions:
    url: str | None = option(None, "the server, http(s)://HOST[:PORT] or its /v1 (--url); "
                             "required")
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


class OpenAIEngine:
    name = "openai"

    def __init__(self, ctx: EngineContext, url: str, model: str | None = None,
                 api: str = "completions", api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = DEFAULT_TIMEOUT_S, metrics_interval_s: float = 1.0) -> None:
        self._ctx = ctx
        self.base_url = _base_url(url)
        if api not in APIS:
            raise EngineError(f"openai engine: api must be completions or chat, got {api!r}")
        self.api = api
        self.model = model or ""
        self._model_given = bool(model)
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.metrics_interval_s = metrics_interval_s
        path = "/v1/completions" if api == "completions" else "/v1/chat/completions"
        self._endpoint = self.base_url + path
        self._shown_url = _redact(self.base_url)
        self._session: aiohttp.ClientSession | None = None
        self._scraper: asyncio.Task[None] | None = None

    @classmethod
    def from_options(cls, ctx: EngineContext, options: dict[str, Any]) -> OpenAIEngine:
        o = OPTIONS.build(options)
        return cls(ctx, o.url, model=o.model or None,  # type: ignore[arg-type]  # url checked there
                   api=o.api, api_key_env=o.api_key_env or "OPENAI_API_KEY",
                   timeout_s=o.timeout_s, metrics_interval_s=o.metrics_interval_s)

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
            asked = await self._ask_model()
            self.model = asked or "default"
            self._note(f"model {self.model} (from {self._shown_url}/v1/models)" if asked else
                       f"model default (no answer from {self._shown_url}/v1/models)")
        if self.metrics_interval_s > 0:
            self._scraper = asyncio.create_task(self._scrape_metrics())

    async def stop(self) -> None:
        if self._scraper is not None:
            self._scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scraper
            self._scraper = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def info(self) -> EngineInfo:
        return EngineInfo(
            name=self.name,
            model=self.model,
            capabilities=["stream", "usage", ENGINE_STATE],
            details={
                "url": self._shown_url,
                "api": self.api,
                "api_key_env": self.api_key_env,
                "api_key_set": bool(os.environ.get(self.api_key_env)),
                "timeout_s": self.timeout_s,
                "metrics_interval_s": self.metrics_interval_s,
            },
        )

    def _note(self, text: str) -> None:
        self._ctx.emit(EngineStateEvent(t_s=self._ctx.clock.now(), source="engine", note=text))

    async def _ask_model(self) -> str | None:
        assert self._session is not None
        try:
            async with self._session.get(self.base_url + "/v1/models") as resp:
                if resp.status != 200:
                    return None
                obj = orjson.loads(await resp.read())
            first = obj["data"][0]["id"]
            return first if isinstance(first, str) else None
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, KeyError,
                IndexError, TypeError):
            return None

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
        session = self._session
        if session is None:
            raise EngineError("openai engine: not started")
        clock = self._ctx.clock
        chat = self.api == "chat"
        loads = orjson.loads
        answered = False
        try:
            async with session.post(self._endpoint, data=self._body(request)) as resp:
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
                        raise EngineError("stream cut before finish")
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
            raise EngineError(f"connect timeout after {self.timeout_s:g} s to {self._shown_url}"
                              ) from None
        except aiohttp.ServerTimeoutError:
            raise EngineError(f"stalled: no data for {self.timeout_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                raise EngineError(f"connection refused to {self._shown_url}") from None
            raise EngineError(f"cannot connect to {self._shown_url}: "
                              f"{_short(str(exc.os_error or exc))}") from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError) as exc:
            if answered:
                raise EngineError("stream cut before finish") from None
            raise EngineError(f"server disconnected from {self._shown_url} before answering "
                              f"({type(exc).__name__})") from None
        except orjson.JSONDecodeError:
            raise EngineError("bad stream: an event is not JSON") from None
        except (aiohttp.ClientError, AttributeError, TypeError) as exc:
            raise EngineError(f"bad response from {self._shown_url}: "
                              f"{type(exc).__name__}: {_short(str(exc))}") from None

    # -- engine-side state -----------------------------------------------------------
    async def _scrape_metrics(self) -> None:
        assert self._session is not None
        url = self.base_url + "/metrics"
        limit = aiohttp.ClientTimeout(total=max(2.0, 2 * self.metrics_interval_s))
        while True:
            try:
                async with self._session.get(url, timeout=limit) as resp:
                    status = resp.status
                    page = await resp.text() if status == 200 else ""
                if 400 <= status < 500:
                    self._note(f"no /metrics at {self._shown_url} (HTTP {status}); "
                               "engine-side state not scraped")
                    return
                if status == 200:
                    g = parse_gauges(page)
                    if g.empty():
                        self._note(f"{self._shown_url}/metrics has no known engine gauges; "
                                   "not scraped")
                        return
                    self._ctx.emit(EngineStateEvent(
                        t_s=self._ctx.clock.now(), source="engine", running=g.running,
                        waiting=g.waiting, kv_cache_pct=g.kv_cache_pct))
            except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
                pass  # the server is down or busy: the requests will say so; try again
            await asyncio.sleep(self.metrics_interval_s)
