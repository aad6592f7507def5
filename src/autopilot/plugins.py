"""One registry mechanism for every extension point: environments, advisors, trainer backends.

A registry knows three sources of names, looked up in this order:

1. names registered in this process (`registry.register(name, obj)`, or the decorator form);
2. built-ins: `{name: "module.path"}`, imported on first lookup so importing a registry stays cheap;
3. Python entry points in the registry's group (`autopilot.envs`, `autopilot.advisors`,
   `autopilot.backends`): `pip install my-env-package` is all a user needs. An entry point's value is a
   module (imported for its registration side effect) or an object (`pkg.mod:attr`), which is then
   registered under the entry point's name.

Entry points are read from the installed distributions' metadata, so the loop and the trainer child
process (`python -m autopilot train`) resolve the same names. `AUTOPILOT_PLUGINS` (comma-separated
module names) imports a user's own modules in both processes too, for code that is not packaged.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from autopilot.errors import ConfigError

T = TypeVar("T")
PLUGINS_ENV = "AUTOPILOT_PLUGINS"


def import_user_plugins() -> list[str]:
    """Import the modules named in $AUTOPILOT_PLUGINS (once per process; idempotent)."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{PLUGINS_ENV}={os.environ[PLUGINS_ENV]!r}: cannot import {name!r} ({exc}); "
                              f"use importable module names, comma-separated") from None
    return names


class Registry(Generic[T]):
    """Names → objects for one extension point (`kind` is used in messages, e.g. "advisor")."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str] | None = None,
                 on_register: Callable[[str, T], None] | None = None):
        self.kind, self.group = kind, group
        self._builtins = dict(builtins or {})
        self._items: dict[str, T] = {}
        self._on_register = on_register
        self._entry_points_loaded = False

    # -- writing ------------------------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None):
        """Register `obj` under `name`; without `obj`, a decorator."""

        def add(o: T) -> T:
            self._items[name] = o
            if self._on_register is not None:
                self._on_register(name, o)
            return o

        return add(obj) if obj is not None else add

    # -- reading ------------------------------------------------------------------------------------
    def _entry_points(self):
        try:
            return list(entry_points(group=self.group))
        except Exception:  # pragma: no cover - broken metadata must not take the tool down
            return []

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._builtins) | {ep.name for ep in self._entry_points()})

    def get(self, name: str, *, hint: str = "") -> T:
        """The object registered as `name`; an unknown name is a ConfigError listing the valid ones."""
        if name not in self._items and name in self._builtins:
            importlib.import_module(self._builtins[name])
        if name not in self._items:
            import_user_plugins()
        if name not in self._items:
            for ep in self._entry_points():
                if ep.name != name:
                    continue
                try:
                    loaded = ep.load()
                except Exception as exc:
                    raise ConfigError(f"{self.kind} {name!r}: its entry point {ep.value!r} (group {self.group}) "
                                      f"failed to load: {exc}") from None
                if name not in self._items and not _is_module(loaded):
                    self.register(name, loaded)
                break
        if name not in self._items:
            raise ConfigError(f"{hint or self.kind} {name!r} is not registered; use one of "
                              f"{', '.join(self.names())}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except ConfigError:
            return False
        return True


def _is_module(obj: object) -> bool:
    import types

    return isinstance(obj, types.ModuleType)
