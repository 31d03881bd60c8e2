"""The power cap of a run: every GPU whose meter declares the `PowerCapControl` ability,
its range, the limit in force, setting a new one and putting the original back.

Real hardware (`power_cap_persists`) needs the run's permission (`--allow-power-cap`)
and goes through a `PowerCapGuard`, created at the first change, which saves the limit
in force to disk before touching it and restores it on every exit path. The twin's
limit dies with the run: it is set directly and needs no permission.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meters.base import Meter, PowerCapError
from meters.powercap.control import PowerCapControl
from meters.powercap.guard import PowerCapGuard
from meters.powercap.result import RestoreResult


@dataclass(slots=True)
class CapDevice:
    meter: Any  # a Meter that is a PowerCapControl
    device: str
    range_w: tuple[float, float]
    limit_w: float | None  # in force when the run started

    @property
    def persists(self) -> bool:
        return bool(self.meter.power_cap_persists)


class PowerCapController:
    def __init__(self, meters: list[Meter], *, allow_persistent: bool,
                 guard_factory: Callable[[], PowerCapGuard] = PowerCapGuard) -> None:
        self.allow_persistent = allow_persistent
        self._guard_factory = guard_factory
        self._guard: PowerCapGuard | None = None
        self.devices: list[CapDevice] = []
        for m in meters:
            if not isinstance(m, PowerCapControl):
                continue
            for d in m.info().devices:
                if d.component == "gpu" and d.power_limit_range_w is not None:
                    lo, hi = d.power_limit_range_w
                    self.devices.append(CapDevice(m, d.device, (float(lo), float(hi)),
                                                  d.power_limit_w))

    # -- what is there ---------------------------------------------------------------
    @property
    def available(self) -> bool:
        return bool(self.devices)

    def range_w(self) -> tuple[float, float] | None:
        """The range every GPU accepts (the intersection), or None without any."""
        if not self.devices:
            return None
        return (max(d.range_w[0] for d in self.devices),
                min(d.range_w[1] for d in self.devices))

    def limit_in_force_w(self) -> float | None:
        for d in self.devices:
            if d.limit_w is not None:
                return d.limit_w
        return None

    def unavailable(self) -> str | None:
        """Why no limit can be set in this run, or None if one can."""
        if not self.devices:
            return "no meter here can set a GPU power limit"
        if any(d.persists for d in self.devices) and not self.allow_persistent:
            return "setting a real GPU's power limit needs --allow-power-cap"
        return None

    def check(self, watts: float) -> None:
        """Raise PowerCapError (one line) unless `watts` can be set on every GPU here;
        changes nothing."""
        if (why := self.unavailable()) is not None:
            raise PowerCapError(why)
        for d in self.devices:
            lo, hi = d.range_w
            if not lo <= watts <= hi:
                raise PowerCapError(f"{watts:g} W is out of range for {d.device}"
                                    f" ({lo:g}-{hi:g} W)")

    # -- changing it -------------------------------------------------------------------
    def apply(self, watts: float | None) -> tuple[float | None, float | None]:
        """Set every GPU to `watts` (None: back to the limit in force before the run).
        Returns (the limit now, the limit it replaced) as read from the first GPU."""
        if watts is not None:
            self.check(watts)
        elif (why := self.unavailable()) is not None:
            raise PowerCapError(why)
        replaced: float | None = None
        applied: float | None = None
        for i, d in enumerate(self.devices):
            target = watts if watts is not None else self._original(d)
            if target is None:
                continue  # never changed: nothing to put back
            if d.persists:  # permission checked above (unavailable)
                before = self._ensure_guard().apply(d.meter, d.device, target)
            else:
                before = d.meter.power_limit_record(d.device).get("limit_w")
                d.meter.set_power_limit(d.device, target)
            if i == 0:
                replaced = None if before is None else float(before)
                applied = target
        return applied, replaced

    def _original(self, d: CapDevice) -> float | None:
        if d.persists:
            return None if self._guard is None else self._guard.original_limit_w(
                d.meter.name, d.device)
        # The twin: "unset" is its full limit.
        return d.range_w[1]

    def _ensure_guard(self) -> PowerCapGuard:
        """Created at the first real change: saves the limit in force to disk first,
        and is restored on every exit path (the run's close, atexit as a last resort;
        signals are the CLI's, which unwind to the run's close)."""
        if self._guard is None:
            self._guard = self._guard_factory()
            self._guard.install(signals=())
        return self._guard

    # -- putting it back -------------------------------------------------------------------
    @property
    def changed_persistent(self) -> bool:
        return self._guard is not None

    def restore(self) -> list[RestoreResult]:
        """Every real GPU back to its limit from before the run. Idempotent; safe from
        another thread (the stop watchdog): the guard holds a lock."""
        if self._guard is None:
            return []
        results = self._guard.restore()
        self._guard.uninstall()
        return results
