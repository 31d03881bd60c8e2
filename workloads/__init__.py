"""Workloads, registered by name. A path ending in .toml is a user-defined workflow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workloads.base import Workload

WorkloadFactory = Callable[[dict[str, Any]], Workload]

_FACTORIES: dict[str, Callable[[], WorkloadFactory]] = {}


class WorkloadError(ValueError):
    """A bad workload name, parameter or file; one line for the user."""


def register(name: str, loader: Callable[[], WorkloadFactory]) -> None:
    _FACTORIES[name] = loader


def names() -> list[str]:
    return sorted(_FACTORIES)


def create(name: str, params: dict[str, Any] | None = None) -> Workload:
    params = params or {}
    if name.endswith(".toml"):
        try:
            from workloads.toml_workflow import load_toml_workload
        except ImportError:
            raise WorkloadError(f"{name}: TOML workflows are not available in this build") from None
        return load_toml_workload(name, params)
    if name not in _FACTORIES:
        raise WorkloadError(f"unknown workload {name!r} (choose from {', '.join(names())}"
                            " or a FILE.toml)")
    try:
        return _FACTORIES[name]()(params)
    except ValueError as exc:
        raise WorkloadError(str(exc)) from None


def _sequential() -> WorkloadFactory:
    from workloads.sequential import SequentialWorkload

    return SequentialWorkload.from_params


register("sequential", _sequential)


def _interactive() -> WorkloadFactory:
    from workloads.interactive import InteractiveWorkload

    return InteractiveWorkload.from_params


def _agentic() -> WorkloadFactory:
    from workloads.agentic import AgenticWorkload

    return AgenticWorkload.from_params


def _composite() -> WorkloadFactory:
    from workloads.composite import CompositeWorkload

    return CompositeWorkload.from_params


register("interactive", _interactive)
register("agentic", _agentic)
register("composite", _composite)
