"""A registry of plugins by name, loaded lazily: one type for engines, meters and
workloads.

A name maps to a loader, a function that imports the plugin and returns its factory,
so that `wattflow --help` imports neither vLLM nor torch, and a plugin that cannot be
imported here breaks only a run that asks for it. A plugin may also register a loader
of its option schema (for `wattflow doctor`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from app.core.options import OptionSchema

P = ParamSpec("P")
R = TypeVar("R")


def lazy(module: str, attr: str) -> Callable[[], Any]:
    """A loader of `module`'s `attr` (a dotted path: "SimEngine.from_options"), imported
    when first called."""

    def load() -> Any:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    return load


class Registry(Generic[P, R]):
    """Names -> factories `(*P) -> R`. An unknown name raises `error` (KeyError unless
    told) with one line naming the choices; `also` ends that list (" or a FILE.toml")."""

    def __init__(self, kind: str, *, error: Callable[[str], Exception] = KeyError,
                 also: str = "") -> None:
        self.kind = kind
        self._error = error
        self._also = also
        self._loaders: dict[str, Callable[[], Callable[P, R]]] = {}
        self._options: dict[str, Callable[[], OptionSchema[Any]]] = {}

    def register(self, name: str, loader: Callable[[], Callable[P, R]], *,
                 options: Callable[[], OptionSchema[Any]] | None = None) -> None:
        """Register (or replace) `name`. `loader` imports lazily and returns the factory."""
        self._loaders[name] = loader
        if options is not None:
            self._options[name] = options
        else:
            self._options.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._loaders)

    def __contains__(self, name: object) -> bool:
        return name in self._loaders

    def load(self, name: str) -> Callable[P, R]:
        """The factory registered as `name`; importing it may raise ImportError."""
        loader = self._loaders.get(name)
        if loader is None:
            raise self._error(f"unknown {self.kind} {name!r} "
                              f"(choose from {', '.join(self.names())}{self._also})")
        return loader()

    def create(self, name: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.load(name)(*args, **kwargs)

    def options(self, name: str) -> OptionSchema[Any] | None:
        """The option schema `name` declares, or None if it declares none."""
        if name not in self._loaders:
            self.load(name)  # the unknown-name error
        loader = self._options.get(name)
        return None if loader is None else loader()
