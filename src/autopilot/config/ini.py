"""PufferLib `.ini` files, read the way PufferLib 3.0 reads them.

PufferLib's `load_config` reads its `config/default.ini` and then the env's file over it, with a stock
`configparser`, and parses each value with `ast.literal_eval` (falling back to the string: `auto`,
`Multiprocessing`). Every key of every section reaches its trainer, so every key is kept here:

* `[base]` `env_name` (a file may serve several names; the first is trained, all are kept),
  `package`, `policy_name`, `rnn_name`, ... → `extras.*` (the pufferlib backend's settings);
* `[vec]` `[train]` `[env]` → those sections, unknown keys included (the backend types the ones it knows);
* `[policy]` `[rnn]` → `extras.policy` / `extras.rnn` (keyword arguments of PufferLib's policy classes);
* `[sweep.<section>.<key>]` blocks → `sweep` (search priors, not validation limits); the bare `[sweep]`
  settings and the older layout's blocks (`[sweep.metric]`, ...) → `extras.sweep`; the metric the sweeps
  optimise becomes `autopilot.objective` unless an `[autopilot]` section sets one.

`default.ini` is looked for where PufferLib keeps it (beside or above the file, as in PufferLib's own
`config/` tree), then in an installed `pufferlib`. A file selects the `pufferlib` backend unless its
`[base] backend` names another; for another backend only the file itself is read, as before.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
from pathlib import Path
from typing import Any

from autopilot.errors import ConfigError

BACKEND_KEY = "backend"
_OWN_SECTIONS = ("vec", "train", "env", "autopilot")
_EXTRA_SECTIONS = ("policy", "rnn")
# Older configs for the builtin backend: these [base] keys are PufferLib plumbing, read and ignored.
_IGNORED_BASE = {"package", "policy_name", "rnn_name"}


def pufferlib_value(text: str) -> Any:
    """A value as PufferLib parses it: `ast.literal_eval`, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def find_default_ini(path: Path) -> Path | None:
    """PufferLib's `default.ini` for the env file at `path` (None when neither tree nor install has one)."""
    here = path.resolve().parent
    for folder in [here, *list(here.parents)[:2]]:
        candidate = folder / "default.ini"
        if candidate.is_file():
            return candidate
    spec = importlib.util.find_spec("pufferlib")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "config" / "default.ini"
            if candidate.is_file():
                return candidate
    return None


def _parser(paths: list[Path], *, keep_case: bool) -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    if keep_case:
        parser.optionxform = str  # type: ignore[assignment,method-assign]
    for p in paths:
        try:
            with open(p, encoding="utf-8") as fh:
                parser.read_file(fh, source=str(p))
        except FileNotFoundError:
            raise ConfigError(f"config {p} does not exist") from None
        except (configparser.Error, UnicodeDecodeError) as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"config {p} is not a valid .ini file (PufferLib's configparser fails the "
                              f"same way): {first}") from None
    return parser


def _section(parser: configparser.ConfigParser, name: str, parse=pufferlib_value) -> dict[str, Any]:
    return {k: parse(v) for k, v in parser.items(name)} if parser.has_section(name) else {}


def read_pufferlib_ini(path: Path) -> dict[str, Any]:
    path = Path(path)
    alone = _parser([path], keep_case=False)
    backend = str(_section(alone, "base").get(BACKEND_KEY, "pufferlib"))
    if backend != "pufferlib":
        return legacy_ini_to_dict(_parser([path], keep_case=True), path, backend)
    default = find_default_ini(path)
    files = [path] if default is None or default.resolve() == path.resolve() else [default, path]
    data = pufferlib_ini_to_dict(_parser(files, keep_case=False), path)
    if default is None:
        data["extras"]["defaults"] = "autopilot"  # no default.ini: omitted keys take autopilot's defaults
    else:
        data["extras"]["defaults"] = str(default)
    return data


def _check_nesting(parser: configparser.ConfigParser, path: Path | str) -> None:
    """PufferLib nests `section.key` names into one dict, so `[a] b = ...` and a section `[a.b]` cannot both
    exist: its load_config fails with AttributeError ('str' object has no attribute 'setdefault')."""
    for section in parser.sections():
        parent, _, child = section.rpartition(".")
        if parent and parser.has_section(parent) and parser.has_option(parent, child):
            raise ConfigError(
                f"{path}: section [{section}] collides with the key {child} of [{parent}] (merged from default.ini "
                f"when the file does not set it), so PufferLib 3.0's load_config fails on this file with "
                f"AttributeError: 'str' object has no attribute 'setdefault' (rule: a key and a section may not "
                f"share a dotted name); fold [{section}] into [{parent}] as {child} = <metric name>")


