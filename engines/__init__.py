"""Inference engines, registered by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engines.base import Engine, EngineContext

EngineFactory = Callable[[EngineContext, dict[str, Any]], Engine]

_FACTORIES: dict[str, Callable[[], EngineFactory]] = {}


def register(name: str, loader: Callable[[], EngineFactory]) -> None:
    """`loader` imports lazily so that `wattflow --help` does not import vLLM."""
    _FACTORIES[name] = loader


def names() -> list[str]:
    return sorted(_FACTORIES)


def create(name: str, ctx: EngineContext, options: dict[str, Any]) -> Engine:
    if name not in _FACTORIES:
        raise KeyError(f"unknown engine {name!r} (choose from {', '.join(names())})")
    return _FACTORIES[name]()(ctx, options)


def _sim() -> EngineFactory:
    from engines.sim.engine import SimEngine

    return SimEngine.from_options


register("sim", _sim)


def _openai() -> EngineFactory:
    from engines.openai.engine import OpenAIEngine

    return OpenAIEngine.from_options


register("openai", _openai)


def _transformers() -> EngineFactory:
    from engines.transformers import TransformersEngine

    return TransformersEngine.from_options


def _parrot() -> EngineFactory:
    from engines.parrot import ParrotEngine

    return ParrotEngine.from_options


register("transformers", _transformers)
register("parrot", _parrot)


def _vllm() -> EngineFactory:
    from engines.vllm.engine import VLLMEngine

    return VLLMEngine.from_options


register("vllm", _vllm)
