"""Inference engines, registered by name. Each is imported only when asked for, so that
`wattflow --help` does not import vLLM or torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.core.options import OptionSchema
from app.core.registry import Registry, lazy
from engines.base import Engine, EngineContext

EngineFactory = Callable[[EngineContext, dict[str, Any]], Engine]

REGISTRY: Registry[[EngineContext, dict[str, Any]], Engine] = Registry("engine")


def register(name: str, loader: Callable[[], EngineFactory], *,
             options: Callable[[], OptionSchema[Any]] | None = None) -> None:
    """`loader` imports lazily and returns the factory; `options` its option schema."""
    REGISTRY.register(name, loader, options=options)


def names() -> list[str]:
    return REGISTRY.names()


def create(name: str, ctx: EngineContext, options: dict[str, Any]) -> Engine:
    """KeyError (one line, the choices) for an unknown name."""
    return REGISTRY.create(name, ctx, options)


def option_schema(name: str) -> OptionSchema[Any] | None:
    return REGISTRY.options(name)


for _name, _module, _cls in (
    ("sim", "engines.sim.engine", "SimEngine"),
    ("openai", "engines.openai.engine", "OpenAIEngine"),
    ("transformers", "engines.transformers.engine", "TransformersEngine"),
    ("parrot", "engines.parrot.engine", "ParrotEngine"),
    ("vllm", "engines.vllm.engine", "VLLMEngine"),
):
    register(_name, lazy(_module, f"{_cls}.from_options"), options=lazy(_module, "OPTIONS"))
