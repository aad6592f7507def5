"""Gymnasium views of drone_delivery, so other libraries can train on it.

- `DroneDeliveryVectorEnv`: a `gymnasium.vector.VectorEnv` over all agents (every drone of every arena
  is one sub-environment). Autoreset is SAME_STEP, like our own contract: when a drone's episode ends,
  the returned obs is already the next episode's first, and the terminal obs is in
  `info["final_obs"]` (object array, `None` where nothing ended) with the mask `info["_final_obs"]`.
- `DroneDeliverySingleEnv`: a plain `gymnasium.Env` for single-agent libraries such as
  Stable-Baselines3. It is one arena in which the learner flies drone 0; any other drones in the arena
  (`num_drones > 1`) are flown by the scripted controller, so the learner still sees (and can collide
  with) real neighbours. The learner's episode is drone 0's episode; the others reset on their own.
  `info["is_success"]` is set at the end of every episode (SB3 logs it as the success rate).
  Importing this module also registers it with Gymnasium as `autopilot/DroneDelivery-v0`, so
  `gymnasium.make("autopilot/DroneDelivery-v0", num_drones=4)` works.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from autopilot.envs.drone_delivery import DroneDeliveryEnv, DroneDeliveryParams
from autopilot.envs.scripted import scripted_actions


class DroneDeliveryVectorEnv(VectorEnv):
    """All drones of a `DroneDeliveryEnv` as a Gymnasium vector env (num_envs = num_agents)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, params: DroneDeliveryParams | None = None, seed: int = 0, **param_kwargs: Any):
        params = params or DroneDeliveryParams(**param_kwargs)
        self.env = DroneDeliveryEnv(params, seed)
        self.env.record_final_obs = True
        self.num_envs = self.env.num_agents
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        return self.env.reset(seed=seed)

    def step(self, actions: np.ndarray):
        obs, rew, term, trunc, raw = self.env.step(actions)
        infos: dict[str, Any] = {}
        done = raw["final_idx"]
        if done.size:
            final = np.full(self.num_envs, None, dtype=object)
            for row, agent in enumerate(done):  # only the few agents whose episode just ended
                final[agent] = raw["final_obs"][row]
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[done] = True
            infos = {"final_obs": final, "_final_obs": mask}
        return obs, rew, term, trunc, infos

    def pop_episode_stats(self) -> dict[str, float]:
        return self.env.pop_episode_stats()

    def close_extras(self, **kwargs: Any) -> None:
        self.env.close()


class DroneDeliverySingleEnv(gym.Env):
    """One arena; the learner flies drone 0, the scripted controller flies the others."""

    metadata = {"render_modes": []}

    def __init__(self, num_drones: int = 1, seed: int = 0, render_mode: str | None = None, **param_kwargs: Any):
        # There is no renderer. SB3's make_vec_env passes render_mode and retries without it on a TypeError.
        if render_mode is not None:
            raise TypeError(f"render_mode={render_mode!r} is not supported by {GYM_ID}; use render_mode=None")
        params = DroneDeliveryParams(num_envs=1, num_drones=num_drones, **param_kwargs)
        self.env = DroneDeliveryEnv(params, seed)
        self.env.record_final_obs = True
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        self._next_obs: np.ndarray | None = None  # drone 0's first obs of its next episode
        self._needs_full_reset = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None or self._needs_full_reset or self._next_obs is None:
            seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
            obs, _ = self.env.reset(seed=seed)
            self._needs_full_reset = False
            return obs[0].copy(), {}
        # Drone 0 was already respawned by the auto-reset; the others keep flying.
        obs, self._next_obs = self._next_obs, None
        return obs, {}

    def step(self, action: np.ndarray):
        actions = scripted_actions(self.env)
        actions[0] = np.asarray(action, dtype=np.float32).reshape(2)
        obs, rew, term, trunc, raw = self.env.step(actions)
        info: dict[str, Any] = {}
        if term[0] or trunc[0]:
            row = int(np.flatnonzero(raw["final_idx"] == 0)[0])
            self._next_obs = obs[0].copy()
            info["is_success"] = bool(raw["final_delivered"][row])
            return raw["final_obs"][row].copy(), float(rew[0]), bool(term[0]), bool(trunc[0]), info
        return obs[0].copy(), float(rew[0]), False, False, info


GYM_ID = "autopilot/DroneDelivery-v0"
if GYM_ID not in gym.registry:
    gym.register(id=GYM_ID, entry_point=DroneDeliverySingleEnv)
