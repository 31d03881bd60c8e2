"""TransformersEngine: transformers' own continuous batching in the same process.

For users without vLLM, and the real engine of the lent GPU machines (their image has
torch and transformers but no vLLM). The model is always built from its config with
random weights (`AutoModelForCausalLM.from_config`): nothing is ever downloaded, and
weight files in a model folder are not read. `model` is a folder holding config.json
(and optionally a tokenizer), or a preset: `tiny` (a 2-layer Llama, hidden 64, for
tests) or `llama-1b` (the 1.1B Llama of REFERENCE.md: hidden 2048, 16 layers).

transformers runs its continuous-batching loop (paged attention, chunked prefill) in
a thread of its own. Each request registers a result handler, which transformers
calls on this loop through `call_soon_threadsafe` with the request's cumulative
output after every step; the handler feeds a per-request asyncio queue, and bursts
are coalesced into one TokenEvent. EOS is ignored (`eos_token_id=-1`) unless a
request asks otherwise, so every call generates exactly `max_tokens`.

Prompts: `request.prompt_token_ids` when set; else the model folder's tokenizer; else
`prompt_tokens` synthetic ids, deterministic for the seed and prompt text, whose first
`prefix_tokens` are derived from `prefix_key` alone so that requests sharing a prefix
share its ids too (transformers' block sharing can then reuse the KV cache).

torch and transformers are imported only by `start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
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
from engines.tokens import TokenCounter

NOT_INSTALLED = ("the transformers engine needs torch and transformers "
                 "(pip install torch transformers)")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
# How long generate() waits for output before checking that the generation thread lives.
_LIVENESS_S = 1.0

# A CPU has no free GPU memory to size the KV cache from: 16k tokens of cache.
CPU_CACHE_DEFAULTS = {"num_blocks": 512, "block_size": 32, "max_batch_tokens": 512}

# Llama configs for the presets (LlamaConfig keyword arguments).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=1024,
                 max_position_embeddings=65536, tie_word_embeddings=False),
    # 1.10e9 parameters: Llama-3.2-1B's shape with a 32k vocabulary (REFERENCE.md).
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=32000,
                     max_position_embeddings=131072, rope_theta=500000.0,
                     tie_word_embeddings=False),
}


class TransformersOptionError(EngineOptionError):
    """A bad engine option; the message is one line."""


_DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass(slots=True)
class TransformersOptions:
    model: str = option("tiny", "a folder with config.json, or a preset: "
                        + ", ".join(PRESETS) + " (random weights, never downloaded)")
    dtype: str = option("auto", "auto: bfloat16 on a GPU, float32 on the CPU", choices=_DTYPES)
    device: str = option("auto", "cuda, cuda:N or cpu; auto: cuda when available")
    attn_implementation: str = option("paged|sdpa", "transformers' attention kernel")
    max_batch_tokens: int | None = option(
        None, "tokens in one step; unset: sized from free memory", lo=1)
    num_blocks: int | None = option(None, "KV-cache blocks; unset: from free memory", lo=1)
    block_size: int | None = option(
        None, "tokens per KV-cache block; unset: transformers' 256", lo=4)
    max_requests_per_batch: int | None = option(None, "requests in one batch", lo=1)
    warmup: bool | None = option(
        None, "capture CUDA graphs before the run; unset: on a GPU only")
    seed: int = option(0, "seed of the random weights and of sampling", lo=0)
    state_interval_s: float = option(1.0, "engine_state events this often (s)", lo=0.01)

    @property
    def preset(self) -> dict[str, Any] | None:
        return PRESETS.get(self.model)

    @property
    def folder(self) -> Path | None:
        return None if self.model in PRESETS else Path(self.model)


OPTIONS = OptionSchema.of(TransformersOptions, "transformers engine",
                          error=TransformersOptionError)


def parse_options(options: dict[str, Any]) -> TransformersOptions:
    """Validate engine options (from the CLI or a config); one-line errors."""
    opts = OPTIONS.build(options)
    if opts.folder is not None:
        folder = opts.folder.expanduser()
        if not (folder / "config.json").is_file():
            raise TransformersOptionError(
                f"model {opts.model!r} is neither a folder with config.json nor a preset "
                f"({', '.join(PRESETS)}); the transformers engine never downloads models")
        opts.model = str(folder.resolve())
    return opts


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fatal_suffix(manager: Any) -> str:
    fatal = getattr(getattr(manager, "background_thread_status", None), "fatal_error", None)
    return f" ({_one_line(fatal)})" if fatal is not None else ""


class TransformersEngine:
    name = "transformers"

    def __init__(self, ctx: EngineContext, options: TransformersOptions) -> None:
        self.ctx = ctx
        self.opts = options
        self._torch: Any = None
        self._model: Any = None
        self._manager: Any = None
        self._tokenizer: Any = None
        self._vocab_size = 32000
        self._eos: int | list[int] = -1
        self._live: set[str] = set()
        self._state_task: asyncio.Task[None] | None = None
        self.resolved: dict[str, Any] = {}  # device, dtype, parameters, cache sizes
        self.completed = 0
        self.cancelled = 0

    @classmethod
    def from_options(cls, ctx: EngineContext, options: dict[str, Any]) -> TransformersEngine:
        return cls(ctx, parse_options(options))

    # -- lifecycle ------------------------------------------------------------------
    def info(self) -> EngineInfo:
        details: dict[str, Any] = asdict(self.opts)
        details["torch_version"] = _version("torch")
        details["transformers_version"] = _version("transformers")
        details["weights"] = "random (from config)"
        details.update(self.resolved)
        caps = ["stream", ENGINE_STATE]
        if self._tokenizer is not None or (
            self.opts.folder is not None
            and any((self.opts.folder / f).exists() for f in TOKENIZER_FILES)
        ):
            caps.append("text")
        return EngineInfo(name=self.name, model=self.opts.model,
                          max_num_seqs=self.opts.max_requests_per_batch,
                          capabilities=caps, details=details)

    @property
    def in_engine(self) -> int:
        return len(self._live)

    def tokenizer(self) -> TokenCounter | None:
        """The model folder's tokenizer as a token counter (HasTokenizer), once started;
        None for a preset, which has none."""
        tok = self._tokenizer
        if tok is None:
            return None
        return lambda text: len(tok.encode(text, add_special_tokens=False))

    async def start(self) -> None:
        if self._manager is not None:
            return
        try:
            import torch
            import transformers  # noqa: F401
        except ImportError:
            raise EngineError(NOT_INSTALLED) from None
        self._torch = torch
        try:
            # Building a 1B model takes seconds: off the loop, so meters and Ctrl-C stay live.
            await asyncio.to_thread(self._build)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"transformers: {_one_line(exc)}") from None
        r = self.resolved
        self.ctx.emit(EngineStateEvent(
            t_s=self.ctx.clock.now(), source="engine",
            note=(f"transformers {_version('transformers')} on {r.get('device_name')}: "
                  f"{r.get('parameters', 0) / 1e9:.2f}B parameters, {r.get('dtype')}, "
                  f"{r.get('attn_implementation')}, num_blocks={r.get('num_blocks')}, "
                  f"block_size={r.get('block_size')}, "
                  f"max_batch_tokens={r.get('max_batch_tokens')}"),
        ))
        self._state_task = asyncio.create_task(self._report_state())

    def _build(self) -> None:
        torch = self._torch
        from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, LlamaConfig
        from transformers.generation import ContinuousBatchingConfig

        o = self.opts
        device = o.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"device {device!r} asked for, but torch sees no CUDA GPU")
        if not device.startswith("cuda"):
            try:
                import psutil  # noqa: F401
            except ImportError:
                # Without it transformers sizes the cache from "0 bytes free" and dies.
                raise EngineError("on the CPU transformers' continuous batching needs psutil "
                                  "(pip install psutil)") from None
        dtype_name = o.dtype
        if dtype_name == "auto":
            dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
        dtype = getattr(torch, dtype_name)
        if o.preset is not None:
            config = LlamaConfig(**o.preset)
        else:
            config = AutoConfig.from_pretrained(o.model, local_files_only=True)
            folder = Path(o.model)
            if any((folder / f).exists() for f in TOKENIZER_FILES):
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(o.model, local_files_only=True)
        self._vocab_size = int(getattr(config, "vocab_size", 32000) or 32000)
        torch.manual_seed(o.seed)
        # Initialising on the target device is many times faster than on the CPU.
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(
                config, dtype=dtype, attn_implementation=o.attn_implementation)
        model.eval()
        eos = getattr(config, "eos_token_id", None)
        self._eos = eos if isinstance(eos, int | list) else -1
        gen = GenerationConfig(max_new_tokens=256, do_sample=False, eos_token_id=-1)
        cb_kw: dict[str, Any] = {"seed": o.seed}
        if not device.startswith("cuda"):
            # transformers sizes the cache from free GPU memory, which a CPU has none of.
            cb_kw.update(CPU_CACHE_DEFAULTS)
        for key in ("max_batch_tokens", "num_blocks", "block_size", "max_requests_per_batch"):
            value = getattr(o, key)
            if value is not None:
                cb_kw[key] = value
        manager = model.init_continuous_batching(
            generation_config=gen, continuous_batching_config=ContinuousBatchingConfig(**cb_kw))
        warmup = o.warmup if o.warmup is not None else device.startswith("cuda")
        if warmup:
            manager.warmup()
        manager.start()
        self._model, self._manager = model, manager
        self.resolved = {
            "device": device,
            "device_name": (torch.cuda.get_device_name(torch.device(device))
                            if device.startswith("cuda") else "cpu"),
            "dtype": dtype_name,
            "parameters": sum(p.numel() for p in model.parameters()),
            "attn_implementation": str(model.config._attn_implementation),
            "warmup": warmup,
        }
        # What was asked for; the cache's own sizes replace these once it exists.
        self.resolved.update({k: v for k, v in cb_kw.items() if k != "seed"})
        self._read_cache_sizes()

    def _read_cache_sizes(self) -> None:
        # The batch processor (and so the cache) is created by warmup or by the
        # generation thread once it runs: read what is there.
        bp = getattr(self._manager, "batch_processor", None)
        cache = getattr(bp, "cache", None)
        for key in ("num_blocks", "block_size", "max_batch_tokens"):
            value = getattr(cache, key, None)
            if isinstance(value, int):
                self.resolved[key] = value

    async def stop(self) -> None:
        if self._state_task is not None:
            self._state_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._state_task
            self._state_task = None
        manager, self._manager = self._manager, None
        if manager is not None:
            def shut() -> None:
                manager.stop(block=True, timeout=30.0, hard_stop=True)
                manager.destroy()

            try:
                await asyncio.to_thread(shut)
            finally:
                self._model = None
                torch = self._torch
                if torch is not None and torch.cuda.is_available():
                    torch.cuda.empty_cache()

    async def _report_state(self) -> None:
        """The scheduler's own counts and KV-cache use, about once a second."""
        while True:
            await asyncio.sleep(self.opts.state_interval_s)
            bp = getattr(self._manager, "batch_processor", None)
            if bp is None:
                continue
            try:
                sched, cache = bp.scheduler, bp.cache
                running = len(sched.active_requests)
                waiting = len(sched.waiting_requests) + self._manager.input_queue.qsize()
                kv: float | None = None
                total = getattr(cache, "num_blocks", None)
                if isinstance(total, int) and total > 0:
                    kv = 100.0 * (1.0 - cache.get_num_free_blocks() / total)
            except Exception:  # internals of a research API: best effort only
                continue
            if "num_blocks" not in self.resolved:
                self._read_cache_sizes()
            self.ctx.emit(EngineStateEvent(t_s=self.ctx.clock.now(), source="engine",
                                           running=running, waiting=waiting, kv_cache_pct=kv))

    # -- requests ------------------------------------------------------------------------
    def prompt_ids(self, request: Request) -> list[int]:
        if request.prompt_token_ids:
            return list(request.prompt_token_ids)
        if self._tokenizer is not None and request.prompt:
            ids = list(self._tokenizer.encode(request.prompt, add_special_tokens=False))
            if ids:
                return ids
        return synthetic_prompt(request, self._vocab_size, self.opts.seed)

    async def generate(self, request: Request) -> AsyncIterator[TokenEvent]:
        manager = self._manager
        if manager is None:
            raise EngineError("the transformers engine is not started")
        rid = request.request_id
        ids = self.prompt_ids(request)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        clock = self.ctx.clock
        finished = False
        seen = 0
        first = True
        # The handler first, so that no output can arrive before someone listens.
        manager.register_result_handler(rid, queue.put_nowait)
        self._live.add(rid)
        try:
            accepted = manager.add_request(
                input_ids=ids, request_id=rid, max_new_tokens=request.max_tokens,
                streaming=True, eos_token_id=-1 if request.ignore_eos else self._eos)
            if accepted is None:
                raise EngineError("transformers: the generation loop is not accepting requests"
                                  + _fatal_suffix(manager))
            while True:
                try:
                    out = await asyncio.wait_for(queue.get(), _LIVENESS_S)
                except TimeoutError:
                    if not manager.is_running():
                        raise EngineError("transformers: the generation thread stopped"
                                          + _fatal_suffix(manager)) from None
                    continue
                while not queue.empty():  # coalesce a burst: outputs are cumulative
                    out = queue.get_nowait()
                if out.error is not None or int(out.status) == 4:  # RequestStatus.FAILED
                    raise EngineError(f"transformers: {out.error or 'request failed'}")
                n = len(out.generated_tokens)
                new, seen = n - seen, n
                done = bool(out.is_finished())
                if new <= 0 and not done:
                    continue
                text = ""
                if done and self._tokenizer is not None:
                    # Whole text at the end: incremental decoding of BPE is not worth it here.
                    text = self._tokenizer.decode(out.generated_tokens, skip_special_tokens=True)
                yield TokenEvent(
                    t_s=clock.now(), prefill_tokens=len(ids) if first else 0,
                    decode_tokens=max(0, new), text=text, finished=done,
                    finish_reason=("length" if n >= request.max_tokens else "stop") if done
                    else None,
                    prompt_tokens=len(ids) if first else None, output_tokens=n,
                )
                first = False
                if done:
                    finished = True
                    self.completed += 1
                    return
        finally:
            self._live.discard(rid)
            if not finished:
                # Closed early (cancelled, timed out, run ended): stop spending the GPU on it.
                self.cancelled += 1
                with contextlib.suppress(Exception):
                    manager.cancel_request(rid)
                with contextlib.suppress(Exception), manager.output_router._lock:
                    manager.output_router.result_handlers.pop(rid, None)
