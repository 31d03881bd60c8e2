"""CPU package and DRAM energy from RAPL counters (Linux powercap).

The kernel exposes a microjoule counter per domain that wraps at
`max_energy_range_uj` (about 262 kJ: minutes at server power). Each sample adds the
difference since the last one, adding the range back when the counter went down; at
the default poll rate a domain would need megawatts to wrap twice between samples.
There is no power reading in RAPL: power is the energy difference over the time
between two samples.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.events import Sample
from app.core.options import OptionSchema, option
from meters.base import DeviceInfo, MeterInfo, PowerCapError
from meters.rapl.zones import DEFAULT_ROOT, Zone, discover

DEFAULT_POLL_INTERVAL_S = 0.1


@dataclass(slots=True)
class _State:
    zone: Zone
    last_uj: int
    total_uj: int = 0
    last_t: float | None = None
    alive: bool = True
    wraps: int = 0


@dataclass(slots=True)
class RaplOptions:
    powercap_root: str = option(str(DEFAULT_ROOT), "where Linux powercap is mounted")
    poll_interval_s: float = option(DEFAULT_POLL_INTERVAL_S, "read the counters this often (s)",
                                    lo=0, lo_open=True)


# The meters share one options dict: names for other meters are not errors here.
OPTIONS = OptionSchema.of(RaplOptions, "rapl meter", shared=True)


class RaplMeter:
    name = "rapl"

    def __init__(
        self, root: str | Path = DEFAULT_ROOT, *, poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    ) -> None:
        if poll_interval_s <= 0 or not math.isfinite(poll_interval_s):
            raise ValueError(f"poll interval must be a positive number, got {poll_interval_s}")
        self.root = Path(root)
        self.poll_interval_s = poll_interval_s
        self._states: list[_State] = []
        self._errors: deque[str] = deque()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RaplMeter:
        o = OPTIONS.build(options)
        return cls(o.powercap_root or DEFAULT_ROOT, poll_interval_s=o.poll_interval_s)

    def open(self) -> None:
        if self._states:
            return
        self._states = [_State(z, z.read_uj()) for z in discover(self.root)]

    def close(self) -> None:
        self._states = []

    def info(self) -> MeterInfo:
        return MeterInfo(
            name=self.name,
            devices=[
                DeviceInfo(
                    device=s.zone.device,
                    component=s.zone.component,
                    name=f"RAPL {s.zone.name} ({s.zone.path.name})",
                    channels=["energy_mj", "power_w"],
                )
                for s in self._states
            ],
            blocking=True,  # file reads; cheap, but never on the loop
            poll_interval_s=self.poll_interval_s,
        )

    def sample(self, t_s: float) -> list[Sample]:
        out = []
        for s in self._states:
            if not s.alive:
                continue
            try:
                now_uj = s.zone.read_uj()
            except (OSError, ValueError) as exc:
                s.alive = False
                self._errors.append(f"{s.zone.device}: cannot read {s.zone.energy_file} ({exc})")
                continue
            # The first sample is the zero of the run, as with the GPU counters.
            delta = 0 if s.last_t is None else now_uj - s.last_uj
            if delta < 0:
                delta += s.zone.max_range_uj  # the counter wrapped
                s.wraps += 1
            s.total_uj += delta
            power_w = None
            if s.last_t is not None and t_s > s.last_t:
                power_w = delta / 1e6 / (t_s - s.last_t)
            s.last_uj, s.last_t = now_uj, t_s
            out.append(
                Sample(
                    t_s=t_s,
                    meter=self.name,
                    device=s.zone.device,
                    component=s.zone.component,
                    energy_mj=s.total_uj / 1000.0,
                    power_w=power_w,
                )
            )
        return out

    def sample_final(self, t_s: float) -> list[Sample]:
        return self.sample(t_s)  # RAPL counters are always exact

    def drain_errors(self) -> list[str]:
        out = []
        while self._errors:
            out.append(self._errors.popleft())
        return out

    def drain_notes(self) -> list[str]:
        return []

    def set_power_limit(self, device: str, watts: float) -> None:
        raise PowerCapError("rapl: CPU power limits are not a wattflow knob")
