"""One registry mechanism for every extension point: environments, advisors, trainer backends.

A registry knows three sources of names, looked up in this order:

1. names registered in this process (`registry.register(name, obj)`, or the decorator form);
2. built-ins: `{name: "module.path"}`, imported on first lookup so importing a registry stays cheap;
3. Python entry points in the registry's group (`autopilot.envs`, `autopilot.advisors`,
   `autopilot.backends`): `pip install my-env-package` is all a user needs. An entry point's value is a
   module (imported for its registration side effect) or an object (`pkg.mod:attr`), which is then
   registered under the entry point's name.

Entry points are read from the installed distributions' metadata, so the loop and the trainer child
process (`python -m autopilot train`) resolve the same names. A user's own modules, not packaged, are
named in the config (`autopilot.plugins = ["my_envs"]`, imported before the config is validated, so it
can name an env they register) or in `$AUTOPILOT_PLUGINS` (comma-separated). The loop launches the
trainer child with the environment it has, plus the folders those modules were imported from on
`PYTHONPATH` (`child_environment`), so the child imports the same code.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import types
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Generic, TypeVar

from autopilot.errors import ConfigError

T = TypeVar("T")
PLUGINS_ENV = "AUTOPILOT_PLUGINS"


# module name -> the sys.path folder it was imported from (what the trainer child needs on PYTHONPATH)
_IMPORTED: dict[str, str] = {}


def import_plugins(names: list[str], *, source: str) -> list[str]:
    """Import a user's plugin modules (once each), for their registration side effects. As `python -m`
    does, the current folder is searched too (after sys.path), so `my_envs.py` beside the config works
    from the `autopilot` console script. `source` names where the list came from, for the error."""
    for name in names:
        if name in _IMPORTED:
            continue
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"{source}: {name!r} is not a module name (rule: dotted Python identifiers); "
                              f"e.g. my_envs or my_pkg.envs")
        try:
            module = _import_with_cwd(name)
        except Exception as exc:  # ImportError, or the module itself failing: either way, named
            raise ConfigError(f"{source}: cannot import plugin module {name!r} ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); use importable module names (on PYTHONPATH, installed, or "
                              f"in the current folder)") from None
        _IMPORTED[name] = _import_root(module, name)
    return names


def import_user_plugins() -> list[str]:
    """Import the modules named in $AUTOPILOT_PLUGINS (once per process; idempotent)."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    return import_plugins(names, source=f"{PLUGINS_ENV}={os.environ.get(PLUGINS_ENV, '')!r}")


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process that must see this process's plugins: `base` (default
    os.environ) with the folders of every imported plugin module prepended to PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    installed = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots = [r for r in dict.fromkeys(_IMPORTED.values()) if r and r not in installed]
    if roots:
        rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in roots]
        env["PYTHONPATH"] = os.pathsep.join(roots + rest)
    return env


def _import_with_cwd(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        if exc.name != name.split(".")[0] or cwd in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


def _import_root(module: types.ModuleType, name: str) -> str:
    """The sys.path entry `name` was found under ("" for a module without a file)."""
    file = getattr(module, "__file__", None)
    if not file:
        return ""
    path = Path(file).resolve()
    if path.name == "__init__.py":
        path = path.parent
    return str(path.parents[name.count(".")])


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
    return isinstance(obj, types.ModuleType)
