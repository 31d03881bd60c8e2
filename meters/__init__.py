"""Meters, registered by name; each is imported only when asked for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.core.options import OptionSchema
from app.core.registry import Registry, lazy
from meters.base import Meter

MeterFactory = Callable[[dict[str, Any]], Meter]

REGISTRY: Registry[[dict[str, Any]], Meter] = Registry("meter")


def register(name: str, loader: Callable[[], MeterFactory], *,
             options: Callable[[], OptionSchema[Any]] | None = None) -> None:
    REGISTRY.register(name, loader, options=options)


def names() -> list[str]:
    return REGISTRY.names()


def create(name: str, options: dict[str, Any]) -> Meter:
    """`options` is shared by all the meters of a run and carries what a meter may need:
    for `sim`, the sim engine (its twin). KeyError (one line) for an unknown name."""
    return REGISTRY.create(name, options)


def option_schema(name: str) -> OptionSchema[Any] | None:
    return REGISTRY.options(name)


register("sim", lazy("meters.sim.meter", "SimMeter.from_options"))
register("nvml", lazy("meters.nvml.meter", "NvmlMeter.from_options"),
         options=lazy("meters.nvml.meter", "OPTIONS"))
register("rapl", lazy("meters.rapl.meter", "RaplMeter.from_options"),
         options=lazy("meters.rapl.meter", "OPTIONS"))
register("dcgm", lazy("meters.dcgm.meter", "DcgmMeter.from_options"),
         options=lazy("meters.dcgm.meter", "OPTIONS"))
register("prometheus", lazy("meters.prometheus.meter", "PrometheusMeter.from_options"),
         options=lazy("meters.prometheus.meter", "OPTIONS"))
