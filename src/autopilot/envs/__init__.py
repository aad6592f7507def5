"""Environments: a small registry of vectorized (multi-agent) envs.

`drone_delivery` is built in; `gym:<id>` wraps any installed Gymnasium id.
"""

from autopilot.envs.registry import EnvSpec, VecEnv, agents_per_env, get_env_spec, make_env, register_env

__all__ = ["EnvSpec", "VecEnv", "agents_per_env", "get_env_spec", "make_env", "register_env"]
