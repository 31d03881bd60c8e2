"""Set-up steps of a run that need nothing of the running loop: the meters asked for,
the session header, the starting knob values asked for. The runner calls them in order;
kept here so `Runner` reads as the run's life, not its paperwork."""

from __future__ import annotations

import os
import platform
import socket
import time
from dataclasses import asdict
from typing import Any

import meters
from app.core.clock import Clock
from app.core.config import ConfigError, RunConfig
from app.core.events import SessionHeader
from engines.base import Engine
from meters.base import Meter, MeterUnavailable
from workloads.base import Workload


def open_meters(cfg: RunConfig, engine: Engine) -> tuple[list[Meter], list[str]]:
    """The meters asked for, open. `auto` takes what can read here (the twin for the
    sim engine, else NVML and RAPL) and says why it skipped the rest (the notes); a meter
    named explicitly that cannot read is a ConfigError."""
    notes: list[str] = []
    out: list[Meter] = []
    opts: dict[str, Any] = {**cfg.meter_options, "engine": engine, "gpus": cfg.gpus}
    if cfg.poll_interval_s is not None:
        opts["poll_interval_s"] = cfg.poll_interval_s
    for name in list(cfg.meters):
        if name == "none":
            continue
        if name == "auto":
            if cfg.engine == "sim":
                names_auto = ["sim"]
            else:
                names_auto = [n for n in ("nvml", "rapl") if n in meters.names()]
            for n in names_auto:
                m = meters.create(n, opts)
                try:
                    m.open()
                except MeterUnavailable as exc:
                    notes.append(f"meter {n} unavailable: {exc}")
                    continue
                out.append(m)
            continue
        try:
            m = meters.create(name, opts)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
        except (MeterUnavailable, ValueError) as exc:  # a bad -M option or target
            text = str(exc).splitlines()[0]
            raise ConfigError(text if text.startswith(name) else f"meter {name}: {text}"
                              ) from None
        try:
            m.open()
        except MeterUnavailable as exc:
            raise ConfigError(f"meter {name}: {exc}") from None
        out.append(m)
    return out, notes


def session_header(cfg: RunConfig, clock: Clock, workload: Workload, engine: Engine,
                   meter_list: list[Meter], knobs: dict[str, float | None],
                   knob_specs: dict[str, Any]) -> SessionHeader:
    """The session's first record: the full configuration, host, engine, workload,
    meters, and the knobs in force before anything is set."""
    config = asdict(cfg)
    config["session_path"] = str(cfg.session_path) if cfg.session_path else None
    config["schedule"] = [asdict(c) for c in cfg.schedule]
    einfo = engine.info()
    return SessionHeader(
        t_s=0.0,
        name=cfg.session_path.stem if cfg.session_path else "",
        started_unix_s=time.time(),
        clock="virtual" if clock.virtual else "wall",
        config=config,
        host={
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "pid": os.getpid(),
        },
        engine=asdict(einfo),
        workload={"name": workload.name, "params": workload.params()},
        meters=[asdict(m.info()) for m in meter_list],
        knobs=dict(knobs),
        knob_specs=knob_specs,
    )


def starting_knobs(cfg: RunConfig) -> dict[str, tuple[float | None, str]]:
    """Each knob's starting value asked for and where it came from: `cli` (the run's
    configuration) or the sweep's source. Knobs not here start as found."""
    given: dict[str, float | None] = {"batch_limit": cfg.batch_limit}
    if cfg.power_cap_w is not None:
        given["power_cap"] = cfg.power_cap_w
    if cfg.rate is not None:
        given["rate"] = cfg.rate
    if cfg.max_tokens is not None:
        given["max_tokens"] = cfg.max_tokens
    out = {name: (value, "cli") for name, value in given.items()}
    for name, value in cfg.start_knobs.items():
        out[name] = (value, cfg.start_knobs_source)
    return out
