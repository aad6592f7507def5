"""Advisors propose the next config. A small registry, Optuna-sampler-like: a module registers a name.

    from autopilot.loop.advisors import Advisor, register_advisor

    @register_advisor("mine")
    class Mine(Advisor):
        def propose(self, ctx): ...

Built-ins (`rules`, `random`) are imported on first lookup, so importing this package stays cheap and
other modules may register theirs (optuna, llm, manual) the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

from autopilot.errors import ConfigError
from autopilot.loop.advisors.base import Advisor

_REGISTRY: dict[str, Callable[[], Advisor]] = {}
_BUILTIN_MODULES = {"rules": "autopilot.loop.advisors.rules",
                    "random": "autopilot.loop.advisors.random_advisor"}

F = TypeVar("F", bound=Callable[[], Advisor])


def register_advisor(name: str, factory: F | None = None) -> Callable[[F], F] | F:
    """Register `factory` (an Advisor subclass or any zero-argument callable returning one) under `name`.
    Usable as a decorator (`@register_advisor("rules")`) or directly."""

    def add(f: F) -> F:
        _REGISTRY[name] = f
        if isinstance(f, type) and issubclass(f, Advisor) and not f.name:
            f.name = name
        return f

    return add(factory) if factory is not None else add


def available_advisors() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def get_advisor(name: str) -> Advisor:
    """A fresh advisor instance; an unknown name is a ConfigError listing the known ones."""
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        raise ConfigError(f"advisor {name!r} is not registered; use one of {', '.join(available_advisors())}")
    advisor = _REGISTRY[name]()
    if not getattr(advisor, "name", ""):
        advisor.name = name
    return advisor


__all__ = ["Advisor", "available_advisors", "get_advisor", "register_advisor"]
