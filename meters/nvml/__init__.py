"""NVIDIA GPUs through NVML. `load` is the registry loader (nothing heavy is imported
until a meter is created; `pynvml` itself only in `NvmlMeter.open`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meters import MeterFactory


def load() -> MeterFactory:
    from meters.nvml.meter import NvmlMeter

    return NvmlMeter.from_options
