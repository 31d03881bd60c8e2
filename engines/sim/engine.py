"""SimEngine: the simulated twin behind the engine protocol.

One background task runs the scheduler: it forms a batch (scheduler.Scheduler), asks
the GPU twin how long the step takes at the clock the power cap allows, records the
step's power on the twin's timeline, sleeps for the step (asyncio.sleep, so it runs
on virtual time under app.core.clock.VirtualTimeEventLoop), then commits the step's
tokens and pushes TokenEvents to the requests' streams.

Speed: a batch of pure decode that nothing disturbs is fast-forwarded several steps
per sleep (up to the next finish, event flush or state report); a new arrival or a
cap change wakes the loop, which keeps the step in flight and re-plans after it.
Token events are coalesced: the first token at once, then at most one event per
request per `token_event_interval_s`, and always a final one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.core.events import EngineStateEvent
from app.core.options import OptionSchema, option
from engines.base import (
    ENGINE_STATE,
    EngineContext,
    EngineError,
    EngineInfo,
    EngineOptionError,
    Progress,
    Request,
    TokenEvent,
)
from engines.sim.memory import CUDA_CONTEXT_BYTES, MemoryPlan, plan_memory
from engines.sim.profile import ProfileError, TwinProfile, load_profile
from engines.sim.scheduler import BLOCK_TOKENS, Scheduler, Seq
from engines.sim.specs import GIB, MODELS, resolve_gpu, resolve_model
from engines.sim.twin import GpuTwin

MAX_MODEL_LEN = 131072
_FF_MAX_STEPS = 256
_STATE_INTERVAL_S = 1.0
_JITTER = 0.005  # +-0.5% step-time noise (host timing), seeded
TOKEN_EVENT_INTERVAL_S = 0.05
# On virtual time an hour passes in seconds: nobody watches 50 ms of it, and each event
# interval costs the scheduler a wake-up (a decode run is fast-forwarded only up to the
# next event). 0.2 s keeps per-request progress finer than the meter's 0.1 s samples x 2
# and the live rates smooth; first tokens and finishes are never delayed.
VIRTUAL_TOKEN_EVENT_INTERVAL_S = 0.2


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class SimOptionError(EngineOptionError):
    """A bad engine option; the message is one line."""


@dataclass(slots=True)
class SimOptions:
    gpu: str | None = option(None, "the simulated GPU (h100, a100, ...; default h100)")
    model: str | dict[str, Any] | None = option(
        None, f"a model of the table ({', '.join(MODELS)}; default llama-3.1-8b), or a "
        "table of layers, hidden, heads, kv_heads, head_dim, intermediate, vocab")
    tensor_parallel_size: int = option(
        1, "GPUs the model is split over (weights, KV heads; all-reduce on NVLink)",
        lo=1, hi=64)
    gpu_memory_utilization: float = option(
        0.9, "fraction of each GPU's memory the engine takes (vLLM's)", lo=0.05, hi=1.0)
    profile: str | None = option(
        None, "a twin profile (JSON) from `wattflow calibrate`: its fitted coefficients")
    # Bounds as the knobs of the same names have (app/core/knobs.py; a test holds them
    # equal): -E at the start and a change mid-run take the same values.
    max_num_seqs: int = option(1024, "requests in one batch (vLLM's max_num_seqs)", lo=1,
                               hi=65536)
    max_num_batched_tokens: int = option(8192, "tokens in one step (prefill chunks + decode)",
                                         lo=16, hi=1_000_000)
    kv_cache_gb: float | None = option(
        None, "KV-cache size in GiB per GPU; unset: gpu_memory_utilization of its memory "
        "minus weights, activations, CUDA graphs and non-torch memory", lo=0)
    seed: int = option(0, "seed of the step-time jitter", lo=0)
    prefix_caching: bool = option(True, "reuse the KV cache of shared prompt prefixes")
    token_event_interval_s: float | None = option(
        None, "at most one token event per request this often (s); unset: 0.05 on the "
        "wall clock, 0.2 on virtual time (--fast)", lo=0)


OPTIONS = OptionSchema.of(SimOptions, "sim engine", error=SimOptionError)


class SimEngine:
    name = "sim"

    def __init__(
        self,
        ctx: EngineContext,
        twin: GpuTwin,
        *,
        max_num_seqs: int = 1024,
        max_num_batched_tokens: int = 8192,
        kv_cache_bytes: float | None = None,
        seed: int = 0,
        prefix_caching: bool = True,
        token_event_interval_s: float = 0.05,
        gpu_memory_utilization: float = 0.9,
    ) -> None:
        self.ctx = ctx
        self.twin = twin
        gpu, model = twin.gpu, twin.model
        n_gpus = int(getattr(twin, "n_gpus", 1))
        self.memory: MemoryPlan = plan_memory(
            gpu, model, tensor_parallel_size=n_gpus, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            gpu_memory_utilization=gpu_memory_utilization)
        if kv_cache_bytes is None:
            kv_cache_bytes = self.memory.kv_cache
        if kv_cache_bytes <= 0:
            split = f" split over {n_gpus} GPUs" if n_gpus > 1 else ""
            raise SimOptionError(
                f"{model.name} ({model.weight_bytes / GIB:.1f} GiB{split}) leaves no KV "
                f"cache room on {gpu.name} (raise tensor_parallel_size)"
            )
        self.kv_cache_bytes = kv_cache_bytes  # per GPU
        # Each GPU holds 1/N of every token's KV (its share of the KV heads).
        kv_per_token = model.kv_bytes_per_token / n_gpus
        kv_blocks = int(kv_cache_bytes // (BLOCK_TOKENS * kv_per_token))
        if kv_blocks < 1:
            raise SimOptionError("kv_cache_gb is smaller than one KV block")
        self.max_model_len = min(MAX_MODEL_LEN, kv_blocks * BLOCK_TOKENS)
        self.sched = Scheduler(
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            kv_blocks=kv_blocks,
            prefix_caching=prefix_caching,
        )
        self.seed = seed
        self.token_event_interval_s = token_event_interval_s
        self._rng = random.Random(seed)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failure: str | None = None
        self._poked = False
        self._waiter: asyncio.Future[None] | None = None
        self._last_end = 0.0
        self._next_state_t = 0.0
        self._idle_reported = False
        # True while the scheduler runs steps back to back: a late wake-up of the loop (a
        # stalled host) must not open a gap in the GPU's timeline, and a reading taken
        # before the loop catches up is of the timeline's end, not of an idle GPU.
        self.stepping = False
        self.steps = 0  # engine iterations simulated (for tests and benchmarks)
        self.output_tokens_total = 0
        self.prompt_tokens_total = 0  # prompts that reached their first token
        self.profile_path: str | None = None
        twin.on_change(self._poke)

    @classmethod
    def from_options(cls, ctx: EngineContext, options: dict[str, Any]) -> SimEngine:
        o = OPTIONS.build(options)
        profile = TwinProfile()
        if o.profile:
            try:
                profile = load_profile(o.profile)
            except ProfileError as e:
                raise SimOptionError(str(e)) from None
        try:
            gpu = resolve_gpu(o.gpu or profile.gpu or "h100")
            model = resolve_model(o.model or profile.model or "llama-3.1-8b")
        except ValueError as e:
            raise SimOptionError(str(e)) from None
        twin = GpuTwin(gpu, model, tensor_parallel_size=o.tensor_parallel_size,
                       calibration=profile.calibration if o.profile else None,
                       power=profile.power if o.profile else None)
        engine = cls(
            ctx,
            twin,
            max_num_seqs=o.max_num_seqs,
            max_num_batched_tokens=o.max_num_batched_tokens,
            kv_cache_bytes=None if o.kv_cache_gb is None else o.kv_cache_gb * GIB,
            seed=o.seed,
            prefix_caching=o.prefix_caching,
            token_event_interval_s=(
                o.token_event_interval_s if o.token_event_interval_s is not None
                else VIRTUAL_TOKEN_EVENT_INTERVAL_S if getattr(ctx.clock, "virtual", False)
                else TOKEN_EVENT_INTERVAL_S),
            gpu_memory_utilization=o.gpu_memory_utilization,
        )
        engine.profile_path = o.profile
        return engine

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._last_end = self.ctx.clock.now()
        self._failure = None
        # vLLM takes its memory up front: weights, the whole KV pool, activations, graphs.
        m = self.memory
        used = m.weights + self.kv_cache_bytes + m.activations + m.cuda_graphs + m.non_torch
        self.twin.mem_used_mib = min(self.twin.gpu.mem_bytes, used) / 1024**2
        self._task = asyncio.create_task(self._run(), name="sim-engine-scheduler")

    async def stop(self) -> None:
        self._stopping = True
        self._poke()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all("the sim engine was stopped")
        self.sched.clear()  # counters stay readable after the run
        self.twin.mem_used_mib = CUDA_CONTEXT_BYTES / 1024**2

    def settings(self) -> dict[str, int]:
        return {"max_num_seqs": self.sched.max_num_seqs,
                "max_num_batched_tokens": self.sched.max_num_batched_tokens}

    async def restart(self, **settings: int) -> None:
        """Change the scheduler's settings, as a real engine would by restarting (the
        caller drains first). The twin keeps its clock, meter and prefix cache."""
        for name, value in settings.items():
            if name not in self.settings():
                raise SimOptionError(f"cannot restart with {name}: the sim engine restarts"
                                     f" with {', '.join(self.settings())}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SimOptionError(f"{name} must be a whole number >= 1, not {value!r}")
        if self.sched.running or self.sched.waiting:
            raise EngineError("restart needs a drained engine: requests are still inside")
        for name, value in settings.items():
            setattr(self.sched, name, value)
        changed = ", ".join(f"{k}={v}" for k, v in settings.items())
        self.ctx.emit(EngineStateEvent(t_s=self.ctx.clock.now(), source="engine",
                                       note=f"restarted with {changed}"))

    def info(self) -> EngineInfo:
        t = self.twin
        return EngineInfo(
            name=self.name,
            model=t.model.name,
            max_num_seqs=self.sched.max_num_seqs,
            capabilities=["chunked_prefill", "prefix_caching", "power_cap", ENGINE_STATE,
                          "virtual_time"],
            details={
                "gpu": t.gpu.name,
                "tensor_parallel_size": t.n_gpus,
                "model_shape": t.model.describe(),
                "profile": self.profile_path,
                "memory_per_gpu": self.memory.lines(),
                "max_num_batched_tokens": self.sched.max_num_batched_tokens,
                "kv_cache_gib": round(self.kv_cache_bytes / GIB, 2),
                "kv_cache_blocks": self.sched.total_blocks,
                "block_tokens": BLOCK_TOKENS,
                "max_model_len": self.max_model_len,
                "prefix_caching": self.sched.prefix_caching,
                "seed": self.seed,
                "token_event_interval_s": self.token_event_interval_s,
            },
        )

    # ---- requests -------------------------------------------------------------------

    def _validate(self, request: Request) -> Seq:
        if self._failure is not None:
            raise EngineError(self._failure)
        if request.max_tokens < 1:
            raise EngineError(f"request {request.request_id}: max_tokens must be at least 1")
        prompt = max(1, int(request.prompt_tokens))
        total = prompt + request.max_tokens
        if total > self.max_model_len:
            raise EngineError(
                f"request {request.request_id}: prompt + max_tokens = {total} exceeds the "
                f"sim engine's max model length {self.max_model_len}"
            )
        return Seq(req=request, prompt=prompt, max_tokens=int(request.max_tokens),
                   last_event_t=self.ctx.clock.now())

    def generate(self, request: Request) -> AsyncIterator[TokenEvent]:
        return self._generate(request, None)

    def generate_inline(self, request: Request, progress: Progress) -> AsyncIterator[TokenEvent]:
        """`generate`, with the coalesced token events after the first token handed to
        `progress` from the scheduler's task (engines.base.InlineProgress)."""
        return self._generate(request, progress)

    async def _generate(self, request: Request,
                        progress: Progress | None) -> AsyncIterator[TokenEvent]:
        seq = self._validate(request)
        seq.progress = progress
        if self._task is None:
            await self.start()
        self.sched.add(seq)
        self._poke()
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not seq.events:
                    if self._failure is not None:
                        raise EngineError(self._failure)
                    seq.waiter = loop.create_future()
                    await seq.waiter
                    seq.waiter = None
                    continue
                events, seq.events = seq.events, []
                for ev in events:
                    yield ev
                    if ev.finished:
                        return
        finally:
            if not seq.finished:
                self.sched.abort(seq)  # consumer went away: free its slot and KV
                self._poke()

    def _fail_all(self, message: str) -> None:
        self._failure = self._failure or message
        for seq in [*self.sched.running, *self.sched.waiting]:
            if seq.waiter is not None and not seq.waiter.done():
                seq.waiter.set_result(None)

    # ---- the scheduler loop ---------------------------------------------------------

    def _poke(self) -> None:
        self._poked = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self, delay: float | None) -> None:
        """Sleep `delay` seconds (forever if None) or until poked."""
        loop = asyncio.get_running_loop()
        w = self._waiter = loop.create_future()
        handle = None
        if delay is not None:
            handle = loop.call_later(delay, _resolve, w)
        try:
            await w
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must fail the requests, not hang them
            self._fail_all(f"sim engine failed: {type(e).__name__}: {e}")
            raise

    async def _loop(self) -> None:
        sch = self.sched
        while not self._stopping:
            self._poked = False
            sch.reap_aborted()
            batch = sch.schedule()
            now = self.ctx.clock.now()
            if not batch:
                if sch.waiting and not sch.running and not sch.schedule():
                    # Cannot happen for validated requests; never spin on it.
                    seq = sch.waiting.popleft()
                    seq.aborted = True
                    seq.push(TokenEvent(t_s=now, finished=True, finish_reason="abort",
                                        prompt_tokens=seq.prompt, output_tokens=seq.num_output))
                    continue
                self.stepping = False
                self._report_state(now, force=not self._idle_reported)
                self._idle_reported = True
                self.twin.prune(now)
                if not self._poked and not self._stopping:
                    await self._wait(None)
                continue
            self._idle_reported = False
            # The GPU runs steps back to back while there is work: when the loop wakes
            # late on the wall clock (host lag), the next step still starts where the last
            # one ended and the loop catches up, instead of leaving an idle gap.
            t0 = self._last_end if (self.stepping or now - self._last_end < 5e-3) else now
            self.stepping = True
            ends = self._plan(batch, t0)
            if len(ends) == 1:
                await asyncio.sleep(max(0.0, ends[0] - self.ctx.clock.now()))
                done = 1
            else:
                await self._wait(max(0.0, ends[-1] - self.ctx.clock.now()))
                t = self.ctx.clock.now()
                done = next((i + 1 for i, e in enumerate(ends) if e > t + 1e-9), len(ends))
                if done < len(ends):
                    # Woken early: the step in flight completes, the rest is re-planned.
                    self.twin.truncate(ends[done - 1])
                    await asyncio.sleep(max(0.0, ends[done - 1] - self.ctx.clock.now()))
            self._last_end = ends[done - 1]
            self.steps += done
            if done == 1 and len(ends) == 1:
                self._commit_step(batch, ends[0])
            else:
                self._commit_decode(batch, done, ends[done - 1])
            self._report_state(ends[done - 1])

    def _jitter(self) -> float:
        return 1.0 + _JITTER * (2.0 * self._rng.random() - 1.0)

    def _plan(self, batch: list[tuple[Seq, int]], t0: float) -> list[float]:
        """Plan one step, or several when the batch is pure decode; record them on the
        twin and return their end times."""
        rf, twin, sch = self.twin.roofline, self.twin, self.sched
        # One pass: decode tokens in bulk (only their context sum matters), chunks one
        # by one, and whether the batch is pure decode.
        n_dec = ctx_dec = 0
        decode = True
        chunks: list[tuple[int, int]] = []
        left = _FF_MAX_STEPS  # decode steps until the first request is done
        last_event = self._next_state_t  # the oldest pending token event
        for s, n in batch:
            if n == 1:
                n_dec += 1
                ctx_dec += s.num_computed + 1
                if s.num_output < 1:
                    decode = False
                if s.max_tokens - s.num_output < left:
                    left = s.max_tokens - s.num_output
                if s.last_event_t < last_event:
                    last_event = s.last_event_t
            else:
                chunks.append((s.num_computed, n))
                decode = False
        ff_ok = (decode and len(batch) == len(sch.running)
                 and (not sch.waiting or len(sch.running) >= sch.max_num_seqs))
        if not ff_ok:
            work = rf.decode_work(n_dec, ctx_dec)
            for start, n in chunks:
                rf.add_chunk(work, start, n)
            sp = twin.plan_step(work)
            t1 = t0 + sp.times.total_s * self._jitter()
            twin.record_segment(t0, t1, sp.power_w, sp.times.clock, sp.util)
            return [t1]
        n_seqs = len(batch)
        k_max = left
        deadline = min(self._next_state_t, last_event + self.token_event_interval_s)
        ctx_sum = ctx_dec  # pure decode: the sum of num_computed + 1
        # Step time and energy are affine in the context sum, which grows by n_seqs a
        # step: at the maximum clock the twin's cached slopes price the whole run; when
        # the cap binds, two evaluations at the clock it allows.
        price = twin.decode_price(n_seqs)
        if price is not None:
            p_t0, p_dt, p_e0, p_de, p_b0, p_db = price
            t_step = p_t0 + p_dt * ctx_sum
            e_step = p_e0 + p_de * ctx_sum
        if price is not None and \
                e_step <= t_step * twin.power_limit_w * twin.power.coef.limiter_margin:
            clock = 1.0
            util = min(1.0, (p_b0 + p_db * ctx_sum) / t_step)
            dt = p_dt * n_seqs
            de = p_de * n_seqs
        else:
            first = twin.plan_step(rf.decode_work(n_seqs, ctx_sum))
            clock = first.times.clock
            t_step, e_step = first.times.total_s, first.energy_j
            dt = de = 0.0
            if k_max > 1:
                second = twin.plan_step(rf.decode_work(n_seqs, ctx_sum + n_seqs), clock)
                dt = second.times.total_s - t_step
                de = second.energy_j - e_step
            util = first.util
        ends: list[float] = []
        energies: list[float] = []
        rand = self._rng.random
        t = t0
        for j in range(k_max):
            jit = 1.0 + _JITTER * (2.0 * rand() - 1.0)
            t += (t_step + j * dt) * jit
            ends.append(t)
            energies.append((e_step + j * de) * jit)
            if t >= deadline - 1e-9:
                break
        twin.record_steps(t0, ends, energies, clock, util)
        if len(ends) > 1 and not self._room_for(batch, len(ends)):
            twin.truncate(ends[0])
            del ends[1:]
        return ends

    def _room_for(self, batch: list[tuple[Seq, int]], k: int) -> bool:
        """Whether the KV pool has the blocks of k decode steps of `batch` (step 1's
        were allocated by the scheduler). Each request takes its blocks as the steps
        are committed (_commit_decode): nothing reads the pool before that."""
        free = self.sched.free_blocks
        # The scheduler gave each request the blocks of step 1, so steps 2..k take at
        # most ceil((k - 1) / 16) more each: when the pool has that, no pass is needed.
        if len(batch) * -(-(k - 1) // BLOCK_TOKENS) <= free:
            return True
        need = 0
        for s, _ in batch:
            need += -(-(s.num_computed + k - s.prefix_hit) // BLOCK_TOKENS) - s.own_blocks
        return need <= free

    # ---- committing steps -----------------------------------------------------------

    def _event(self, seq: Seq, t: float, finished: bool = False) -> None:
        prefill, decode = seq.pending_prefill, seq.pending_decode
        seq.pending_prefill = seq.pending_decode = 0
        seq.last_event_t = t
        if not finished and seq.first_sent and seq.progress is not None and not seq.events:
            # Inline progress: no event object, no wake-up of the consumer's task.
            if not seq.aborted:
                seq.progress(prefill, decode, seq.num_output)
            return
        if decode:
            seq.first_sent = True
        seq.push(TokenEvent(
            t_s=t,
            prefill_tokens=prefill,
            decode_tokens=decode,
            finished=finished,
            finish_reason="length" if finished else None,
            prompt_tokens=seq.prompt,
            output_tokens=seq.num_output,
        ))

    def _commit_step(self, batch: list[tuple[Seq, int]], t: float) -> None:
        sch = self.sched
        decoded = 0  # output tokens of the decode branch, added once
        for seq, n in batch:
            if seq.aborted:
                continue
            if n == 1 and seq.num_output:
                # Decode (the common case, kept lean): one more output token.
                seq.num_computed += 1
                out = seq.num_output = seq.num_output + 1
                seq.pending_decode += 1
                decoded += 1
                if out >= seq.max_tokens:
                    sch.finish(seq)
                    self._event(seq, t, finished=True)
                continue
            in_prefill = seq.num_output == 0 or seq.num_computed < seq.num_tokens - 1
            seq.num_computed += n
            if in_prefill:
                seq.pending_prefill += n
                sch.register_prefix(seq)
            if seq.num_computed == seq.num_tokens:
                seq.num_output += 1
                seq.pending_decode += 1
                self.output_tokens_total += 1
                if seq.num_output == 1:
                    self.prompt_tokens_total += seq.prompt
                if seq.num_output >= seq.max_tokens:
                    sch.finish(seq)
                    self._event(seq, t, finished=True)
                elif seq.num_output == 1:
                    self._event(seq, t)
        self.output_tokens_total += decoded
        self._flush(t)

    def _commit_decode(self, batch: list[tuple[Seq, int]], k: int, t: float) -> None:
        """Commit k steps of a pure-decode batch (the whole running set, in its order):
        tokens, finishes, each request's KV blocks, and the token events that are due,
        in one pass (this is _commit_step and _flush for the fast-forward path)."""
        sch = self.sched
        due = t - self.token_event_interval_s + 1e-9
        live = 0
        for seq, _ in batch:
            if seq.aborted:
                continue  # reaped before the next step; its consumer is gone
            live += 1
            seq.num_computed += k
            out = seq.num_output = seq.num_output + k
            seq.pending_decode += k
            if out >= seq.max_tokens:
                sch.finish(seq)
                self._event(seq, t, finished=True)
                continue
            # The blocks its tokens now fill (_plan checked that the pool had them).
            keep = -(-(seq.num_computed - seq.prefix_hit) // BLOCK_TOKENS)
            if keep != seq.own_blocks:
                sch.used_blocks += keep - seq.own_blocks
                seq.own_blocks = keep
            if seq.last_event_t <= due:
                progress = seq.progress
                if progress is not None and seq.first_sent and not seq.events:
                    # _event's inline branch, kept here: this is the hot loop.
                    prefill, decode = seq.pending_prefill, seq.pending_decode
                    seq.pending_prefill = seq.pending_decode = 0
                    seq.last_event_t = t
                    progress(prefill, decode, out)
                else:
                    self._event(seq, t)
        self.output_tokens_total += k * live

    def _flush(self, t: float) -> None:
        due = t - self.token_event_interval_s + 1e-9
        for seq in self.sched.running:
            if seq.pending_decode and seq.last_event_t <= due:
                progress = seq.progress
                if progress is not None and seq.first_sent and not seq.events:
                    # _event's inline branch, kept here: this is the hot loop.
                    prefill, decode = seq.pending_prefill, seq.pending_decode
                    seq.pending_prefill = seq.pending_decode = 0
                    seq.last_event_t = t
                    if not seq.aborted:
                        progress(prefill, decode, seq.num_output)
                else:
                    self._event(seq, t)

    def _report_state(self, t: float, force: bool = False) -> None:
        if t < self._next_state_t and not force:
            return
        self._next_state_t = t + _STATE_INTERVAL_S
        sch = self.sched
        self.twin.prune(t)
        self.ctx.emit(EngineStateEvent(
            t_s=t,
            running=len(sch.running),
            waiting=len(sch.waiting),
            kv_cache_pct=round(100.0 * sch.kv_usage(), 2),
            preempted_total=sch.preempted_total,
            prefix_hit_pct=round(100.0 * sch.prefix_hit_rate(), 2),
            output_tokens_total=self.output_tokens_total,
            prompt_tokens_total=self.prompt_tokens_total,
        ))
