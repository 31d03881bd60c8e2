"""ParrotEngine: Parrot's HTTP API (microsoft/ParrotServe, OSDI '24), workflow-aware.

One Parrot session per run (`POST /v1/session` with the API key from $PARROT_API_KEY,
if set; the key is never recorded). Each call becomes a semantic function call
(`POST /v1/semantic_call`) whose template is the prompt with its parents' outputs
replaced by `{{input_k}}` placeholders bound to those outputs' semantic variables, and
an `{{output}}` placeholder with `sampling_config = {max_gen_length: max_tokens,
ignore_tokenizer_eos: true}`. Parrot therefore sees the workflow's DAG through its
variables: a reduce call's inputs are the map calls' output variables, a chain step's
input is the previous step's output. The result is read with `GET
/v1/semantic_var/{id}` and criteria `latency` (a GET waits until the producing call has
run).

Honest limits:
- Parrot does not stream. Each call yields ONE TokenEvent, with all its output tokens
  and `finished=True`, when the content arrives: TTFT equals the call's latency, and
  inter-token times are not observable. Output tokens are estimated from the text
  (`engines.tokens.estimate_tokens`, as workloads size prompts without a tokenizer),
  since Parrot's API returns no count.
- wattflow builds a stage when its parents have finished, so a child's call is
  submitted after its inputs have content: Parrot sees the edges, not the look-ahead
  that lets it schedule a whole DAG submitted at once.
- Parrot's API has no cancel: a call abandoned by the runner (timeout, end of run)
  still runs to completion inside Parrot.
- A parent's output is bound as a variable only where its text appears verbatim in the
  child's prompt (the workloads here insert it verbatim); otherwise the prompt is sent
  as it is and that edge stays invisible to Parrot.

Parrot's ServeCore (`python3 -m parrot.serve.http_server --config_path ...`, port 9000)
asserts at every semantic call that SIMULATE_NETWORK_LATENCY_PRT is set in ITS
environment: set it to 0 for energy runs (1 adds ~220-250 ms of simulated RTT around
each call). Field names follow ParrotServe's current serve layer (`placeholders`,
`placeholders_mapping`); older builds' `parameters` / `param_info` answers are read too.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from app.core.options import OptionSchema, option
from engines.base import (
    EngineContext,
    EngineError,
    EngineInfo,
    EngineOptionError,
    Request,
    TokenEvent,
)
from engines.tokens import estimate_tokens

API = "/v1"
DEFAULT_URL = "http://127.0.0.1:9000"
# Outputs remembered so that later calls can bind them as inputs: bounded, oldest first out.
_MAX_REMEMBERED = 50_000
# Parrot's placeholder pattern; literal prompt text must never form one.
_PLACEHOLDER = re.compile(r"\{\{[a-zA-Z_][a-zA-Z0-9_]*\}\}")


@dataclass(slots=True)
class ParrotOptions:
    url: str = option(DEFAULT_URL, "Parrot's ServeCore, http(s)://HOST:PORT (--url)")
    model: str | None = option(None, "sent as `models: [model]`; unset: Parrot chooses")
    model_type: str = option("token_id", "Parrot's model_type of each call")
    api_key_env: str = option("PARROT_API_KEY", "environment variable holding the API key "
                              "(never recorded)")
    criteria: str = option("latency", "Parrot's scheduling criteria for reading outputs")
    timeout_s: float = option(600.0, "per HTTP call; a read waits for the whole generation "
                              "(s)", lo=0, lo_open=True)
    remove_pure_fill: bool = option(True, "Parrot's remove_pure_fill of each call")
    seed: int | None = option(None, "the run's seed, passed to every engine; unused here")


OPTIONS = OptionSchema.of(ParrotOptions, "parrot engine", error=EngineOptionError)


def parse_options(options: dict[str, Any]) -> ParrotOptions:
    opts = OPTIONS.build(options)
    if not re.match(r"^https?://[^/\s]+", opts.url):
        raise EngineOptionError(f"parrot engine: url must be http(s)://HOST:PORT, "
                                f"got {opts.url!r}")
    opts.url = opts.url.rstrip("/").removesuffix(API)
    return opts


def _one_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0][:300] if text else ""


def _literal(text: str) -> str:
    """Prompt text as a template constant: break anything Parrot would read as `{{name}}`."""
    return _PLACEHOLDER.sub(lambda m: "{ {" + m.group(0)[2:], text) if "{{" in text else text


def build_template(prompt: str, parents: list[tuple[str, str]]) -> tuple[str, list[dict[str, Any]]]:
    """The call's template and its input placeholders. `parents` are (output var id,
    output text) of the parents whose outputs Parrot holds: each one whose text appears
    in the prompt is replaced there by `{{input_k}}` bound to its variable."""
    pieces: list[tuple[int, int, str]] = []  # (start, end, var id) in the prompt
    taken: list[tuple[int, int]] = []
    for var_id, out in parents:
        if not out:
            continue
        start = prompt.find(out)
        while start >= 0 and any(s < start + len(out) and start < e for s, e in taken):
            start = prompt.find(out, start + 1)
        if start < 0:
            continue
        taken.append((start, start + len(out)))
        pieces.append((start, start + len(out), var_id))
    pieces.sort()
    template: list[str] = []
    placeholders: list[dict[str, Any]] = []
    pos = 0
    for k, (start, end, var_id) in enumerate(pieces):
        template.append(_literal(prompt[pos:start]))
        name = f"input_{k}"
        template.append("{{" + name + "}}")
        placeholders.append({"name": name, "is_output": False, "var_id": var_id})
        pos = end
    template.append(_literal(prompt[pos:]))
    return "".join(template), placeholders


class ParrotEngine:
    name = "parrot"

    def __init__(self, ctx: EngineContext, options: ParrotOptions) -> None:
        self.ctx = ctx
        self.opts = options
        self._http: aiohttp.ClientSession | None = None
        self._session_id: Any = None
        self._session_auth: Any = None
        # request id -> (output var id, output text), for binding children's inputs
        self._outputs: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self.calls = 0

    @classmethod
    def from_options(cls, ctx: EngineContext, options: dict[str, Any]) -> ParrotEngine:
        return cls(ctx, parse_options(options))

    def info(self) -> EngineInfo:
        o = self.opts
        return EngineInfo(
            name=self.name, model=o.model or "",
            capabilities=["dag", "text"],  # no streaming: one event per call
            details={"url": o.url, "model_type": o.model_type, "criteria": o.criteria,
                     "timeout_s": o.timeout_s, "remove_pure_fill": o.remove_pure_fill,
                     "api_key_env": o.api_key_env,
                     "api_key_set": bool(os.environ.get(o.api_key_env)),
                     "streaming": False},
        )

    # -- HTTP ------------------------------------------------------------------------
    async def _call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One JSON request (Parrot sends a JSON body with every method, GET included)."""
        if self._http is None:
            raise EngineError("the parrot engine is not started")
        url = self.opts.url + API + path
        try:
            async with self._http.request(method, url, json=body) as resp:
                raw = await resp.text()
                if resp.status >= 400:
                    detail = raw
                    try:
                        parsed = await resp.json(content_type=None)
                        if isinstance(parsed, dict):
                            detail = str(parsed.get("error") or parsed.get("detail") or raw)
                    except ValueError:
                        pass
                    raise EngineError(f"parrot: HTTP {resp.status} from {method} {API}{path}"
                                      + (f": {_one_line(detail)}" if _one_line(detail) else ""))
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    raise EngineError(f"parrot: {method} {API}{path} answered with no JSON: "
                                      f"{_one_line(raw)!r}") from None
        except TimeoutError:
            raise EngineError(f"parrot: {method} {API}{path} timed out after "
                              f"{self.opts.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise EngineError(f"parrot: {method} {API}{path} failed: "
                              f"{_one_line(str(exc)) or type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise EngineError(f"parrot: {method} {API}{path} answered {type(data).__name__}, "
                              "not an object")
        return data

    def _auth(self) -> dict[str, Any]:
        return {"session_id": self._session_id, "session_auth": self._session_auth}

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if self._http is not None:
            return
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=self.opts.timeout_s),
        )
        key = os.environ.get(self.opts.api_key_env, "")
        try:
            data = await self._call("POST", "/session", {"api_key": key})
        except EngineError as exc:
            await self._close_http()
            raise EngineError(f"{exc} (is Parrot's ServeCore running at {self.opts.url}?)"
                              ) from None
        if "session_id" not in data:
            await self._close_http()
            raise EngineError(f"parrot: POST {API}/session answered without a session_id")
        self._session_id = data["session_id"]
        self._session_auth = data.get("session_auth")

    async def _close_http(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def stop(self) -> None:
        if self._http is None:
            return
        try:
            if self._session_id is not None:
                await self._call("DELETE", f"/session/{self._session_id}", self._auth())
        finally:
            self._session_id = None
            await self._close_http()

    # -- requests ----------------------------------------------------------------------
    async def generate(self, request: Request) -> AsyncIterator[TokenEvent]:
        parents = [self._outputs[p] for p in request.parents if p in self._outputs]
        template, placeholders = build_template(request.prompt, parents)
        template += "{{output}}"
        placeholders.append({
            "name": "output", "is_output": True,
            "sampling_config": {"max_gen_length": request.max_tokens,
                                "ignore_tokenizer_eos": request.ignore_eos},
        })
        body = {
            **self._auth(), "template": template, "placeholders": placeholders,
            "models": [self.opts.model] if self.opts.model else [],
            "model_type": self.opts.model_type, "remove_pure_fill": self.opts.remove_pure_fill,
        }
        self.calls += 1
        answer = await self._call("POST", "/semantic_call", body)
        var_id = self._output_var(answer)
        got = await self._call("GET", f"/semantic_var/{var_id}",
                               {**self._auth(), "criteria": self.opts.criteria})
        content = got.get("content")
        if not isinstance(content, str):
            raise EngineError(f"parrot: GET {API}/semantic_var/{var_id} answered without content")
        n = estimate_tokens(content) if content.strip() else 0
        self._remember(request.request_id, var_id, content)
        yield TokenEvent(
            t_s=self.ctx.clock.now(), prefill_tokens=request.prompt_tokens, decode_tokens=n,
            text=content, finished=True,
            finish_reason="length" if n >= request.max_tokens else "stop", output_tokens=n,
        )

    @staticmethod
    def _output_var(answer: dict[str, Any]) -> str:
        mapping = answer.get("placeholders_mapping", answer.get("param_info"))
        if isinstance(mapping, list):
            for m in mapping:
                if not isinstance(m, dict) or not m.get("is_output"):
                    continue
                name = m.get("placeholder_name", m.get("name"))
                if name == "output" and m.get("var_id") is not None:
                    return str(m["var_id"])
        raise EngineError("parrot: POST /v1/semantic_call answered without the output "
                          "variable's id")

    def _remember(self, request_id: str, var_id: str, content: str) -> None:
        self._outputs[request_id] = (var_id, content)
        while len(self._outputs) > _MAX_REMEMBERED:
            self._outputs.popitem(last=False)

