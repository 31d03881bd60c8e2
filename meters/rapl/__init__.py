"""CPU package and DRAM energy through Linux powercap (RAPL). `load` is the registry
loader."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meters import MeterFactory


def load() -> MeterFactory:
    from meters.rapl.meter import RaplMeter

    return RaplMeter.from_options
