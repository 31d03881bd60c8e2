"""The power-cap ability a meter declares by implementing it (NVML, the twin, a future
remote meter). No name checks: the controller asks `isinstance(meter, PowerCapControl)`
and, for real hardware, `meter.power_cap_persists` (the limit outlives the process, so
it needs permission, a saved original and a restore on every exit path)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class PowerCapControl(Protocol):
    #: True for real hardware: the limit stays after the process ends. The twin: False.
    power_cap_persists: bool

    def set_power_limit(self, device: str, watts: float) -> None:
        """Raise meters.base.PowerCapError (one line) if `device` cannot take `watts`."""
        ...

    def power_limit_record(self, device: str) -> dict[str, Any]:
        """What the guard saves before the first change: at least `meter`, `device` and
        `limit_w` (the limit in force now), plus what finds the device again after a
        crash (NVML: `uuid`, `index`)."""
        ...
