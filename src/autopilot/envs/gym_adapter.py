"""`gym:<id>`: any installed Gymnasium env as one of our vector envs.

`num_envs` copies of the Gymnasium env are stepped in one object so the trainer sees the same contract
as for the built-in env (see `autopilot.envs.registry`): float32 observations of shape
(num_agents, obs_dim), automatic reset (the obs returned after a done is the next episode's first),
and episode stats as sums. Only `mean_reward` (episode return) and `episode_length` are reported: a
generic Gymnasium env has no notion of success, and inventing one would be a lie the loop could chase.

We step the copies ourselves instead of using `gymnasium.vector.SyncVectorEnv` because its default
autoreset mode (NEXT_STEP) returns the terminal obs and resets one step later, which breaks the
"next episode's first obs" contract; a plain loop over a handful of copies is also simpler to reason
about. Observations are flattened (Box) or one-hot encoded (Discrete); actions may be Box (clipped to
the bounds) or Discrete.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict, Field

from autopilot.envs.registry import EnvSpec
from autopilot.errors import ConfigError
from autopilot.space import spec


class GymParams(BaseModel):
    """env.* keys of a `gym:<id>` env: only how many copies one vector env object holds."""

    model_config = ConfigDict(extra="forbid")

    num_envs: int = Field(8, ge=1, le=4096)  # copies of the Gymnasium env in one vector env object


GYM_SPACE = {s.key: s for s in [spec("env.num_envs", "int", 1, 4096, tunable=False)]}


def _flat_obs_space(space: spaces.Space, gym_id: str) -> tuple[spaces.Box, Any]:
    """The float32 Box we expose and a function that encodes one raw observation into it."""
    if isinstance(space, spaces.Box):
        low = np.asarray(space.low, dtype=np.float32).reshape(-1)
        high = np.asarray(space.high, dtype=np.float32).reshape(-1)
        return spaces.Box(low, high, dtype=np.float32), lambda o: np.asarray(o, dtype=np.float32).reshape(-1)
    if isinstance(space, spaces.Discrete):
        n = int(space.n)

        def one_hot(o: Any) -> np.ndarray:
            v = np.zeros(n, dtype=np.float32)
            v[int(o) - int(space.start)] = 1.0
            return v

        return spaces.Box(0.0, 1.0, (n,), dtype=np.float32), one_hot
    raise ConfigError(
        f"env_name='gym:{gym_id}' has observation space {type(space).__name__}; "
        "only Box and Discrete observations are supported"
    )


class GymVecEnv:
    """`num_envs` copies of one Gymnasium env behind the VecEnv contract."""

    def __init__(self, gym_id: str, num_envs: int = 8, seed: int = 0):
        self.gym_id = gym_id
        self.envs = [gym.make(gym_id) for _ in range(num_envs)]
        self.num_agents = num_envs
        act_space = self.envs[0].action_space
        if not isinstance(act_space, (spaces.Box, spaces.Discrete)):
            raise ConfigError(
                f"env_name='gym:{gym_id}' has action space {type(act_space).__name__}; "
                "only Box and Discrete actions are supported"
            )
        self.single_action_space = act_space
        self.single_observation_space, self._encode = _flat_obs_space(self.envs[0].observation_space, gym_id)
        self._obs_dim = int(self.single_observation_space.shape[0])
        self._seed = seed
        self._seeded = False
        self._returns = np.zeros(num_envs, dtype=np.float64)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._stats = self._empty_stats()

    @staticmethod
    def _empty_stats() -> dict[str, float]:
        return {"episodes": 0.0, "mean_reward": 0.0, "episode_length": 0.0}

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        # The first reset is always seeded (the constructor's seed), so a run is reproducible; later
        # unseeded resets continue each copy's own RNG, as Gymnasium does.
        if seed is None and not self._seeded:
            seed = self._seed
        self._seeded = True
        obs = np.empty((self.num_agents, self._obs_dim), dtype=np.float32)
        for i, env in enumerate(self.envs):
            o, _ = env.reset(seed=None if seed is None else seed + i)
            obs[i] = self._encode(o)
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return obs, {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        n = self.num_agents
        obs = np.empty((n, self._obs_dim), dtype=np.float32)
        rew = np.empty(n, dtype=np.float32)
        term = np.zeros(n, dtype=bool)
        trunc = np.zeros(n, dtype=bool)
        actions = np.asarray(actions)
        if isinstance(self.single_action_space, spaces.Box):
            shape = self.single_action_space.shape
            actions = np.clip(actions.reshape((n, *shape)), self.single_action_space.low,
                              self.single_action_space.high).astype(self.single_action_space.dtype)
        else:
            actions = actions.reshape(n).astype(np.int64)
        for i, env in enumerate(self.envs):
            a = actions[i] if isinstance(self.single_action_space, spaces.Box) else int(actions[i])
            o, r, te, tr, _ = env.step(a)
            rew[i] = r
            term[i], trunc[i] = te, tr
            self._returns[i] += r
            self._lengths[i] += 1
            if te or tr:
                self._stats["episodes"] += 1
                self._stats["mean_reward"] += float(self._returns[i])
                self._stats["episode_length"] += float(self._lengths[i])
                self._returns[i] = 0.0
                self._lengths[i] = 0
                o, _ = env.reset()
            obs[i] = self._encode(o)
        return obs, rew, term, trunc, {}

    def pop_episode_stats(self) -> dict[str, float]:
        stats, self._stats = self._stats, self._empty_stats()
        return stats

    def close(self) -> None:
        for env in self.envs:
            env.close()


def gym_env_spec(gym_id: str) -> EnvSpec:
    """The EnvSpec named `gym:<gym_id>`; an id Gymnasium does not know is a one-line ConfigError."""
    try:
        gym.spec(gym_id)
    except Exception:  # gymnasium raises several error types (NameNotFound, VersionNotFound, ...)
        raise ConfigError(
            f"env_name='gym:{gym_id}': {gym_id!r} is not a registered Gymnasium env id "
            "(e.g. gym:CartPole-v1, gym:Pendulum-v1)"
        ) from None

    def factory(params: GymParams, seed: int) -> GymVecEnv:
        return GymVecEnv(gym_id, params.num_envs, seed)

    return EnvSpec(
        name=f"gym:{gym_id}",
        params_model=GymParams,
        factory=factory,
        agents_per_env=lambda p: p.num_envs,
        space=dict(GYM_SPACE),
        agents_formula=lambda p: [p.num_envs],
        description=f"Gymnasium env {gym_id} (env.num_envs copies per vector env object)",
    )