def pufferlib_ini_to_dict(parser: configparser.ConfigParser, path: Path | str) -> dict[str, Any]:
    _check_nesting(parser, path)
    base = _section(parser, "base")
    base.pop(BACKEND_KEY, None)
    names = str(base.pop("env_name", None)).split()
    if Path(path).name == "default.ini" and base.get("package") is None:
        raise ConfigError(
            f"{path} is PufferLib's defaults file, not an env's: package = None and env_name = None, so PufferLib's "
            f"`puffer train default` fails importing pufferlib.environments.None (rule: a trainable file names "
            f"its env); validate an env's file, e.g. config/ocean/squared.ini, which reads this one under it")
    if not names or names == ["None"]:
        raise ConfigError(
            f"{path}: [base] env_name is not set (default.ini's None), so PufferLib cannot load this file: its "
            f"load_config picks a file by [base] env_name and raises 'No config for env_name <name>' "
            f"(rule: a PufferLib .ini names its env); add e.g. env_name = my_env to [base]")
    extras: dict[str, Any] = {**base, "env_names": names}
    data: dict[str, Any] = {"backend": "pufferlib", "env_name": names[0], "extras": extras, "sweep": {}}
    for section in parser.sections():
        values = _section(parser, section)
        if section == "base":
            continue
        if section in _OWN_SECTIONS:
            data[section] = values
        elif section in _EXTRA_SECTIONS:
            extras[section] = values
        elif section == "sweep" or section.startswith("sweep."):
            _sweep_block(data, extras, section, values)
        else:
            extras.setdefault("sections", {})[section] = values  # PufferLib passes any section on
    objective = _sweep_metric(extras.get("sweep", {}))
    if objective and "objective" not in data.get("autopilot", {}):
        data.setdefault("autopilot", {})["objective"] = objective  # what the file's own sweeps optimise
    return data


def _sweep_metric(sweep: dict[str, Any]) -> str | None:
    """The metric a file's sweeps optimise: `[sweep] metric`, or the older `[sweep.metric] name`."""
    metric = sweep.get("settings", {}).get("metric") or sweep.get("metric", {}).get("name")
    return metric.strip() if isinstance(metric, str) and metric.strip() else None


def _sweep_block(data: dict[str, Any], extras: dict[str, Any], section: str, values: dict[str, Any]) -> None:
    dotted = section[len("sweep."):] if section != "sweep" else ""
    is_prior = (dotted.count(".") == 1 and dotted.split(".")[0] in ("vec", "train", "env", "policy")
                and all(isinstance(values.get(k), (int, float)) and not isinstance(values.get(k), bool)
                        for k in ("min", "max")))
    if is_prior:
        prior = {k: values[k] for k in ("distribution", "min", "max", "mean", "scale") if k in values}
        data["sweep"][dotted] = prior
    else:  # [sweep] settings (method, metric, goal) and the older layout's metadata blocks
        extras.setdefault("sweep", {})[dotted or "settings"] = values


# -- other backends: the file alone, strict ---------------------------------------------------------
def legacy_ini_to_dict(parser: configparser.ConfigParser, path: Path | str, backend: str) -> dict[str, Any]:
    from autopilot.config.overrides import parse_value

    data: dict[str, Any] = {"backend": backend}
    for section in parser.sections():
        values = _section(parser, section, parse_value)
        if section == "base":
            for key, value in values.items():
                if key == "env_name":
                    data["env_name"] = _our_env_name(str(value))
                elif key not in _IGNORED_BASE | {BACKEND_KEY}:
                    raise ConfigError(f"{path}: [base] {key} is not a known key (rule: unknown keys are errors); "
                                      f"known: backend, env_name, {', '.join(sorted(_IGNORED_BASE))}")
        elif section.startswith("sweep."):
            dotted = section[len("sweep."):]
            if dotted.count(".") != 1:
                raise ConfigError(f"{path}: [{section}] must name a key as sweep.<section>.<key>, "
                                  f"e.g. [sweep.train.learning_rate]")
            data.setdefault("sweep", {})[dotted] = values
        elif section in ("vec", "env", "train", "policy", "autopilot"):
            data.setdefault(section, {}).update(values)
        elif section not in ("rnn", "sweep"):
            raise ConfigError(f"{path}: section [{section}] is not known (rule: unknown keys are errors); "
                              f"use base, vec, env, train, policy, autopilot or sweep.<section>.<key>")
    return data


def _our_env_name(name: str) -> str:
    # PufferLib names its built-ins `puffer_<name>`; ours is the same env without the prefix.
    from autopilot.envs.registry import is_builtin_env

    stripped = name.removeprefix("puffer_")
    return stripped if is_builtin_env(stripped) else name
