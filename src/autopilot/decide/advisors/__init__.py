"""Advisors propose the next config. A registry (`autopilot.plugins.Registry`, group `autopilot.advisors`):
a module registers a name, built-in or from an installed package's entry point.

    from autopilot.decide.advisors import Advisor, register_advisor

    @register_advisor("mine")
    class Mine(Advisor):
        def propose(self, ctx): ...

A third-party package declares it in its pyproject:

    [project.entry-points."autopilot.advisors"]
    mine = "my_package.advisor"      # a module that calls register_advisor, or "my_package.advisor:Mine"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from autopilot.decide.advisors.base import Advisor
from autopilot.plugins import Registry

F = TypeVar("F", bound=Callable[[], Advisor])


def _name_class(name: str, factory: Callable[[], Advisor]) -> None:
    if isinstance(factory, type) and issubclass(factory, Advisor) and not factory.name:
        factory.name = name


ADVISORS: Registry[Callable[[], Advisor]] = Registry(
    "advisor", "autopilot.advisors",
    builtins={"rules": "autopilot.decide.advisors.rules",
              "random": "autopilot.decide.advisors.random_advisor",
              "llm": "autopilot.decide.advisors.llm",
              "command": "autopilot.decide.advisors.command",
              "manual": "autopilot.decide.advisors.manual",
              "constant": "autopilot.decide.advisors.constant",
              **{name: "autopilot.decide.advisors.optuna_advisor"
                 for name in ("optuna", "optuna-random", "optuna-qmc", "optuna-cmaes")}},
    on_register=_name_class)


def register_advisor(name: str, factory: F | None = None) -> Callable[[F], F] | F:
    """Register `factory` (an Advisor subclass or any zero-argument callable returning one) under `name`.
    Usable as a decorator (`@register_advisor("rules")`) or directly."""
    return ADVISORS.register(name, factory)


def available_advisors() -> list[str]:
    return ADVISORS.names()


def get_advisor(name: str) -> Advisor:
    """A fresh advisor instance; an unknown name is a ConfigError listing the known ones."""
    advisor = ADVISORS.get(name)()
    if not getattr(advisor, "name", ""):
        advisor.name = name
    return advisor


__all__ = ["ADVISORS", "Advisor", "available_advisors", "get_advisor", "register_advisor"]
