"""What a run is asked to do (`RunConfig`), how it ended (`RunOutcome`), and the two
errors that end one before or while it runs. Kept apart from the runner so the set-up
helpers and the callers (CLI, sweeps, UI) share them without importing the runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.attribution import DEFAULT_PREFILL_WEIGHT
from app.core.knobs import ScheduledChange


class RunError(RuntimeError):
    """The run could not start or had to stop; one line for the user."""


class ConfigError(RunError):
    """The run was asked for something it cannot do here (a bad session path, a meter
    that cannot read, a knob value out of range): a usage error, exit 2."""


@dataclass(slots=True)
class RunConfig:
    workload: str = "sequential"
    workload_params: dict[str, Any] = field(default_factory=dict)
    engine: str = "sim"
    engine_options: dict[str, Any] = field(default_factory=dict)
    meters: list[str] = field(default_factory=lambda: ["auto"])
    gpus: list[int] | None = None
    batch_limit: int = 64
    power_cap_w: float | None = None
    allow_power_cap: bool = False
    max_tokens: int | None = None
    rate: float | None = None  # None: the workload's own default
    duration_s: float | None = None
    workflows: int | None = None
    seed: int = 0
    session_path: Path | None = None
    fast: bool = False
    schedule: list[ScheduledChange] = field(default_factory=list)
    drain_timeout_s: float = 30.0
    request_timeout_s: float | None = None
    max_consecutive_failures: int = 20
    prefill_weight: float = DEFAULT_PREFILL_WEIGHT
    poll_interval_s: float | None = None  # None: each meter's own (matched to the hardware)
    meter_options: dict[str, Any] = field(default_factory=dict)  # -M KEY=VALUE (dcgm...)
    # Workflows waiting for admission beyond which new arrivals are shed (open loop
    # only), as a real load generator does under overload: memory stays bounded.
    max_backlog: int = 1000
    # A default session name: if the file exists, the next free `-2`, `-3`... is used,
    # so two runs started in the same second (or in parallel) never collide.
    session_unique: bool = False
    # The session's size on long runs (app/core/session_writer.py): compress it to
    # NAME.jsonl.zst when it closes; record at most one meter sample per device and one
    # engine-state line per source every `session_thin_s` seconds (0: everything).
    session_compress: bool = False
    session_thin_s: float = 0.0
    # Starting knob values beyond the fields above (a sweep's grid point), by knob name,
    # and the source their knob events carry. An engine-restart knob (max_num_seqs) is
    # an engine option at start instead.
    start_knobs: dict[str, float | None] = field(default_factory=dict)
    start_knobs_source: str = "cli"
    # The autopilot's objective (`ttft_p90=2s,tpot_p90=80ms`) and its bounds
    # (`power_cap=300..700`); None: no autopilot (app/core/autopilot).
    autopilot: str | None = None
    autopilot_bounds: list[str] = field(default_factory=list)
    autopilot_prior: list[str] = field(default_factory=list)  # sweep folders / sessions


@dataclass(slots=True)
class RunOutcome:
    reason: str  # completed, interrupted, failed
    message: str
    session_path: Path | None
    summary: dict[str, Any]
    config_error: bool = False  # failed because of bad input (exit 2)
