"""Loading and saving configs: JSON or PufferLib .ini in, typed `Config` out, errors as `ConfigError`."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from autopilot.atomic import atomic_write_json, read_json
from autopilot.config.model import Config
from autopilot.config.overrides import apply_overrides
from autopilot.envs.registry import pydantic_violations
from autopilot.errors import AutopilotError, ConfigError
from autopilot.plugins import import_plugins
from autopilot.space import ParamSpec, Prior, SearchSpace

PROFILES = ("quick", "full")


def config_from_dict(data: Any, overrides: dict[str, Any] | None = None) -> Config:
    """Validate a raw dict (plus dotted overrides) into a `Config`; every failure is a `ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a JSON object with sections env_name, env, vec, train, policy, "
                          f"autopilot; got {type(data).__name__}")
    if overrides:
        data = apply_overrides(data, overrides)
    _import_config_plugins(data)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_model_violations(exc)) from None
    except AutopilotError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        # Validators of env param models can see odd types before pydantic does; keep it one line.
        raise ConfigError(f"config is invalid: {exc}") from None


def _import_config_plugins(data: dict[str, Any]) -> None:
    """`autopilot.plugins` registers envs and advisors, so it is imported before `env_name` is checked."""
    section = data.get("autopilot")
    names = section.get("plugins") if isinstance(section, dict) else None
    if names is None:
        return
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"autopilot.plugins={names!r} is invalid (rule: a list of importable module names); "
                          f'e.g. ["my_envs"]')
    import_plugins([n.strip() for n in names], source="autopilot.plugins")


def _model_violations(exc: ValidationError) -> list[str]:
    from autopilot.config import model as m

    sections = {"vec": m.VecConfig, "train": m.TrainConfig, "policy": m.PolicyConfig,
                "autopilot": m.AutopilotConfig}
    lines: list[str] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        section = sections.get(loc[0]) if loc else None
        if err["type"] == "extra_forbidden":
            key = ".".join(loc)
            parent = section if section is not None and len(loc) > 1 else Config
            known = ", ".join(sorted(parent.model_fields))
            lines.append(f"{key} is not a known key (rule: unknown keys are errors); known keys here: {known}")
            continue
        if err["type"] == "value_error" and "ConfigError" in str(err.get("ctx", "")):
            lines.append(str(err["ctx"].get("error")))
            continue
        key = ".".join(p for p in loc if not p.startswith(("int", "literal", "function")) ) or "config"
        alt = ""
        if section is not None and len(loc) > 1 and loc[1] in section.model_fields:
            default = section.model_fields[loc[1]].default
            alt = f"; e.g. {json.dumps(default)}" if default is not None else ""
        lines.append(f"{key}={err.get('input')!r} is invalid ({err['msg']}){alt}")
    # pydantic reports an int|"auto" union twice; keep each line once, in order.
    return list(dict.fromkeys(lines))


def read_json_file(path: Path, what: str = "file") -> Any:
    return read_json(path, ConfigError, what)


def load_raw(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.suffix.lower() == ".ini":
        from autopilot.config.ini import read_pufferlib_ini

        return read_pufferlib_ini(path)
    return read_json_file(path, "config")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load a JSON or PufferLib .ini config (or a profile name: `quick`, `full`), apply overrides, validate."""
    if str(path) in PROFILES and not Path(path).exists():
        return load_profile(str(path), overrides)
    return config_from_dict(load_raw(path), overrides)


def load_profile(name: str, overrides: dict[str, Any] | None = None) -> Config:
    if name not in PROFILES:
        raise ConfigError(f"profile {name!r} does not exist; use one of {', '.join(PROFILES)}")
    text = resources.files("autopilot.config").joinpath("profiles", f"{name}.json").read_text("utf-8")
    return config_from_dict(json.loads(text), overrides)


def profile_dict(name: str) -> dict[str, Any]:
    return load_profile(name).model_dump()


def save_config(cfg: Config, path: str | Path) -> Path:
    return atomic_write_json(path, cfg.model_dump())


_SWEEP_SCALES = {
    "uniform": "linear", "linear": "linear", "logit_normal": "linear", "normal": "linear",
    "log_normal": "log", "log": "log", "log_uniform": "log",
    "int_uniform": "int", "int": "int", "uniform_pow2": "pow2", "pow2": "pow2",
}


def config_space(cfg: Config) -> SearchSpace:
    """The search space for this config: its backend's ranges (trainer + env) + its `sweep` blocks, which
    replace a key's range, or (for backends whose sweeps are priors, PufferLib's) become its prior."""
    from autopilot.backends import get_backend

    backend = get_backend(cfg.backend)
    space: SearchSpace = backend.search_space(cfg)
    for key, sweep in cfg.sweep.items():
        scale = _SWEEP_SCALES.get(sweep.distribution)
        if scale is None:
            raise ConfigError(f"sweep.{key}.distribution={sweep.distribution!r} is not supported; use one of "
                              f"{', '.join(sorted(_SWEEP_SCALES))}")
        base = space.get(key)
        if base is not None and base.scale in ("int", "pow2") and scale in ("linear", "log"):
            scale = base.scale  # an integer knob stays integer whatever the distribution's name
        try:
            if backend.sweeps_are_priors:
                center = sweep.mean if sweep.mean is not None and sweep.min <= sweep.mean <= sweep.max else \
                    (sweep.min + sweep.max) / 2
                prior = Prior(center=center, low=sweep.min, high=sweep.max, source="the file's [sweep] block")
                space[key] = (base.model_copy(update={"prior": prior}) if base is not None else
                              ParamSpec(key=key, scale=scale, low=sweep.min, high=sweep.max, prior=prior))
            else:
                space[key] = ParamSpec(key=key, scale=scale, low=sweep.min, high=sweep.max)
        except ValidationError as exc:
            raise ConfigError(f"sweep.{key} is invalid: {exc.errors()[0]['msg']}") from None
    return space


__all__ = ["config_from_dict", "config_space", "load_config", "load_profile", "pydantic_violations",
           "read_json_file", "save_config"]
