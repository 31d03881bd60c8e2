"""Meters, registered by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meters.base import Meter

MeterFactory = Callable[[dict[str, Any]], Meter]

_FACTORIES: dict[str, Callable[[], MeterFactory]] = {}


def register(name: str, loader: Callable[[], MeterFactory]) -> None:
    _FACTORIES[name] = loader


def names() -> list[str]:
    return sorted(_FACTORIES)


def create(name: str, options: dict[str, Any]) -> Meter:
    """`options` carries what a meter may need: for `sim`, the sim engine's twin."""
    if name not in _FACTORIES:
        raise KeyError(f"unknown meter {name!r} (choose from {', '.join(names())})")
    return _FACTORIES[name]()(options)


def _sim() -> MeterFactory:
    from meters.sim.meter import SimMeter

    return SimMeter.from_options


register("sim", _sim)


def _nvml() -> MeterFactory:
    from meters.nvml import load

    return load()


def _rapl() -> MeterFactory:
    from meters.rapl import load

    return load()


register("nvml", _nvml)
register("rapl", _rapl)
