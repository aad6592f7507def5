"""PufferLib `.ini` import: `[base] [vec] [env] [train] [policy]` map onto our sections, and
`[sweep.<section>.<key>]` blocks onto the search space. Values parse as PufferLib parses them
(`100_000_000`, `True`, `auto`)."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

from autopilot.config.overrides import parse_value
from autopilot.errors import ConfigError

# PufferLib plumbing that has no meaning for our trainer; read and ignored on purpose.
_IGNORED_BASE = {"package", "policy_name", "rnn_name"}
_IGNORED_SECTIONS = {"rnn", "sweep"}  # bare [sweep] holds method/metric/goal
_SECTIONS = {"vec", "env", "train", "policy", "autopilot"}


def read_pufferlib_ini(path: Path) -> dict[str, Any]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep key case
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except FileNotFoundError:
        raise ConfigError(f"config {path} does not exist") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"config {path} is not a valid .ini file: {first}") from None
    return ini_to_dict(parser, path)


def ini_to_dict(parser: configparser.ConfigParser, path: Path | str = "<ini>") -> dict[str, Any]:
    data: dict[str, Any] = {}
    for section in parser.sections():
        values = {k: parse_value(v) for k, v in parser.items(section)}
        if section == "base":
            for key, value in values.items():
                if key == "env_name":
                    data["env_name"] = _our_env_name(str(value))
                elif key not in _IGNORED_BASE:
                    raise ConfigError(f"{path}: [base] {key} is not a known key (rule: unknown keys are errors); "
                                      f"known: env_name, {', '.join(sorted(_IGNORED_BASE))}")
        elif section.startswith("sweep."):
            dotted = section[len("sweep."):]
            if dotted.count(".") != 1:
                raise ConfigError(f"{path}: [{section}] must name a key as sweep.<section>.<key>, "
                                  f"e.g. [sweep.train.learning_rate]")
            data.setdefault("sweep", {})[dotted] = values
        elif section in _SECTIONS:
            data.setdefault(section, {}).update(values)
        elif section not in _IGNORED_SECTIONS:
            raise ConfigError(f"{path}: section [{section}] is not known (rule: unknown keys are errors); "
                              f"use base, vec, env, train, policy, autopilot or sweep.<section>.<key>")
    return data


def _our_env_name(name: str) -> str:
    # PufferLib names its built-ins `puffer_<name>`; ours is the same env without the prefix.
    from autopilot.envs.registry import is_builtin_env

    stripped = name.removeprefix("puffer_")
    return stripped if is_builtin_env(stripped) else name
