"""The meter protocol: telemetry (energy, power, utilisation...) and power controls.

A meter reads every channel of every device it owns in one `sample()` call. Reads may
block (NVML's energy counter costs milliseconds), so the runner calls `sample()` from
a dedicated poller thread unless the meter says it is non-blocking (the simulated
twin, which must run on the loop's virtual time).

Optional abilities are declared by implementing a small protocol, never probed by
name: `SamplesFinal` (an exact last reading), `DrainsMessages` (one-line errors and
notes found while sampling, recorded as `error` events).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from app.core.events import Sample


class MeterUnavailable(RuntimeError):
    """This meter cannot read on this machine; the message says why in one line."""


class PowerCapError(ValueError):
    """A power limit could not be set; the message says why in one line."""


@dataclass(slots=True)
class DeviceInfo:
    device: str  # "gpu0", "cpu0", "dram0"
    component: str  # gpu, cpu, dram
    name: str = ""
    channels: list[str] = field(default_factory=list)  # fields of Sample it fills
    power_limit_range_w: tuple[float, float] | None = None  # None: cannot be capped
    power_limit_w: float | None = None
    # A remote device's node (dcgm, prometheus meters) and the labels it was read with
    # (dcgm-exporter's gpu, UUID, modelName, Hostname...); empty for local devices.
    node: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class MeterInfo:
    name: str
    devices: list[DeviceInfo] = field(default_factory=list)
    blocking: bool = True
    poll_interval_s: float = 0.1
    notes: list[str] = field(default_factory=list)


class Meter(Protocol):
    name: str

    def open(self) -> None:
        """Raise MeterUnavailable with a one-line reason if it cannot read here."""
        ...

    def close(self) -> None: ...

    def info(self) -> MeterInfo: ...

    def sample(self, t_s: float) -> list[Sample]:
        """One reading of every device, stamped `t_s` (the run's clock)."""
        ...

    def set_power_limit(self, device: str, watts: float) -> None:
        """Raise PowerCapError if the device cannot be capped to `watts`."""
        ...


# -- optional abilities ---------------------------------------------------------------
@runtime_checkable
class SamplesFinal(Protocol):
    """Has a reading for the end of a run that is exact where `sample()` may not be (a
    meter that reads its energy counter rarely reads it now)."""

    def sample_final(self, t_s: float) -> list[Sample]: ...


@runtime_checkable
class DrainsMessages(Protocol):
    """Keeps what went wrong (or is worth noting) while sampling, for the loop to take."""

    def drain_errors(self) -> list[str]:
        """Failures since the last call, one line each (a GPU lost: no longer read)."""
        ...

    def drain_notes(self) -> list[str]:
        """Things worth recording that are not failures (an energy counter reset)."""
        ...
