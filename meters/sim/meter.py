"""SimMeter: reads the simulated GPU twin like NVML reads a real one.

Non-blocking (every reading is arithmetic on the twin's timeline), so the runner
calls it on the loop, at the loop's (virtual) time. The energy counter is the exact
integral of the twin's power up to `t_s`; instant power is the power of the step
running at `t_s`; the average is over the last second, like NVML's averaged field.
With tensor parallelism the twin is a group of N GPUs running in lock step: the meter
reports each of them (gpu0 ... gpuN-1), each with its own power limit.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from app.core.events import Sample
from meters.base import DeviceInfo, MeterInfo, MeterUnavailable, PowerCapError

_AVG_WINDOW_S = 1.0
_UTIL_WINDOW_S = 0.1  # NVML's utilization is over a short sample period


@runtime_checkable
class SimulatesGpu(Protocol):
    """The ability the sim meter needs from its engine: a simulated GPU to read (the
    sim engine's twin). Declared by having it, not found by the engine's name."""

    twin: Any
    stepping: bool  # the scheduler is running steps back to back (work in the engine)


class SimMeter:
    name = "sim"
    # The twin's limit dies with the run: no permission, nothing to restore.
    power_cap_persists = False

    def __init__(self, engine: Any) -> None:
        if not isinstance(engine, SimulatesGpu):
            raise MeterUnavailable(
                "the sim meter measures the simulated GPU; use it with --engine sim"
            )
        self.engine = engine
        self.twin = engine.twin
        self.devices = [f"gpu{i}" for i in range(int(getattr(self.twin, "n_gpus", 1)))]
        self._last_t: float | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SimMeter:
        return cls(options.get("engine"))

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def info(self) -> MeterInfo:
        t = self.twin
        return MeterInfo(
            name=self.name,
            devices=[
                DeviceInfo(
                    device=dev,
                    component="gpu",
                    name=t.gpu.name,
                    channels=["energy_mj", "power_w", "power_avg_w", "util_pct",
                              "mem_used_mib", "sm_clock_mhz", "temp_c", "power_limit_w"],
                    power_limit_range_w=t.power_limit_range_w,
                    power_limit_w=t.power_limits_w[i],
                )
                for i, dev in enumerate(self.devices)
            ],
            blocking=False,
            poll_interval_s=0.1,
            notes=["simulated GPU twin (virtual time)"],
        )

    def sample(self, t_s: float) -> list[Sample]:
        t = self.twin
        t_power = t_s  # where instant power and clock are read
        if self.engine.stepping:
            # The engine is behind the wall clock (the loop stalled): the twin knows its
            # GPU up to the end of its timeline, and the GPU was busy all along. Read it
            # there rather than report a gap as idle; a reading not past the previous one
            # adds nothing.
            end = t.timeline_end()
            if end < t_s:
                # The last step's own power: its interval ends (open) at `end`.
                t_s, t_power = end, max(0.0, end - 1e-9)
            if self._last_t is not None and t_s <= self._last_t:
                return []
        self._last_t = t_s
        e_now = t.energy_j(t_s)
        window = min(_AVG_WINDOW_S, t_s)
        power, clock = t.power_and_clock(t_power)
        avg = ((e_now - t.energy_j(t_s - window)) / window) if window > 0 else power
        util = 100.0 * t.busy_fraction(max(0.0, t_s - _UTIL_WINDOW_S), t_s)
        temp = t.temperature_c(t_s, e_now)
        limits = t.power_limits_w
        return [
            Sample(
                t_s=t_s,
                meter=self.name,
                device=dev,
                component="gpu",
                energy_mj=1000.0 * e_now,
                power_w=power,
                power_avg_w=avg,
                util_pct=util,
                mem_used_mib=t.mem_used_mib,
                sm_clock_mhz=clock,
                temp_c=temp,
                power_limit_w=limits[i],
            )
            for i, dev in enumerate(self.devices)
        ]

    def _index(self, device: str) -> int:
        try:
            return self.devices.index(device)
        except ValueError:
            raise PowerCapError(f"the sim meter has no device {device!r} (it has "
                                f"{', '.join(self.devices)})") from None

    def power_limit_record(self, device: str) -> dict[str, Any]:
        return {"meter": self.name, "device": device,
                "limit_w": self.twin.power_limits_w[self._index(device)]}

    def set_power_limit(self, device: str, watts: float) -> None:
        index = self._index(device)
        lo, hi = self.twin.power_limit_range_w
        try:
            w = float(watts)
        except (TypeError, ValueError):
            raise PowerCapError(f"power limit must be a number of watts, not {watts!r}") from None
        if not lo <= w <= hi:
            raise PowerCapError(
                f"power limit {w:g} W is outside {self.twin.gpu.name}'s range {lo:g}-{hi:g} W"
            )
        self.twin.set_power_limit(w, index)
