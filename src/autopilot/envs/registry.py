"""The environment registry and the vector-env contract every env honours.

A vector env is one object that simulates `num_agents` agents at once (PufferLib style):

    obs, info = env.reset(seed=0)                 # obs: float32 (num_agents, obs_dim)
    obs, rew, term, trunc, info = env.step(act)   # act: (num_agents, act_dim) float32 or (num_agents,) int
    stats = env.pop_episode_stats()               # sums over episodes finished since the last pop

Agents reset automatically: after `term | trunc`, the returned obs is already the next episode's first.
`pop_episode_stats()` returns a dict whose `"episodes"` entry counts finished episodes and whose other
entries are SUMS over those episodes of a per-episode value; the per-episode mean of a stat is
`sum / episodes`. Names are the final metric names (`success_rate`, `mean_reward`, `episode_length`,
...), so a 0/1 per-episode flag summed and divided gives a rate in [0, 1] by construction, and sums
from several workers add up before the one division.

Registering an env is one call: `register_env(EnvSpec(...))` in the env's module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ValidationError

from autopilot.errors import ConfigError
from autopilot.plugins import Registry
from autopilot.space import SearchSpace


@runtime_checkable
class VecEnv(Protocol):
    num_agents: int
    single_observation_space: Any  # gymnasium.spaces.Box
    single_action_space: Any  # gymnasium.spaces.Box | gymnasium.spaces.Discrete

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]: ...

    def pop_episode_stats(self) -> dict[str, float]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EnvSpec:
    """What the rest of the system needs to know about one environment."""

    name: str
    params_model: type[BaseModel]  # extra="forbid": unknown env.* keys are errors
    factory: Callable[[BaseModel, int], VecEnv]  # (validated params, seed) -> one vector env object
    agents_per_env: Callable[[BaseModel], int]  # agents in one env object (segments rule)
    space: SearchSpace = field(default_factory=dict)  # ranges of env.* keys (dotted, "env.x")
    agents_formula: Callable[[BaseModel], list[int]] | None = None  # factors shown in the batch arithmetic
    description: str = ""


# Built-ins register on first lookup, so importing the registry stays cheap and cycle-free; installed
# packages add theirs through the `autopilot.envs` entry-point group.
ENVS: Registry[EnvSpec] = Registry("environment", "autopilot.envs",
                                   builtins={"drone_delivery": "autopilot.envs.drone_delivery"})
_GYM_PREFIX = "gym:"


def register_env(spec: EnvSpec) -> EnvSpec:
    return ENVS.register(spec.name, spec)


def available_envs() -> list[str]:
    return ENVS.names() + [_GYM_PREFIX + "<id>"]


def is_builtin_env(name: str) -> bool:
    return name in ENVS._builtins


def get_env_spec(name: str) -> EnvSpec:
    if name.startswith(_GYM_PREFIX) and name not in ENVS._items:
        from autopilot.envs.gym_adapter import gym_env_spec

        return register_env(gym_env_spec(name[len(_GYM_PREFIX):]))
    try:
        return ENVS.get(name)
    except ConfigError:
        raise ConfigError(f"env_name={name!r} is not a registered environment; use one of "
                          f"{', '.join(available_envs())}") from None


def validate_env_params(name: str, params: dict[str, Any]) -> BaseModel:
    """The env's params, validated by its own model and checked against the ranges it declares."""
    spec = get_env_spec(name)
    try:
        model = spec.params_model(**params)
    except ValidationError as exc:
        raise ConfigError(pydantic_violations(exc, prefix="env", model=spec.params_model)) from None
    bad = []
    for key, value in model.model_dump().items():
        ps = spec.space.get(f"env.{key}")
        if ps is not None and not ps.contains(value):
            bad.append(f"env.{key}={value!r} is outside its range {ps.describe()} (rule: every value inside its "
                       f"range); use e.g. {ps.clamp(value)!r}")
    if bad:
        raise ConfigError(bad)
    return model


def agents_per_env(name: str, params: dict[str, Any]) -> int:
    spec = get_env_spec(name)
    return spec.agents_per_env(spec.params_model(**params))


def agents_factors(name: str, params: dict[str, Any]) -> list[int]:
    """Factors of the agents-per-env count for the batch arithmetic (e.g. [4, 8] for env 4×8)."""
    spec = get_env_spec(name)
    p = spec.params_model(**params)
    if spec.agents_formula is not None:
        return spec.agents_formula(p)
    return [spec.agents_per_env(p)]


def make_env(name: str, params: dict[str, Any], seed: int = 0) -> VecEnv:
    spec = get_env_spec(name)
    return spec.factory(spec.params_model(**params), seed)


def pydantic_violations(exc: ValidationError, *, prefix: str, model: type[BaseModel] | None = None) -> list[str]:
    """Turn pydantic's errors into our one-line form: key, value, rule, valid alternative."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or True)
        key = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields)) if model is not None else "the documented keys"
            lines.append(f"{key} is not a known key (rule: unknown keys are errors); known keys here: {known}")
            continue
        alternative = ""
        if model is not None and err["loc"] and str(err["loc"][0]) in model.model_fields:
            default = model.model_fields[str(err["loc"][0])].default
            if default is not None and not callable(default):
                alternative = f"; e.g. {default!r}"
        lines.append(f"{key}={value!r} is invalid ({err['msg']}){alternative}")
    return lines
