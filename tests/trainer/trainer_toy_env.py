"""A tiny vectorised env for the trainer's tests: agents on a plane steer toward a target.

`toy_reach`: obs = (target - position, velocity-free), 2-D; continuous actions in [-1, 1]^2 move the
agent by 0.2 * action, or with `discrete=True` one of 5 moves (stay, ±x, ±y). Reward: +1 on reaching
the target (distance < 0.2, episode ends, success), -0.01 per step otherwise; episodes truncate after
`max_steps`. Stats follow the registry contract: sums over finished episodes plus "episodes".
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict

from autopilot.envs.registry import EnvSpec, register_env
from autopilot.space import spec

_MOVES = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], np.float32)


class ToyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_agents: int = 16
    discrete: bool = False
    max_steps: int = 20


class ToyReach:
    def __init__(self, params: ToyParams, seed: int = 0):
        self.p = params
        self.num_agents = params.num_agents
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.single_action_space = (spaces.Discrete(5) if params.discrete
                                    else spaces.Box(-1.0, 1.0, (2,), np.float32))
        self.rng = np.random.default_rng(seed)
        n = self.num_agents
        self.pos = np.zeros((n, 2), np.float32)
        self.target = np.zeros((n, 2), np.float32)
        self.t = np.zeros(n, np.int64)
        self.ret = np.zeros(n, np.float32)
        self._sums: dict[str, float] = {}
        self._episodes = 0

    def _obs(self) -> np.ndarray:
        return (self.target - self.pos).astype(np.float32)

    def _respawn(self, mask: np.ndarray) -> None:
        k = int(mask.sum())
        self.pos[mask] = self.rng.uniform(-1, 1, (k, 2))
        self.target[mask] = self.rng.uniform(-1, 1, (k, 2))
        self.t[mask] = 0
        self.ret[mask] = 0.0

    def reset(self, seed: int | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._respawn(np.ones(self.num_agents, bool))
        return self._obs(), {}

    def step(self, actions: np.ndarray):
        if self.p.discrete:
            move = _MOVES[np.asarray(actions, np.int64)]
        else:
            move = np.clip(np.asarray(actions, np.float32), -1, 1)
        self.pos = np.clip(self.pos + 0.2 * move, -1.5, 1.5)
        self.t += 1
        dist = np.linalg.norm(self.target - self.pos, axis=1)
        success = dist < 0.2
        reward = np.where(success, 1.0, -0.01).astype(np.float32)
        self.ret += reward
        trunc = (self.t >= self.p.max_steps) & ~success
        done = success | trunc
        if done.any():
            self._episodes += int(done.sum())
            for key, val in (("success_rate", success[done]), ("mean_reward", self.ret[done]),
                             ("episode_length", self.t[done])):
                self._sums[key] = self._sums.get(key, 0.0) + float(np.sum(val))
            self._respawn(done)
        return self._obs(), reward, success, trunc, {}

    def pop_episode_stats(self) -> dict[str, float]:
        out = {"success_rate": 0.0, "mean_reward": 0.0, "episode_length": 0.0, **self._sums,
               "episodes": float(self._episodes)}
        self._sums, self._episodes = {}, 0
        return out

    def close(self) -> None:
        pass


def _factory(params: ToyParams, seed: int) -> ToyReach:
    return ToyReach(params, seed)


register_env(EnvSpec(
    name="toy_reach", params_model=ToyParams, factory=_factory, agents_per_env=lambda p: p.num_agents,
    space={s.key: s for s in [spec("env.num_agents", "int", 1, 100000, tunable=False),
                              spec("env.max_steps", "int", 1, 10000, tunable=False),
                              spec("env.discrete", "bool")]},
    description="test env: steer to a target",
))
