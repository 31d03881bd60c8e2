"""How to put a saved limit back without the run's meter (after a crash: `wattflow
restore`, or the guard when the live meter is already closed), by the meter that saved
it. A registry, loaded lazily: restoring NVML limits must not need anything else."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from meters.powercap.result import RestoreResult

Restorer = Callable[[list[dict[str, Any]]], list[RestoreResult]]

# meter name -> "module:function"; a meter whose limits outlive the process (real
# hardware) registers here. The twin's limits die with the run: nothing to restore.
_RESTORERS: dict[str, str] = {
    "nvml": "meters.nvml.restore:restore_limits",
}


def register_restorer(meter: str, target: str) -> None:
    _RESTORERS[meter] = target


def restorer_for(meter: str) -> Restorer | None:
    target = _RESTORERS.get(meter)
    if target is None:
        return None
    module, _, name = target.partition(":")
    fn: Restorer = getattr(importlib.import_module(module), name)
    return fn
