"""FakeMeter: a non-blocking meter whose GPU draws `idle_w` plus `busy_w` while the
FakeEngine has requests in flight; its energy counter integrates that exactly."""

from __future__ import annotations

from typing import Any

from app.core.events import Sample
from meters.base import DeviceInfo, MeterInfo, PowerCapError


class FakeMeter:
    name = "fake"
    # Stands in for a real GPU: capping it needs --allow-power-cap (nothing persists).
    power_cap_persists = True

    def __init__(self, engine: Any = None, idle_w: float = 100.0, busy_w: float = 300.0) -> None:
        self.engine = engine
        self.idle_w = idle_w
        self.busy_w = busy_w
        self.energy_mj = 0.0
        self.last_t: float | None = None
        self.limit_w = 700.0
        self.opened = False

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> FakeMeter:
        return cls(options.get("engine"))

    def open(self) -> None:
        self.opened = True

    def close(self) -> None:
        self.opened = False

    def info(self) -> MeterInfo:
        return MeterInfo(name="fake", blocking=False, poll_interval_s=0.1, devices=[
            DeviceInfo("gpu0", "gpu", "fake GPU", ["energy_mj", "power_w"], (200.0, 700.0),
                       self.limit_w)])

    def power(self) -> float:
        busy = self.engine is not None and getattr(self.engine, "in_flight", 0) > 0
        return self.idle_w + (self.busy_w if busy else 0.0)

    def sample(self, t_s: float) -> list[Sample]:
        # Piecewise-constant power between readings (the state seen at the reading).
        if self.last_t is not None:
            self.energy_mj += self.power() * (t_s - self.last_t) * 1000.0
        self.last_t = t_s
        return [Sample(t_s=t_s, meter="fake", device="gpu0", component="gpu",
                       energy_mj=self.energy_mj, power_w=self.power(),
                       power_limit_w=self.limit_w)]

    def power_limit_record(self, device: str) -> dict[str, Any]:
        return {"meter": self.name, "device": device, "limit_w": self.limit_w}

    def set_power_limit(self, device: str, watts: float) -> None:
        if not 200.0 <= watts <= 700.0:
            raise PowerCapError(f"{device}: {watts:g} W is outside 200-700 W")
        self.limit_w = watts
