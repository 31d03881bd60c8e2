"""SimServer: simulated GPUs behind vLLM's OpenAI-compatible HTTP API, on aiohttp.

One `SimEngine` (with its own `GpuTwin`) per simulated GPU, each a replica of the model
(data parallel, as `vllm serve --data-parallel-size N` runs one engine per GPU); a
request goes to the replica with the fewest requests in flight. The engines run on the
server's loop and wall clock, so a token is streamed when the twin's model says the
step that made it ends.

Routes: `POST /v1/completions`, `POST /v1/chat/completions` (streamed with `stream:
true`, else one JSON answer), `GET /v1/models`, `GET /health`, `GET /metrics` (vLLM's
metrics, then dcgm-exporter's for the simulated GPUs).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest

from app.core.clock import Clock, LoopClock
from app.core.events import EngineStateEvent, Event, Sample
from engines.base import EngineContext, EngineError, Request
from engines.sim.engine import SimEngine
from engines.sim_server import api
from engines.sim_server.dcgm import GpuLabels, exposition, gpu_uuid
from engines.sim_server.prefix_index import PrefixIndex
from engines.sim_server.vllm_metrics import VllmMetrics
from meters.sim.meter import SimMeter

MAX_GPUS = 64
_SHUTDOWN_S = 2.0  # in-flight answers get this long to end after the engines stop


@dataclass(slots=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (see SimServer.port once started)
    engine_options: dict[str, Any] = field(default_factory=dict)  # the sim engine's -E
    gpus: int = 1
    hostname: str | None = None  # dcgm-exporter's Hostname label; None: this host's name
    collect_interval_s: float = 1.0  # dcgm-exporter's -c (in s); 0: read at each scrape
    served_model_name: str | None = None


@dataclass(slots=True)
class Replica:
    index: int
    engine: SimEngine
    meter: SimMeter
    labels: GpuLabels
    fb_total_mib: float
    in_flight: int = 0
    reading: Sample | None = None  # the last collected dcgm reading


class SimServer:
    """`async with SimServer(cfg) as srv:` serves on `srv.url` until the block ends."""

    def __init__(self, cfg: ServeConfig) -> None:
        if not 1 <= cfg.gpus <= MAX_GPUS:
            raise ValueError(f"gpus must be 1-{MAX_GPUS}, got {cfg.gpus}")
        if cfg.collect_interval_s < 0:
            raise ValueError("the collection interval must not be negative")
        self.cfg = cfg
        self.replicas: list[Replica] = []
        self.clock: Clock | None = None
        self.metrics: VllmMetrics | None = None
        self.model = ""
        self.max_model_len = 0
        self.port = cfg.port
        self.prefixes = PrefixIndex()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._collector: asyncio.Task[None] | None = None
        self._stopping = False
        self.requests_total = 0

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        self.clock = clock = LoopClock()
        hostname = cfg.hostname or socket.gethostname()
        opts: dict[str, Any] = {"token_event_interval_s": 0.0, **cfg.engine_options}
        base_seed = int(opts.pop("seed", 0) or 0)
        for i in range(cfg.gpus):
            # EngineOptionError (one line) for a bad -E: the caller says it.
            engine = SimEngine.from_options(
                EngineContext(clock, self._on_event(i)), {**opts, "seed": base_seed + i})
            meter = SimMeter(engine)
            dev = meter.info().devices[0]
            spec_mib = engine.twin.gpu.mem_bytes / 1024**2
            self.replicas.append(Replica(
                i, engine, meter, GpuLabels(i, "", dev.name.removesuffix(" (simulated)"),
                                            hostname), spec_mib))
        info = self.replicas[0].engine.info()
        self.model = cfg.served_model_name or info.model
        self.max_model_len = int(info.details.get("max_model_len", 0)) or 1
        self.metrics = VllmMetrics(self.model, cfg.gpus)
        for r in self.replicas:
            await r.engine.start()
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            for r in self.replicas:
                await r.engine.stop()
            raise OSError(f"cannot listen on {cfg.host}:{cfg.port}: "
                          f"{exc.strerror or exc}") from None
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        for r in self.replicas:
            r.labels.uuid = gpu_uuid(hostname, self.port, r.index)
        self._collect()
        if cfg.collect_interval_s > 0:
            self._collector = asyncio.create_task(self._collect_every(cfg.collect_interval_s))

    async def stop(self) -> None:
        """Stop accepting, end the engines (answers in flight end with an error event),
        close the connections."""
        if self._stopping:
            return
        self._stopping = True
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
        for r in self.replicas:
            await r.engine.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    async def kill(self) -> None:
        """Die as a crashed process would (for failover tests and drills): the listener
        closes, open connections are cut mid-answer, nothing is said to anyone."""
        self._stopping = True
        if self._collector is not None:
            self._collector.cancel()
        runner = self._runner
        if runner is not None:
            for site in list(runner.sites):
                server = getattr(site, "_server", None)
                if server is not None:
                    server.close()
            if runner.server is not None:
                for conn in list(runner.server.connections):
                    if conn.transport is not None:
                        conn.transport.abort()
        await asyncio.sleep(0)

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        host = self.cfg.host if ":" not in self.cfg.host else f"[{self.cfg.host}]"
        return f"http://{host}:{self.port}"

    def energy_mj(self) -> list[float]:
        """Each GPU's energy counter now, exact (tests compare meters with it)."""
        assert self.clock is not None
        t = self.clock.now()
        return [1000.0 * r.engine.twin.energy_j(t) for r in self.replicas]

    # -- engine state ----------------------------------------------------------------
    def _on_event(self, index: int) -> Any:
        def emit(ev: Event) -> None:
            if isinstance(ev, EngineStateEvent) and ev.running is not None \
                    and self.metrics is not None:
                self.metrics.set_state(index, ev.running, ev.waiting or 0,
                                       (ev.kv_cache_pct or 0.0) / 100.0)
        return emit

    def _collect(self) -> None:
        assert self.clock is not None
        t = self.clock.now()
        for r in self.replicas:
            got = r.meter.sample(t)
            if got:  # none: the engine is catching up with the wall clock; keep the last
                r.reading = got[0]

    async def _collect_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self._collect()

    # -- routes ----------------------------------------------------------------------
    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self._stopping else 200)

    async def _models(self, request: web.Request) -> web.Response:
        body = {"object": "list", "data": [{
            "id": self.model, "object": "model", "created": int(time.time()),
            "owned_by": "wattflow-sim", "root": self.model, "parent": None,
            "max_model_len": self.max_model_len}]}
        return web.json_response(body)

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self.metrics is not None
        if self.cfg.collect_interval_s == 0:
            self._collect()
        page = generate_latest(self.metrics.registry).decode()
        page += exposition([(r.labels, r.reading, r.fb_total_mib) for r in self.replicas
                            if r.reading is not None])
        return web.Response(text=page, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    def _error(self, message: str, status: int) -> web.Response:
        return web.Response(status=status, body=api.error_body(message, status),
                            content_type="application/json")

    def _pick(self) -> Replica:
        return min(self.replicas, key=lambda r: r.in_flight)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        if self._stopping:
            return self._error("the server is shutting down", 503)
        try:
            p = api.parse_body(await request.read(), chat)
        except api.BadRequest as exc:
            return self._error(str(exc), exc.status)
        if p.model is not None and p.model not in (self.model, ""):
            return self._error(f"The model `{p.model}` does not exist.", 404)
        if p.prompt_tokens + p.max_tokens > self.max_model_len:
            return self._error(
                f"This model's maximum context length is {self.max_model_len} tokens. "
                f"However, you requested {p.prompt_tokens + p.max_tokens} tokens "
                f"({p.prompt_tokens} in the messages, {p.max_tokens} in the completion).", 400)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{next(self._ids)}"
        key, shared = self.prefixes.lookup(p.prompt_text, p.prompt_token_ids)
        req = Request(request_id=rid, prompt="", prompt_tokens=p.prompt_tokens,
                      max_tokens=p.max_tokens, prefix_key=key, prefix_tokens=shared)
        rep = self._pick()
        rep.in_flight += 1
        self.requests_total += 1
        try:
            if p.stream:
                return await self._stream(request, rep, req, p)
            return await self._whole(rep, req, p)
        finally:
            rep.in_flight -= 1

    async def _stream(self, request: web.Request, rep: Replica, req: Request,
                      p: api.ParsedRequest) -> web.StreamResponse:
        assert self.clock is not None and self.metrics is not None
        clock, metrics, i = self.clock, self.metrics, rep.index
        t_arrival = clock.now()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        w = api.ChunkWriter(req.request_id, self.model, p.chat)
        sent = 0
        last_t: float | None = None
        try:
            await resp.prepare(request)
            if p.chat:
                await resp.write(w.role())
            async with contextlib.aclosing(rep.engine.generate(req)) as stream:  # type: ignore[type-var]
                async for ev in stream:
                    n = ev.decode_tokens
                    finish = (ev.finish_reason or "length") if ev.finished else None
                    parts: list[bytes] = []
                    if n:
                        parts.append(w.tokens(sent, n, finish))
                        if last_t is None:
                            metrics.first_token(i, ev.t_s - t_arrival, p.prompt_tokens)
                            metrics.tokens(i, n, None)
                        else:
                            metrics.tokens(i, n, ev.t_s - last_t)
                        last_t = ev.t_s
                        sent += n
                    elif finish:
                        parts.append(w.finish_only(finish))
                    if ev.finished:
                        metrics.finished(i, finish or "length", ev.t_s - t_arrival,
                                         p.prompt_tokens, sent)
                        if p.include_usage:
                            parts.append(w.usage(p.prompt_tokens, sent))
                        parts.append(api.DONE)
                    if parts:
                        await resp.write(b"".join(parts))
                    if ev.finished:
                        break
            await resp.write_eof()
        except EngineError as exc:
            # The engine stopped under the request (the server is shutting down).
            with contextlib.suppress(ConnectionError, RuntimeError):
                await resp.write(b"data: " + api.error_body(str(exc), 503) + b"\n\n")
                await resp.write_eof()
        except ConnectionError:
            pass  # the client went away: aclosing has aborted the request in the engine
        return resp

    async def _whole(self, rep: Replica, req: Request,
                     p: api.ParsedRequest) -> web.Response:
        assert self.clock is not None and self.metrics is not None
        t_arrival = self.clock.now()
        sent = 0
        last_t: float | None = None
        finish = "length"
        try:
            async with contextlib.aclosing(rep.engine.generate(req)) as stream:  # type: ignore[type-var]
                async for ev in stream:
                    if ev.decode_tokens:
                        if last_t is None:
                            self.metrics.first_token(rep.index, ev.t_s - t_arrival,
                                                     p.prompt_tokens)
                        self.metrics.tokens(rep.index, ev.decode_tokens,
                                            None if last_t is None else ev.t_s - last_t)
                        last_t = ev.t_s
                        sent += ev.decode_tokens
                    if ev.finished:
                        finish = ev.finish_reason or "length"
                        self.metrics.finished(rep.index, finish, ev.t_s - t_arrival,
                                              p.prompt_tokens, sent)
                        break
        except EngineError as exc:
            return self._error(str(exc), 503)
        text = "".join(api.token_text(k) for k in range(sent))
        w = api.ChunkWriter(req.request_id, self.model, p.chat)
        return web.Response(body=w.whole(text, finish, p.prompt_tokens, sent),
                            content_type="application/json")
