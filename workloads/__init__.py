"""Workloads, registered by name. A path ending in .toml is a user-defined workflow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.core.registry import Registry, lazy
from workloads.base import Workload

WorkloadFactory = Callable[[dict[str, Any]], Workload]


class WorkloadError(ValueError):
    """A bad workload name, parameter or file; one line for the user."""


REGISTRY: Registry[[dict[str, Any]], Workload] = Registry(
    "workload", error=WorkloadError, also=" or a FILE.toml")


def register(name: str, loader: Callable[[], WorkloadFactory]) -> None:
    REGISTRY.register(name, loader)


def names() -> list[str]:
    return REGISTRY.names()


def create(name: str, params: dict[str, Any] | None = None) -> Workload:
    params = params or {}
    if name.endswith(".toml"):
        try:
            from workloads.toml_workflow import load_toml_workload
        except ImportError:
            raise WorkloadError(f"{name}: TOML workflows are not available in this build") from None
        return load_toml_workload(name, params)
    factory = REGISTRY.load(name)
    try:
        return factory(params)
    except ValueError as exc:
        raise WorkloadError(str(exc)) from None


for _name, _module, _cls in (
    ("sequential", "workloads.sequential", "SequentialWorkload"),
    ("interactive", "workloads.interactive", "InteractiveWorkload"),
    ("agentic", "workloads.agentic", "AgenticWorkload"),
    ("composite", "workloads.composite", "CompositeWorkload"),
):
    register(_name, lazy(_module, f"{_cls}.from_params"))
