"""One request's life, from submission to its last event.

submitted -> waiting for admission (the batch limit) -> streamed from the engine
(first token, token counts) -> finished or failed. Each step is a request event; a
finished or failed one waits in `FinishQueue` until the meters have read past it, so it
carries its energy share. A request that fails (engine error, timeout) counts towards
the consecutive-failure stop; one cancelled by the end of the run does not.

The runner owns one `Requests` per run and hands `Requests.submit` to the workload
drivers; everything here runs on the run's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from app.core.admission import Admission
from app.core.attribution import EnergyAttributor
from app.core.clock import Clock
from app.core.events import RUN_ENDED, WORKFLOW_FAILED, Event, RequestEvent
from engines.base import Engine, EngineError, InlineProgress, Request
from workloads.base import CallResult

#: Stands in for asyncio.timeout(None) (the default: no request timeout), which costs
#: a context object and a look-up of the current task for each request.
_NO_TIMEOUT = contextlib.nullcontext()


class RequestFailed(RuntimeError):
    """A request ended without a finish (engine error, timeout, the run's end)."""


class FinishQueue:
    """Finished and failed request events, held until their energy is known: a
    request's share of the interval in which it ended is known only at each device's
    next reading."""

    def __init__(self, attr: EnergyAttributor, publish: Callable[[Event], None]) -> None:
        self._attr = attr
        self._publish = publish
        self._pending: list[RequestEvent] = []

    def put(self, ev: RequestEvent) -> None:
        self._pending.append(ev)
        if self._attr.ready_before(ev.t_s):
            # Only then can anything be flushed (no meters, or a reading already past
            # it); scanning on every finish would be quadratic in a mass cancellation.
            self.flush()

    def flush(self, force: bool = False) -> None:
        """Publish every held event whose energy is known (all of them with `force`:
        the run is over and no reading will come)."""
        if not self._pending:
            return
        keep: list[RequestEvent] = []
        for ev in self._pending:
            if force or self._attr.ready_before(ev.t_s):
                energy = self._attr.take(ev.request_id)
                ev.energy_j = energy or None
                self._publish(ev)
            else:
                keep.append(ev)
        self._pending = keep


class Requests:
    """The requests of one run: each one's way through admission and the engine, the
    counts the run reports (tokens, requests in the engine, workflows waiting), and the
    consecutive-failure stop."""

    def __init__(self, *, engine: Engine, clock: Clock, admission: Admission,
                 attr: EnergyAttributor, finishes: FinishQueue,
                 publish: Callable[[Event], None], on_failure_streak: Callable[[str], None],
                 timeout_s: float | None, max_consecutive_failures: int) -> None:
        self._engine = engine
        # Checked once: isinstance() against a runtime Protocol walks its attributes,
        # tens of microseconds that every request would pay.
        self._inline = isinstance(engine, InlineProgress)
        self._clock = clock
        self._admission = admission
        self._attr = attr
        self._finishes = finishes
        self._publish = publish
        self._on_failure_streak = on_failure_streak  # asks the run to stop, with why
        self._timeout_s = timeout_s
        self._max_failures = max_consecutive_failures
        self.closed = False  # the run is draining: no request is admitted any more
        self._in_engine: dict[str, asyncio.Task[Any]] = {}
        # Workflow id -> its requests waiting for admission: the backlog that sheds
        # open-loop arrivals is counted in workflows, not requests.
        self._wf_waiting: dict[str, int] = {}
        self._consecutive_failures = 0
        self._streak_reasons: set[str] = set()  # distinct reasons in the failure streak
        self.last_failure: str | None = None  # the engine's last error, as it said it
        self.out_tokens_total = 0
        self.prompt_tokens_total = 0

    @property
    def in_engine(self) -> int:
        """Requests admitted and not yet ended."""
        return len(self._in_engine)

    @property
    def workflows_waiting(self) -> int:
        """Workflows with at least one request waiting for admission."""
        return len(self._wf_waiting)

    async def settle(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for the requests inside the engine to end; returns
        how many are still there. A timeout does not cancel them."""
        if self._in_engine:
            # asyncio.wait, not gather: a timeout must not cancel the requests.
            await asyncio.wait(list(self._in_engine.values()), timeout=timeout_s)
        return len(self._in_engine)

    async def submit(self, req: Request) -> CallResult:
        """Run one request to its end (the workloads' `submit`). Raises RequestFailed
        when it ends without a finish; its failed event is queued either way."""
        clock = self._clock
        if self.closed:
            raise RequestFailed(RUN_ENDED)
        t_sub = clock.now()
        base = dict(request_id=req.request_id, workflow_id=req.workflow_id, stage=req.stage,
                    node=req.node, parents=req.parents, prompt_tokens=req.prompt_tokens,
                    max_tokens=req.max_tokens)
        self._publish(RequestEvent(t_s=t_sub, phase="submitted", **base))  # type: ignore[arg-type]
        await self._admit(req, base, t_sub)
        t_adm = clock.now()
        self._attr.on_admit(req.request_id, req.prompt_tokens)
        t_first: float | None = None
        out_tokens = 0
        prompt_tokens = req.prompt_tokens
        text: list[str] = []
        finish_reason: str | None = None
        self._in_engine[req.request_id] = asyncio.current_task()  # type: ignore[assignment]
        rid = req.request_id
        on_work = self._attr.on_work

        def progress(prefill: int, decode: int, output: int) -> None:
            # An engine's inline progress (InlineProgress): what the loop below does
            # for an event after the first token, without waking this task.
            nonlocal out_tokens, t_first
            on_work(rid, prefill, decode)
            if prefill:
                self.prompt_tokens_total += prefill
            if decode:
                self.out_tokens_total += decode
                if t_first is None:  # not for a well-behaved engine; kept for safety
                    t_first = clock.now()
                    self._publish(RequestEvent(t_s=t_first, phase="first_token",
                                               ttft_s=t_first - t_sub, **base))  # type: ignore[arg-type]
            out_tokens = output

        engine = self._engine
        try:
            async with (asyncio.timeout(self._timeout_s) if self._timeout_s is not None
                        else _NO_TIMEOUT), contextlib.aclosing(
                engine.generate_inline(req, progress) if self._inline  # type: ignore[attr-defined]
                else engine.generate(req)  # type: ignore[type-var]
            ) as stream:
                async for tev in stream:
                    if tev.endpoint is not None:  # where it went: on its later records
                        base["endpoint"] = tev.endpoint
                        self._attr.on_endpoint(req.request_id, tev.endpoint)
                    self._attr.on_work(req.request_id, tev.prefill_tokens, tev.decode_tokens)
                    if tev.decode_tokens:
                        if t_first is None:
                            t_first = tev.t_s
                            self._publish(RequestEvent(t_s=tev.t_s, phase="first_token",
                                                       ttft_s=tev.t_s - t_sub, **base))  # type: ignore[arg-type]
                        out_tokens += tev.decode_tokens
                        self.out_tokens_total += tev.decode_tokens
                    if tev.prefill_tokens:
                        self.prompt_tokens_total += tev.prefill_tokens
                    if tev.text:
                        text.append(tev.text)
                    if tev.prompt_tokens is not None:
                        prompt_tokens = tev.prompt_tokens
                    if tev.output_tokens is not None:
                        out_tokens = tev.output_tokens
                    if tev.finished:
                        finish_reason = tev.finish_reason or "stop"
                        break
            if finish_reason is None:
                raise EngineError("stream ended without a finish")
        except asyncio.CancelledError:
            self._fail(base, t_sub, t_first, out_tokens, self._cancel_reason())
            raise
        except TimeoutError:
            reason = f"timeout after {self._timeout_s:g} s"
            self._fail(base, t_sub, t_first, out_tokens, reason)
            self._count_failure(reason)
            raise RequestFailed(reason) from None
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._fail(base, t_sub, t_first, out_tokens, reason)
            self._count_failure(reason)
            raise RequestFailed(reason) from None
        finally:
            self._in_engine.pop(req.request_id, None)
            self._attr.on_done(req.request_id)
            self._admission.release()
        self._consecutive_failures = 0
        self._streak_reasons.clear()
        t_end = clock.now()
        tpot = (t_end - t_first) / (out_tokens - 1) if t_first is not None and out_tokens > 1 else None
        self._finishes.put(RequestEvent(
            t_s=t_end, phase="finished", latency_s=t_end - t_sub, queue_s=t_adm - t_sub,
            ttft_s=(t_first - t_sub) if t_first is not None else None, tpot_s=tpot,
            reason=finish_reason, **{**base, "prompt_tokens": prompt_tokens},  # type: ignore[arg-type]
            output_tokens=out_tokens,
        ))
        return CallResult(req.request_id, "".join(text), prompt_tokens, out_tokens)

    async def _admit(self, req: Request, base: dict[str, Any], t_sub: float) -> None:
        """Wait for a slot under the batch limit, counted in the request's workflow
        while it waits. A request cancelled here, or admitted after the run began to
        drain, ends as failed with RUN_ENDED."""
        wid = req.workflow_id
        queued = not self._admission.can_admit_now()
        if queued:
            self._wf_waiting[wid] = self._wf_waiting.get(wid, 0) + 1
        try:
            await self._admission.acquire()
        except asyncio.CancelledError:
            self._fail(base, t_sub, None, 0, self._cancel_reason())
            raise
        finally:
            if queued:
                left = self._wf_waiting[wid] - 1
                if left:
                    self._wf_waiting[wid] = left
                else:
                    del self._wf_waiting[wid]
        if self.closed:
            self._admission.release()
            self._fail(base, t_sub, None, 0, RUN_ENDED)
            raise RequestFailed(RUN_ENDED)

    def _cancel_reason(self) -> str:
        """Why a request was cancelled: the run is draining (cut off by its end), or,
        before that, a sibling call failed and its workflow cancelled the rest."""
        return RUN_ENDED if self.closed else WORKFLOW_FAILED

    def _fail(self, base: dict[str, Any], t_sub: float, t_first: float | None,
              out_tokens: int, reason: str) -> None:
        t = self._clock.now()
        self._finishes.put(RequestEvent(
            t_s=t, phase="failed", latency_s=t - t_sub,
            ttft_s=(t_first - t_sub) if t_first is not None else None,
            output_tokens=out_tokens, reason=reason, **base,
        ))

    def _count_failure(self, reason: str) -> None:
        self._consecutive_failures += 1
        self.last_failure = reason
        if len(self._streak_reasons) < 8:
            self._streak_reasons.add(reason)
        n = self._consecutive_failures
        if n >= self._max_failures:
            # Name what the engine said, not a guess: a prompt longer than the model's
            # context is not "the engine looks down".
            if len(self._streak_reasons) == 1:
                msg = f"{n} requests failed in a row, all with: {reason}"
            else:
                msg = f"{n} requests failed in a row; the last error: {reason}"
            self._on_failure_streak(msg)
