"""`wattflow doctor`: every meter and control, what it can read or set here, and why
not; then the options of every engine (`-E KEY=VALUE`) and meter (set by the run's
flags), from the schema each declares. One line each; always exits 0 (it reports, it does not judge)."""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from typing import Any

from meters.base import MeterUnavailable
from meters.powercap.guard import StateFileError, default_state_path, holder_alive, read_state

_CAP_SYS_ADMIN = 21


def _can_admin() -> bool:
    """Root, or CAP_SYS_ADMIN in the effective set (what NVML wants for a limit)."""
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


def _gpus(args: argparse.Namespace) -> list[int] | None:
    value = getattr(args, "gpus", None)
    if value is None or isinstance(value, list):
        return value
    try:
        return [int(x) for x in str(value).split(",") if x.strip()]
    except ValueError:
        return None


def _line(section: str, name: str, ok: bool, text: str) -> str:
    return f"{section:<9} {name:<10} {'ok' if ok else 'no':<3} {text}"


def _sim_line() -> str:
    if importlib.util.find_spec("meters.sim.meter") is None:
        return _line("meter", "sim", False, "the simulated twin is not installed")
    return _line("meter", "sim", True, "the simulated GPU twin (with --engine sim)")


def _nvml_lines(options: dict[str, Any]) -> tuple[list[str], list[str]]:
    from meters.nvml.meter import NvmlMeter

    try:
        meter = NvmlMeter.from_options(options)
        meter.open()
    except (MeterUnavailable, ValueError) as exc:
        why = str(exc).removeprefix("nvml: ")
        return [_line("meter", "nvml", False, why)], [
            _line("control", "power cap", False, "no NVIDIA GPU readable here")
        ]
    try:
        info = meter.info()
        meters, controls = [], []
        admin = _can_admin()
        for d in info.devices:
            has = ", ".join(d.channels)
            meters.append(_line("meter", "nvml", True, f"{d.device} {d.name}: {has}"))
            if d.power_limit_range_w is None:
                controls.append(_line("control", "power cap", False, f"{d.device}: not supported"))
                continue
            lo, hi = d.power_limit_range_w
            now = f", now {d.power_limit_w:g} W" if d.power_limit_w is not None else ""
            how = "with --allow-power-cap" if admin else "needs root or CAP_SYS_ADMIN (not held)"
            controls.append(
                _line("control", "power cap", admin, f"{d.device}: {lo:g}-{hi:g} W{now}; {how}")
            )
        meters += [_line("meter", "nvml", True, f"note: {n}") for n in info.notes]
        return meters, controls
    finally:
        meter.close()


def _rapl_line(options: dict[str, Any]) -> str:
    from meters.rapl.meter import RaplMeter

    try:
        meter = RaplMeter.from_options(options)
        meter.open()
    except (MeterUnavailable, ValueError, OSError) as exc:
        return _line("meter", "rapl", False, str(exc).removeprefix("rapl: "))
    try:
        devices = ", ".join(f"{d.device} ({d.name})" for d in meter.info().devices)
        return _line("meter", "rapl", True, devices)
    finally:
        meter.close()


def _state_line(path: Path) -> str:
    try:
        state = read_state(path)
    except StateFileError as exc:
        return _line("state", "power cap", False, str(exc))
    if state is None or not state["entries"]:
        return _line("state", "power cap", True, f"no caps left behind ({path})")
    devices = ", ".join(f"{e.get('device')} {e['limit_w']:g} W" for e in state["entries"])
    if holder_alive(state):
        return _line("state", "power cap", True, f"run pid {state.get('pid')} holds: {devices}")
    return _line(
        "state", "power cap", False, f"a killed run left caps ({devices}): run `wattflow restore`"
    )


def _option_lines() -> list[str]:
    """Name, type, bounds, default and help of every option an engine or meter takes."""
    import engines
    import meters

    out: list[str] = []
    for kind, registry in (("engine", engines.REGISTRY), ("meter", meters.REGISTRY)):
        for name in registry.names():
            head = f"{'option':<9} {kind} {name}:"
            try:
                schema = registry.options(name)
            except Exception as exc:  # a plugin that cannot load here must not hide the rest
                out.append(f"{head} cannot be loaded here ({exc})".splitlines()[0])
                continue
            if schema is None or not schema.options:
                out.append(f"{head} none")
                continue
            out += [f"{head} {line}" for line in schema.describe()]
    return out


def run(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"gpus": _gpus(args)}
    if getattr(args, "powercap_root", None):
        options["powercap_root"] = args.powercap_root
    nvml_meters, controls = _nvml_lines(options)
    lines = [_sim_line(), *nvml_meters, _rapl_line(options), *controls, *_option_lines()]
    lines.append(_state_line(Path(getattr(args, "state", None) or default_state_path())))
    for line in lines:
        print(line)
    return 0
