"""The runner: opens meters, starts the engine, drives the workload, records it all.

Life of a run: meters open -> session header -> engine start -> poller start ->
initial knobs -> workflows arrive (closed loop or Poisson at the `rate` knob) until
the duration or workflow count is reached or a stop is requested -> drain (requests
already in the engine finish, queued ones are cancelled) -> engine stop -> a last
meter reading -> end record. Every exit path, Ctrl-C included, closes the session.

The runner orchestrates; one request's life (admission, streaming, its events, timeouts,
the consecutive-failure stop, the wait for its energy share) is app/core/request_life.py,
and the set-up paperwork (meters, session header, starting knobs) app/core/run_setup.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import engines
import workloads
import workloads.text
from app.core import knobs as knobmod
from app.core.admission import Admission
from app.core.attribution import EnergyAttributor
from app.core.autopilot.controller import Autopilot
from app.core.autopilot.objective import AutopilotError, parse_objective
from app.core.autopilot.params import params_from
from app.core.autopilot.prior import read_prior
from app.core.autopilot.stages import check_stages
from app.core.bus import EventBus
from app.core.clock import Clock, LoopClock
from app.core.config import ConfigError, RunConfig, RunError, RunOutcome
from app.core.events import (
    EndEvent,
    EngineStateEvent,
    ErrorEvent,
    Event,
    KnobEvent,
    MarkEvent,
    Sample,
    WorkflowEvent,
)
from app.core.poller import MAX_POLL_INTERVAL_S, MIN_POLL_INTERVAL_S, MeterPoller
from app.core.request_life import FinishQueue, RequestFailed, Requests
from app.core.run_setup import open_meters, session_header, starting_knobs
from app.core.stats import LiveStats
from engines.base import Engine, EngineContext, EngineError, HasTokenizer, Restartable
from meters.base import Meter, PowerCapError
from meters.powercap.controller import PowerCapController
from workloads.base import Workload, run_workflow

log = logging.getLogger(__name__)

# Callers import these from here (the runner's public API); they live in app.core.config
# and app.core.request_life so the set-up helpers share them without a cycle.
__all__ = ["ConfigError", "RequestFailed", "RunConfig", "RunError", "RunOutcome", "Runner"]


class Runner:
    def __init__(self, config: RunConfig, workload: Workload | None = None) -> None:
        if config.session_path is not None:
            config.session_path = Path(config.session_path)
        self.config = config
        self.bus = EventBus()
        self.stats = LiveStats()
        self.bus.subscribe(self.stats.on_event)
        self._workload = workload
        self.knobs: dict[str, float | None] = {}
        self._clock: Clock | None = None
        self._engine: Engine | None = None
        self._meters: list[Meter] = []
        self._poller: MeterPoller | None = None
        self._admission = Admission(config.batch_limit)
        self._attr = EnergyAttributor(config.prefill_weight)
        # Finished requests wait here for their energy share (the next meter reading).
        self._finishes = FinishQueue(self._attr, self.bus.publish)
        self._requests: Requests | None = None  # made in run(), once the engine exists
        self._recorder: Any = None
        self._stop: asyncio.Event | None = None  # created on the loop in run()
        self._stop_reason = "completed"
        self._stop_message = ""
        self._knob_changed: asyncio.Event | None = None
        # Workflows in progress, in arrival order (a dict, not a set: the drain cancels
        # them in this order, so a seeded run records the same session every time).
        self._active: dict[asyncio.Task[Any], None] = {}
        self._wall_t0 = 0.0
        self._config_error: str | None = None  # set when the run failed on bad input
        self._power: PowerCapController | None = None  # every cappable GPU of the run
        self._change_source = "cli"  # the source of the knob change being applied
        self._change_reason: str | None = None  # and its reason (the autopilot's)
        self.autopilot: Autopilot | None = None  # when the run has an objective
        self._restarting: asyncio.Task[None] | None = None  # a max_num_seqs restart
        self._shed = 0
        self._window_end_s: float | None = None  # when the measured window ended
        self._emergency_lock = threading.Lock()
        self._closed = False  # the end record is written (or being written)
        self._final_reason = "failed"
        self._final_message = ""
        self._schedule_fired: set[int] = set()  # id() of the --at changes that ran

    # -- public API (UI, CLI, sweeps) ------------------------------------------
    @property
    def clock(self) -> Clock:
        assert self._clock is not None, "run() has not started"
        return self._clock

    def publish(self, ev: Event) -> None:
        if isinstance(ev, Sample):
            self._attr.on_sample(ev)
            self.bus.publish(ev)
            self._finishes.flush()  # a reading may have settled finished requests
            return
        self.bus.publish(ev)

    @property
    def _reqs(self) -> Requests:
        """The run's requests (run() makes them once the engine exists)."""
        assert self._requests is not None, "run() has not made the engine"
        return self._requests

    @property
    def _draining(self) -> bool:
        return self._requests is not None and self._requests.closed

    # -- knobs: the one path that changes one -----------------------------------------
    def knob_bounds(self, name: str) -> tuple[float, float] | None:
        """The bounds in force here, inside the spec's own: the GPUs' range for the
        power cap. None: the spec's bounds are all there is."""
        spec = knobmod.spec(name)
        if spec.bounds_from == "device" and self._power is not None:
            return self._power.range_w()
        return None

    def knob_available(self, name: str) -> str | None:
        """Why `name` cannot be changed in this run, or None if it can."""
        spec = knobmod.spec(name)
        if spec.needs == "power_control":
            why = ("no meter here can set a GPU power limit" if self._power is None
                   else self._power.unavailable())
            return None if why is None else f"{name}: {why}"
        if spec.needs == "engine_restart" and not (
                isinstance(self._engine, Restartable) and name in self._engine.settings()):
            return f"engine {self.config.engine} cannot change {name}"
        return None

    def set_knob(self, name: str, value: float | None, source: str = "cli",
                 reason: str | None = None) -> None:
        """The one path that changes a knob (CLI, `--at`, sweeps, the dashboard's keys
        and `k`): validate against the bounds in force, apply, emit one `knob` event
        with the value asked, the value now in force and the value it replaced (and why,
        when a controller made it). Raises knobs.KnobError (one line) for a bad name or
        value."""
        v = self._validated(name, value)
        self._change_source = source
        self._change_reason = reason
        applied = knobmod.spec(name).apply(self, v)
        if applied is None:
            return  # under way (an engine restart): its event comes when it is done
        now, replaced = applied
        self.knobs[name] = now
        if self._knob_changed is not None:
            self._knob_changed.set()
        self.publish(KnobEvent(t_s=self.clock.now(), knob=name, value=now, previous=replaced,
                               requested=v, source=source, reason=reason))

    def _validated(self, name: str, value: float | None) -> float | None:
        """`value` as knob `name` takes it here: the knob can be changed in this run and
        the value is within the bounds in force. KnobError (one line) if not."""
        if (why := self.knob_available(name)) is not None:
            raise knobmod.KnobError(why)
        return knobmod.validate(name, value, self.knob_bounds(name))

    def limit_in_force(self, name: str) -> float | None:
        """What is in force for a knob that is unset: the GPUs' own power limit."""
        if knobmod.spec(name).needs == "power_control" and self._power is not None:
            return self._power.limit_in_force_w()
        return None

    def step_knob(self, name: str, direction: int, source: str = "ui"
                  ) -> tuple[float | None, float | None]:
        """One step up or down by the knob's own rule (the dashboard's keys), clamped
        to the bounds in force. Returns (before, after); equal at a bound."""
        if (why := self.knob_available(name)) is not None:
            raise knobmod.KnobError(why)
        before = self.knobs.get(name)
        # An unset power cap steps from the GPU's limit in force.
        in_force = self.limit_in_force(name)
        after = knobmod.step_value(name, before, direction, self.knob_bounds(name), in_force)
        if after != before:
            self.set_knob(name, after, source=source)
        return before, after

    # KnobTarget: how each knob acts (app/core/knobs.py names these in its specs).
    def set_power_cap(self, watts: float | None) -> tuple[float | None, float | None]:
        assert self._power is not None
        try:
            return self._power.apply(watts)
        except PowerCapError as exc:
            raise knobmod.KnobError(f"power_cap: {exc}") from None

    def set_batch_limit(self, n: int) -> tuple[float | None, float | None]:
        previous = self._admission.limit
        self._admission.set_limit(n)
        return n, previous

    def set_rate(self, per_s: float | None) -> tuple[float | None, float | None]:
        return per_s, self.knobs.get("rate")

    def set_max_tokens(self, n: int | None) -> tuple[float | None, float | None]:
        return n, self.knobs.get("max_tokens")

    def restart_engine(self, knob: str, value: int) -> None:
        # set_knob has checked the engine can (knob_available): Restartable, knob known.
        assert isinstance(self._engine, Restartable)
        if self._restarting is not None and not self._restarting.done():
            raise knobmod.KnobError(f"{knob}: a restart is already under way")
        self._restarting = asyncio.create_task(self._restart_engine(
            self._engine.restart, knob, value, self.knobs.get(knob), self._change_source,
            self._change_reason))

    async def _restart_engine(self, restart: Callable[..., Any], knob: str, n: int,
                              previous: float | None, source: str,
                              reason: str | None = None) -> None:
        """Drain (admit nobody, let requests inside the engine finish), restart the
        engine with the knob's new value, resume admission. Recorded as events."""
        self._admission.pause()
        self.publish(EngineStateEvent(t_s=self.clock.now(), source="client",
                                      note=f"draining to restart with {knob}={n}"))
        try:
            if left := await self._reqs.settle(self.config.drain_timeout_s):
                raise EngineError(f"{left} requests did not finish within "
                                  f"{self.config.drain_timeout_s:g} s")
            await restart(**{knob: n})
        except EngineError as exc:
            self.publish(ErrorEvent(t_s=self.clock.now(), source="engine",
                                    message=f"{knob}={n}: {exc}".splitlines()[0]))
            return
        finally:
            self._admission.resume()
        self.knobs[knob] = n
        self.publish(KnobEvent(t_s=self.clock.now(), knob=knob, value=n, previous=previous,
                               requested=n, source=source, reason=reason))

    def mark(self, label: str) -> None:
        self.publish(MarkEvent(t_s=self.clock.now(), label=label))

    def request_stop(self, reason: str = "interrupted", message: str = "") -> None:
        if self._stop is not None and not self._stop.is_set():
            self._stop_reason = reason
            self._stop_message = message
            self._stop.set()

    def emergency_close(self, reason: str, message: str) -> Path | None:
        """Close the session from another thread when the run's loop does not answer
        (the stop watchdog, after a termination signal): restore power limits, write the
        end record from what the live stats hold, fsync. The process is expected to exit
        right after. Returns the session path, or None when nothing was recorded."""
        with self._emergency_lock:
            if self._closed:
                return self.config.session_path if self._recorder is not None else None
            self._closed = True
        if self._power is not None:
            with contextlib.suppress(Exception):
                self._power.restore()
        recorder = self._recorder
        if recorder is None:
            return None
        summary: dict[str, Any] = {}
        for _ in range(3):  # the loop thread may be mutating the stats under us
            try:
                summary = self.stats.snapshot().to_dict()
                break
            except (RuntimeError, LookupError):  # a container changed size as it was read
                continue
        t = self.clock.now() if self._clock is not None else 0.0
        summary.update(message=message, closed_by="stop watchdog: the run did not stop in time",
                       window_end_s=self._window_end_s if self._window_end_s is not None else t,
                       wall_s=time.perf_counter() - self._wall_t0)
        with contextlib.suppress(Exception):
            recorder.write(ErrorEvent(t_s=t, source="run", fatal=reason == "failed",
                                      message=message))
        recorder.compress = False  # no time for it: the process exits right after
        with contextlib.suppress(Exception):
            recorder.close(EndEvent(t_s=t, reason=reason, summary=summary))
        return recorder.path

    @property
    def admission(self) -> Admission:
        return self._admission

    # -- set-up ------------------------------------------------------------------
    def _restore_power_caps(self) -> None:
        if self._power is None:
            return
        for r in self._power.restore():
            if r.ok:
                self.publish(KnobEvent(t_s=self.clock.now(), knob="power_cap", value=r.limit_w,
                                       previous=self.knobs.get("power_cap"),
                                       requested=r.limit_w, source="restore"))
                self.knobs["power_cap"] = r.limit_w
            else:
                self.publish(ErrorEvent(t_s=self.clock.now(), source="powercap",
                                        message=r.line(), fatal=False))

    def _make_workload(self) -> Workload:
        if self._workload is not None:
            return self._workload
        return workloads.create(self.config.workload, self.config.workload_params)

    def _knob_specs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, spec in knobmod.SPECS.items():
            lo, hi = self.knob_bounds(name) or (spec.minimum, spec.maximum)
            out[name] = {"unit": spec.unit, "minimum": lo, "maximum": hi,
                         "minimum_open": spec.minimum_open and lo == spec.minimum,
                         "unavailable": self.knob_available(name)}
        return out

    # -- driving --------------------------------------------------------------------
    async def _drive(self, workload: Workload, rng: random.Random) -> None:
        assert self._knob_changed is not None and self._stop is not None
        arrival = workload.arrival()
        count = 0
        limit = self.config.workflows
        wf_rng = random.Random(self.config.seed)

        def shed() -> bool:
            """Open loop under overload: drop this arrival, as a load generator must,
            rather than queue without bound. Recorded, counted, reported."""
            nonlocal count
            waiting = self._reqs.workflows_waiting
            if waiting < self.config.max_backlog:
                return False
            t = self.clock.now()
            if not self._shed:
                self.publish(ErrorEvent(
                    t_s=t, source="admission",
                    message=f"overload: {waiting} workflows wait for admission; new arrivals"
                            f" are shed until the backlog falls below {self.config.max_backlog}"
                            " (--max-backlog)"))
            self._shed += 1
            self.publish(WorkflowEvent(
                t_s=t, workflow_id=f"{workload.name}.shed{count}", workload=workload.name,
                phase="shed", reason=f"backlog full ({waiting} workflows waiting for admission)"))
            count += 1
            return True

        def spawn() -> None:
            nonlocal count
            spec = workload.workflow(count, wf_rng)
            count += 1
            task = asyncio.create_task(
                run_workflow(spec, self._reqs.submit, self.publish, self.clock, wf_rng,
                             max_tokens_cap=lambda: self._max_tokens())
            )
            self._active[task] = None
            task.add_done_callback(self._workflow_done)

        while not self._draining and (limit is None or count < limit):
            self._knob_changed.clear()
            rate = self.knobs.get("rate")
            if rate:
                wait = rng.expovariate(rate)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._knob_changed.wait(), wait)
                    continue  # a knob changed: draw the next gap at the new rate
                if not self._draining and not shed():
                    spawn()
            else:
                while len(self._active) < arrival.concurrency and (limit is None or count < limit):
                    spawn()
                await self._knob_changed.wait()
        # All arrivals made: wait for the workflows to finish.
        while self._active and not self._draining:
            self._knob_changed.clear()
            await self._knob_changed.wait()
        if not self._draining:
            self.request_stop("completed")

    def _max_tokens(self) -> int | None:
        v = self.knobs.get("max_tokens")
        return int(v) if v is not None else None

    def _workflow_done(self, task: asyncio.Task[Any]) -> None:
        self._active.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.publish(ErrorEvent(t_s=self.clock.now(), source="workflow", message=str(exc)))
        if self._knob_changed is not None:
            self._knob_changed.set()  # wakes the closed-loop driver

    async def _schedule(self, change: knobmod.ScheduledChange) -> None:
        await asyncio.sleep(max(0.0, change.at_s - self.clock.now()))
        self._schedule_fired.add(id(change))
        try:
            self.set_knob(change.knob, change.value, source="schedule")
        except knobmod.KnobError as exc:
            self.publish(ErrorEvent(t_s=self.clock.now(), source="schedule", message=str(exc)))

    async def _client_state(self) -> None:
        while True:
            self.publish(EngineStateEvent(
                t_s=self.clock.now(), source="client", running=self._admission.in_flight,
                waiting=self._admission.waiting,
                output_tokens_total=self._reqs.out_tokens_total,
                prompt_tokens_total=self._reqs.prompt_tokens_total,
            ))
            await asyncio.sleep(1.0)

    async def _deadline(self, duration_s: float) -> None:
        await asyncio.sleep(duration_s)
        self.request_stop("completed")

    # -- the run ------------------------------------------------------------------
    async def run(self, on_ready: Callable[[Runner], None] | None = None) -> RunOutcome:
        cfg = self.config
        if cfg.poll_interval_s is not None and not (
                MIN_POLL_INTERVAL_S <= cfg.poll_interval_s <= MAX_POLL_INTERVAL_S):
            raise ConfigError(f"poll interval {cfg.poll_interval_s:g} s is out of range "
                              f"({MIN_POLL_INTERVAL_S:g}-{MAX_POLL_INTERVAL_S:g} s)")
        if cfg.max_backlog < 1:
            raise ConfigError(f"max backlog must be at least 1, got {cfg.max_backlog}")
        self._clock = LoopClock()
        self._stop = asyncio.Event()
        self._knob_changed = asyncio.Event()
        self._wall_t0 = time.perf_counter()
        workload = self._make_workload()
        if cfg.autopilot is not None:
            # A stage the workload never runs is refused before anything starts (no
            # session file), not found out at the autopilot's first decision.
            try:
                check_stages(parse_objective(cfg.autopilot), workload, cfg.seed)
            except AutopilotError as exc:
                raise ConfigError(str(exc)) from None
        engine_options = {"seed": cfg.seed, **cfg.engine_options}
        for name, value in cfg.start_knobs.items():
            if knobmod.spec(name).needs == "engine_restart" and value is not None:
                engine_options[name] = int(value)  # at start an option, not a restart
        try:
            engine = engines.create(cfg.engine, EngineContext(self.clock, self.publish),
                                    engine_options)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
        except (ValueError, EngineError) as exc:
            raise ConfigError(f"engine {cfg.engine}: {exc}") from None
        self._engine = engine
        self._requests = Requests(
            engine=engine, clock=self.clock, admission=self._admission, attr=self._attr,
            finishes=self._finishes, publish=self.publish,
            on_failure_streak=lambda why: self.request_stop("failed", why),
            timeout_s=cfg.request_timeout_s,
            max_consecutive_failures=cfg.max_consecutive_failures)
        self._meters, meter_notes = open_meters(cfg, engine)
        # Remote GPUs share their energy among the requests of the endpoints they serve.
        infos = [asdict(m.info()) for m in self._meters]
        if any(d.get("node") for i in infos for d in i["devices"]):
            self._attr.map_endpoints(engine.info().details, infos)
        self._power = PowerCapController(self._meters, allow_persistent=cfg.allow_power_cap)
        start = starting_knobs(cfg)
        # What is in force before anything is set (the header's knobs); the values asked
        # for are then set through set_knob like any other change.
        self.knobs = {"power_cap": self._power.limit_in_force_w(),
                      "batch_limit": self._admission.limit,
                      "rate": workload.arrival().rate_per_s, "max_tokens": None,
                      **(engine.settings() if isinstance(engine, Restartable) else {})}
        background: list[asyncio.Task[Any]] = []
        reason, message = "failed", ""
        try:
            # Checked before the engine starts, so a bad value leaves no session file.
            self._check_start(start)
            try:
                await engine.start()
            except Exception as exc:
                raise RunError(f"engine {cfg.engine} failed to start: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                               ) from None
            # The header is written once the engine has started: it knows its model then.
            header = session_header(cfg, self.clock, workload, engine, self._meters,
                                    self.knobs, self._knob_specs())
            self.bus.publish(header)  # live subscribers see the configuration too
            if cfg.session_path is not None:
                from app.core.session_writer import SessionError, SessionRecorder

                recorder = SessionRecorder(cfg.session_path, thin_s=cfg.session_thin_s,
                                           compress=cfg.session_compress)
                try:
                    recorder.open(header, unique=cfg.session_unique)
                except (SessionError, OSError) as exc:
                    raise ConfigError(str(exc).splitlines()[0]) from None
                cfg.session_path = recorder.path  # a default name may have moved on
                self._recorder = recorder
                self.bus.subscribe(recorder.write)
            for note in meter_notes:
                self.publish(ErrorEvent(t_s=self.clock.now(), source="meters", message=note))
            if not self._meters and "none" not in cfg.meters:
                self.publish(ErrorEvent(t_s=self.clock.now(), source="meters",
                                        message="no meter can read here: energy is not measured"))
            tokenizer = engine.tokenizer() if isinstance(engine, HasTokenizer) else None
            if tokenizer is not None:
                # The runner owns the tokenizer (engines never reach into workloads):
                # prompts hit their token targets under the engine's own.
                workloads.text.set_tokenizer(tokenizer)
            self._poller = MeterPoller(self._meters, self.clock, self.publish,
                                       interval_s=cfg.poll_interval_s)
            self._poller.start()
            await asyncio.sleep(0)  # let the poller take its baseline reading
            self._apply_start(start)
            if cfg.autopilot is not None:
                background.append(self._start_autopilot(cfg.autopilot, cfg.autopilot_bounds,
                                                        cfg.autopilot_prior))
            background.append(asyncio.create_task(self._client_state()))
            for change in cfg.schedule:
                background.append(asyncio.create_task(self._schedule(change)))
            if cfg.duration_s is not None:
                background.append(asyncio.create_task(self._deadline(cfg.duration_s)))
            if on_ready is not None:
                on_ready(self)
            driver = asyncio.create_task(self._drive(workload, random.Random(cfg.seed + 1)))
            background.append(driver)
            stop_wait = asyncio.create_task(self._stop.wait())
            await asyncio.wait({driver, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if driver.done() and not driver.cancelled() and driver.exception() is not None:
                raise driver.exception()  # type: ignore[misc]
            stop_wait.cancel()
            reason, message = self._stop_reason, self._stop_message
            self._end_window()
            await self._drain(graceful=reason == "completed")
        except knobmod.KnobError as exc:
            reason, message = "failed", str(exc)
            await self._drain(graceful=False)
        except ConfigError as exc:
            reason, message = "failed", str(exc)
            self._config_error = str(exc)
            await self._drain(graceful=False)
        except asyncio.CancelledError:
            reason, message = "interrupted", "cancelled"
            await self._drain(graceful=False)
        except RunError as exc:
            reason, message = "failed", str(exc)
            await self._drain(graceful=False)
        except Exception as exc:  # a bug or an engine crash: record it, close cleanly
            reason, message = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.publish(ErrorEvent(t_s=self.clock.now(), source="runner", fatal=True,
                                    message="".join(traceback.format_exception(exc))))
            await self._drain(graceful=False)
        finally:
            if self._restarting is not None:
                background.append(self._restarting)
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            summary = await self._close(reason, message)
        reason, message = self._final_reason, self._final_message
        recorded = cfg.session_path if self._recorder is not None else None
        return RunOutcome(reason, message, recorded, summary,
                          config_error=self._config_error is not None)

    def _start_autopilot(self, objective: str, bounds: list[str],
                         prior: list[str] | None = None) -> asyncio.Task[None]:
        """The autopilot as one more subscriber of the run's events, acting through
        set_knob (app/core/autopilot); warm-started from a sweep's sessions if given."""
        try:
            obj = parse_objective(objective)
            params = params_from(bounds)
            pilot = Autopilot(self, obj, params, self.publish, self.clock.now,
                              read_prior(prior, obj, params) if prior else None)
        except AutopilotError as exc:
            raise ConfigError(str(exc)) from None
        self.autopilot = pilot
        self.bus.subscribe(pilot.on_event)
        pilot.start()
        return asyncio.create_task(pilot.run(), name="autopilot")

    def _check_start(self, start: dict[str, tuple[float | None, str]]) -> None:
        """Every starting value and every `--at` change against the bounds in force
        here (the GPU's power-limit range...), before anything starts: ConfigError."""
        for name, (value, _) in start.items():
            spec = knobmod.SPECS.get(name)
            flag = spec.flag if spec is not None and spec.flag else name
            if spec is not None and spec.needs == "engine_restart":
                continue  # an engine option at start (see _engine_options)
            try:
                self._validated(name, value)
            except knobmod.KnobError as exc:
                text = str(exc).removeprefix(name + ": ").removeprefix(name + " ")
                raise ConfigError(f"{flag}: {text}") from None
        for change in self.config.schedule:
            try:
                self._validated(change.knob, change.value)
            except knobmod.KnobError as exc:
                raise ConfigError(f"--at {change.at_s:g}:{change.knob}: {exc}") from None

    def _apply_start(self, start: dict[str, tuple[float | None, str]]) -> None:
        """Every knob's starting value is a knob event: set through set_knob when asked
        for, else recorded as found (`start`)."""
        for name in knobmod.KNOB_NAMES:
            spec = knobmod.SPECS[name]
            if name in start and spec.needs != "engine_restart":
                value, source = start[name]
                self.set_knob(name, value, source=source)
            elif name in self.knobs and (spec.needs != "power_control" or (
                    self._power is not None and self._power.available)):
                # Recorded as found, also where it cannot be changed (a real GPU without
                # --allow-power-cap): what was in force is part of the measurement.
                value = self.knobs.get(name)
                source = start[name][1] if name in start else "start"
                self.publish(KnobEvent(t_s=self.clock.now(), knob=name, value=value,
                                       previous=None, requested=value if name in start else None,
                                       source=source))

    def _end_window(self) -> None:
        """The measured window ends here (duration reached, or a stop): what follows is
        the drain, shown apart by report and the summary."""
        if self._window_end_s is not None:
            return
        self._window_end_s = t = self.clock.now()
        self.publish(EngineStateEvent(
            t_s=t, source="client", running=self._admission.in_flight,
            waiting=self._admission.waiting,
            note=f"drain: measured window ended at {t:.1f} s; {self._reqs.in_engine} requests"
                 f" in the engine may finish, {self._admission.waiting} waiting are cancelled"))

    async def _drain(self, graceful: bool) -> None:
        """Stop new work; let requests already in the engine finish (graceful) or
        cancel them; cancel everything still queued for admission."""
        self._reqs.closed = True  # no request is admitted from here on
        if self._knob_changed is not None:
            self._knob_changed.set()
        if graceful:
            await self._reqs.settle(self.config.drain_timeout_s)
        for t in list(self._active):
            t.cancel()
        await asyncio.gather(*list(self._active), return_exceptions=True)

    async def _close(self, reason: str, message: str) -> dict[str, Any]:
        if self._engine is not None:
            try:
                await self._engine.stop()
            except Exception as exc:
                self.publish(ErrorEvent(t_s=self.clock.now(), source="engine",
                                        message=f"stop failed: {exc}"))
        workloads.text.set_tokenizer(None)
        self._restore_power_caps()
        if self._poller is not None:
            await self._poller.stop()
        self._finishes.flush(force=True)  # no reading will come: publish what is held
        for m in self._meters:
            with contextlib.suppress(Exception):
                m.close()
        for change in self.config.schedule:
            if id(change) not in self._schedule_fired and self._clock is not None:
                self.publish(ErrorEvent(
                    t_s=self.clock.now(), source="schedule",
                    message=f"--at {change.at_s:g}:{change.knob}=... never ran: the run ended at"
                            f" {self._window_end_s or self.clock.now():.1f} s"))
        snap = self.stats.snapshot()
        last_failure = self._reqs.last_failure
        if (reason == "completed" and snap.requests_finished == 0 and snap.requests_failed > 0):
            # A run in which nothing succeeded failed, however long it was meant to last.
            reason = "failed"
            message = (f"all {snap.requests_failed} requests failed; the last error: "
                       f"{last_failure or 'unknown'}")
        elif reason == "failed" and last_failure and last_failure not in message \
                and snap.requests_finished == 0 and snap.requests_failed > 0:
            message = f"{message} (the last request error: {last_failure})"
        self._final_reason, self._final_message = reason, message
        end_t = self.clock.now()
        window_end = self._window_end_s if self._window_end_s is not None else end_t
        measured = self._attr.measured_j()
        summary = snap.to_dict()
        summary.update(
            idle_energy_j=dict(self._attr.idle_j),
            **({"idle_energy_by_node_j": dict(self._attr.idle_by_node_j)}
               if self._attr.idle_by_node_j else {}),
            attributed_energy_j=dict(self._attr.attributed_j),
            measured_energy_j=measured,
            wall_s=time.perf_counter() - self._wall_t0,
            message=message,
            window_end_s=window_end,
            drain_s=max(0.0, end_t - window_end),
        )
        # Without a session (bad input, or the engine never started) the CLI's own line
        # says it all; with one, the failure is recorded as an event too.
        if message and reason != "completed" and self._recorder is not None:
            self.publish(ErrorEvent(t_s=self.clock.now(), source="run", message=message,
                                    fatal=reason == "failed"))
        end = EndEvent(t_s=self.clock.now(), reason=reason, summary=summary)
        with self._emergency_lock:
            already = self._closed  # the stop watchdog closed the session first
            self._closed = True
        if self._recorder is not None and not already:
            self.bus.unsubscribe(self._recorder.write)
            from app.core.session_writer import SessionError

            try:
                self._recorder.close(end)
            except SessionError as exc:
                self._final_reason = "failed"
                self._final_message = f"session could not be written: {exc}"
            self.config.session_path = self._recorder.path  # NAME.jsonl.zst if compressed
        self.bus.publish(end)
        self.bus.close()
        return summary
