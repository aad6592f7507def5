"""The source of a third-party plugin, as a user would write it: a tiny vector env and an advisor.

The tests write it out as an installable package (registered through entry points) or as a plain
module beside the config (named in `autopilot.plugins`); it is never imported from here.
"""

ENV_MODULE = '''
import numpy as np
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict

from autopilot.envs.registry import EnvSpec


class LineParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_agents: int = 16
    max_steps: int = 12


class LineReach:
    """Agents on a line step left, stay or right until they reach their target (success)."""

    def __init__(self, params, seed=0):
        self.p, self.num_agents = params, params.num_agents
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.single_action_space = spaces.Discrete(3)
        self.rng = np.random.default_rng(seed)
        self.pos = np.zeros(self.num_agents, np.float32)
        self.target = np.zeros(self.num_agents, np.float32)
        self.t = np.zeros(self.num_agents, np.int64)
        self.ret = np.zeros(self.num_agents, np.float32)
        self.sums, self.episodes = {}, 0

    def _respawn(self, mask):
        self.pos[mask] = self.rng.integers(-4, 5, int(mask.sum()))
        self.target[mask] = self.rng.integers(-4, 5, int(mask.sum()))
        self.t[mask], self.ret[mask] = 0, 0.0

    def _obs(self):
        return (self.target - self.pos)[:, None].astype(np.float32)

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._respawn(np.ones(self.num_agents, bool))
        return self._obs(), {}

    def step(self, actions):
        self.pos += np.asarray(actions, np.int64) - 1
        self.t += 1
        success = self.pos == self.target
        reward = np.where(success, 1.0, -0.05).astype(np.float32)
        self.ret += reward
        trunc = (self.t >= self.p.max_steps) & ~success
        done = success | trunc
        if done.any():
            self.episodes += int(done.sum())
            for key, val in (("success_rate", success[done]), ("mean_reward", self.ret[done]),
                             ("episode_length", self.t[done])):
                self.sums[key] = self.sums.get(key, 0.0) + float(np.sum(val))
            self._respawn(done)
        return self._obs(), reward, success, trunc, {}

    def pop_episode_stats(self):
        out = {"success_rate": 0.0, "mean_reward": 0.0, "episode_length": 0.0, **self.sums,
               "episodes": float(self.episodes)}
        self.sums, self.episodes = {}, 0
        return out

    def close(self):
        pass


SPEC = EnvSpec(name="line_reach", params_model=LineParams, factory=LineReach,
               agents_per_env=lambda p: p.num_agents, description="walk to a target on a line")
'''

ADVISOR_MODULE = '''
from autopilot.decide.advisors import Advisor
from autopilot.decide.records import Proposal


class HalfLearningRate(Advisor):
    """Always proposes 0.8 x the learning rate: easy to recognise in the next run's config."""

    def propose(self, ctx):
        lr = ctx.base_config.train.learning_rate
        return Proposal(advisor="its_advisor", changes={"train.learning_rate": lr * 0.8},
                        headline="learning rate x0.8", rationale=["a third-party advisor's fixed move"])
'''

# A config for that env: 2 runs of a few seconds each.
CONFIG = {
    "env_name": "line_reach", "env": {"num_agents": 32}, "vec": {"num_envs": 1, "num_workers": 1},
    "train": {"total_timesteps": 2048, "bptt_horizon": 16, "update_epochs": 2, "learning_rate": 0.005,
              "checkpoint_interval": 1000},
    "policy": {"hidden_size": 16, "num_layers": 1},
    "autopilot": {"eval_episodes": 0, "metrics_window": 2, "max_run_seconds": 120},
}
