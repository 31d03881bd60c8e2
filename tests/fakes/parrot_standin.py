"""ParrotStandin: a real aiohttp server on 127.0.0.1 that speaks Parrot's public API.

Parrot needs a CUDA build of its own vLLM fork and an A100-class GPU, so tests run the
adapter against this stand-in instead. It implements the documented endpoints of
ParrotServe's serve layer (`/v1/session`, `/v1/semantic_call`, `/v1/semantic_var`,
`/v1/semantic_var/{id}` POST/GET, `DELETE /v1/session/{id}`), with the same request and
answer fields, and the behaviour the adapter relies on:

- a semantic call's template is parsed into text and `{{name}}` placeholders; input
  placeholders bound to a `var_id` make the call depend on that variable, so the DAG is
  visible here (`calls[i].inputs`);
- each call runs as its own task: it waits until every input variable has content, then
  "generates" after `delay_s`: deterministic text of about `max_gen_length` tokens
  (by the words-based estimate of workloads.text);
- `GET /v1/semantic_var/{id}` waits until the variable has content;
- errors answer HTTP 500 with `{"error": repr, "traceback": ""}` like ParrotServe's
  exception handler; `fail_when(payload)` injects a failure into chosen calls.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from workloads.text import words_for_tokens

PLACEHOLDER = re.compile(r"\{\{([a-zA-Z_][a-zA-Z0-9_]*)\}\}")


@dataclass
class StandinVar:
    var_id: str
    name: str
    session_id: int
    content: str | None = None
    producer: int | None = None  # request id of the call that writes it
    ready: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class StandinCall:
    request_id: int
    session_id: int
    template: str
    placeholders: list[dict[str, Any]]
    inputs: list[str]  # var ids this call reads
    bindings: dict[str, str]  # input placeholder name -> var id
    output: str  # var id it writes
    max_gen_length: int
    ignore_tokenizer_eos: bool
    models: list[str]
    started: float | None = None  # when all inputs were ready
    finished: float | None = None
    prompt: str = ""  # the template with its inputs filled in


class ParrotStandin:
    def __init__(self, delay_s: float = 0.01,
                 fail_when: Callable[[dict[str, Any]], str | None] | None = None) -> None:
        self.delay_s = delay_s
        self.fail_when = fail_when  # payload -> error message, or None to run the call
        self.sessions: dict[int, str] = {}  # id -> auth
        self.deleted_sessions: list[int] = []
        self.api_keys: list[str] = []
        self.vars: dict[str, StandinVar] = {}
        self.calls: list[StandinCall] = []
        self.failed_calls = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- server ---------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/session", self._register_session)
        app.router.add_delete("/v1/session/{session_id}", self._remove_session)
        app.router.add_post("/v1/semantic_call", self._semantic_call)
        app.router.add_post("/v1/semantic_var", self._register_var)
        app.router.add_post("/v1/semantic_var/{var_id}", self._set_var)
        app.router.add_get("/v1/semantic_var/{var_id}", self._get_var)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ParrotStandin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- helpers ----------------------------------------------------------------------
    @staticmethod
    def _error(message: str) -> web.Response:
        return web.json_response({"error": f"ParrotCoreUserError({message!r})",
                                  "traceback": ""}, status=500)

    def _check_session(self, payload: dict[str, Any]) -> str | None:
        sid = payload.get("session_id")
        if sid not in self.sessions:
            return f"session {sid} not found"
        if self.sessions[sid] != payload.get("session_auth"):
            return "session_auth mismatch"
        return None

    def _new_var(self, name: str, session_id: int) -> StandinVar:
        var = StandinVar(var_id=f"sv-{len(self.vars)}-{secrets.token_hex(3)}", name=name,
                         session_id=session_id)
        self.vars[var.var_id] = var
        return var

    # -- endpoints --------------------------------------------------------------------
    async def _register_session(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.api_keys.append(str(payload.get("api_key", "")))
        sid = len(self.sessions) + len(self.deleted_sessions)
        self.sessions[sid] = secrets.token_hex(8)
        return web.json_response({"session_id": sid, "session_auth": self.sessions[sid]})

    async def _remove_session(self, request: web.Request) -> web.Response:
        payload = await request.json()
        sid = int(request.match_info["session_id"])
        if (err := self._check_session({**payload, "session_id": sid})) is not None:
            return self._error(err)
        del self.sessions[sid]
        self.deleted_sessions.append(sid)
        return web.json_response({})

    async def _register_var(self, request: web.Request) -> web.Response:
        payload = await request.json()
        if (err := self._check_session(payload)) is not None:
            return self._error(err)
        var = self._new_var(str(payload.get("var_name", "var")), payload["session_id"])
        return web.json_response({"var_id": var.var_id})

    async def _set_var(self, request: web.Request) -> web.Response:
        payload = await request.json()
        if (err := self._check_session(payload)) is not None:
            return self._error(err)
        var = self.vars.get(request.match_info["var_id"])
        if var is None:
            return self._error(f"semantic variable {request.match_info['var_id']} not found")
        var.content = str(payload.get("content", ""))
        var.ready.set()
        return web.json_response({})

    async def _get_var(self, request: web.Request) -> web.Response:
        payload = await request.json()  # Parrot's GET carries a JSON body
        if (err := self._check_session(payload)) is not None:
            return self._error(err)
        if payload.get("criteria") not in ("latency", "throughput"):
            return self._error(f"unknown criteria {payload.get('criteria')!r}")
        var = self.vars.get(request.match_info["var_id"])
        if var is None:
            return self._error(f"semantic variable {request.match_info['var_id']} not found")
        await var.ready.wait()
        return web.json_response({"content": var.content})

    async def _semantic_call(self, request: web.Request) -> web.Response:
        payload = await request.json()
        if (err := self._check_session(payload)) is not None:
            return self._error(err)
        for key in ("template", "placeholders"):
            if key not in payload:
                return self._error(f"Missing field '{key}' in request.")
        if self.fail_when is not None and (msg := self.fail_when(payload)) is not None:
            self.failed_calls += 1
            return self._error(msg)
        declared = {p["name"]: p for p in payload["placeholders"]}
        names = PLACEHOLDER.findall(payload["template"])
        if set(names) != set(declared):
            return self._error(f"placeholders {sorted(declared)} do not match the template's "
                               f"{sorted(set(names))}")
        sid = payload["session_id"]
        inputs: list[str] = []
        bindings: dict[str, str] = {}
        mapping: list[dict[str, Any]] = []
        output: StandinVar | None = None
        sampling: dict[str, Any] = {}
        for name in names:
            p = declared[name]
            if p.get("is_output"):
                if p.get("var_id") is not None:
                    return self._error("Output placeholder should not have var_id.")
                output = self._new_var(name, sid)
                sampling = dict(p.get("sampling_config") or {})
                var = output
            else:
                if p.get("sampling_config") is not None:
                    return self._error("Input placeholder should not have sampling_config.")
                vid = p.get("var_id")
                found = self.vars.get(vid) if vid is not None else self._new_var(name, sid)
                if found is None:
                    return self._error(f"semantic variable {vid} not found")
                var = found
                inputs.append(var.var_id)
                bindings[name] = var.var_id
            mapping.append({"placeholder_name": name, "is_output": bool(p.get("is_output")),
                            "var_name": var.name, "var_id": var.var_id})
        if output is None:
            return self._error("a semantic call needs an output placeholder")
        call = StandinCall(
            request_id=len(self.calls), session_id=sid, template=payload["template"],
            placeholders=payload["placeholders"], inputs=inputs, bindings=bindings, output=output.var_id,
            max_gen_length=int(sampling.get("max_gen_length", 16)),
            ignore_tokenizer_eos=bool(sampling.get("ignore_tokenizer_eos", False)),
            models=list(payload.get("models") or []),
        )
        output.producer = call.request_id
        self.calls.append(call)
        task = asyncio.create_task(self._run(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"request_id": call.request_id,
                                  "placeholders_mapping": mapping})

    async def _run(self, call: StandinCall) -> None:
        for vid in call.inputs:
            await self.vars[vid].ready.wait()
        loop = asyncio.get_running_loop()
        call.started = loop.time()
        call.prompt = PLACEHOLDER.sub(
            lambda m: self.vars[call.bindings[m.group(1)]].content or ""
            if m.group(1) in call.bindings else "", call.template)
        await asyncio.sleep(self.delay_s)
        words = words_for_tokens(call.max_gen_length)
        text = " ".join([f"r{call.request_id}"] + [f"w{i}" for i in range(1, words)])
        out = self.vars[call.output]
        out.content = text
        call.finished = loop.time()
        out.ready.set()
