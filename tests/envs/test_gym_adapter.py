"""gym:<id>: any installed Gymnasium env behind our vector-env contract."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from autopilot.envs.registry import VecEnv, agents_per_env, get_env_spec, make_env, validate_env_params
from autopilot.errors import ConfigError


def test_cartpole_resolves_steps_and_reports_only_generic_stats():
    spec = get_env_spec("gym:CartPole-v1")
    assert spec.name == "gym:CartPole-v1"
    assert set(spec.params_model.model_fields) == {"num_envs"}
    assert spec.params_model().num_envs == 8
    assert agents_per_env("gym:CartPole-v1", {"num_envs": 5}) == 5
    env = make_env("gym:CartPole-v1", {"num_envs": 5}, seed=0)
    assert isinstance(env, VecEnv) and env.num_agents == 5
    assert isinstance(env.single_action_space, spaces.Discrete)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (5, 4) and obs.dtype == np.float32
    rng = np.random.default_rng(0)
    total_reward = 0.0
    for _ in range(400):
        obs, rew, term, trunc, _ = env.step(rng.integers(0, 2, 5))
        assert obs.shape == (5, 4) and obs.dtype == np.float32 and rew.dtype == np.float32
        assert term.dtype == bool and trunc.dtype == bool
        total_reward += float(rew.sum())
    stats = env.pop_episode_stats()
    assert set(stats) == {"episodes", "mean_reward", "episode_length"}  # no invented success_rate
    assert stats["episodes"] > 20  # random CartPole episodes last ~20 steps
    # CartPole pays 1 per step, so the summed returns equal the summed lengths.
    assert stats["mean_reward"] == stats["episode_length"] <= total_reward
    assert env.pop_episode_stats()["episodes"] == 0
    env.close()


def test_cartpole_auto_resets_to_a_fresh_first_observation():
    env = make_env("gym:CartPole-v1", {"num_envs": 3}, seed=0)
    env.reset(seed=0)
    resets = 0
    for _ in range(300):
        obs, _, term, trunc, _ = env.step(np.ones(3, dtype=np.int64))  # always push right: falls fast
        done = term | trunc
        if done.any():
            resets += int(done.sum())
            assert (np.abs(obs[done]) <= 0.05).all()  # CartPole starts uniformly in [-0.05, 0.05]
    assert resets > 10


def test_same_seed_same_rollout():
    def rollout(seed):
        env = make_env("gym:CartPole-v1", {"num_envs": 4}, seed=seed)
        out = [env.reset(seed=seed)[0]]
        rng = np.random.default_rng(1)
        for _ in range(100):
            out.append(env.step(rng.integers(0, 2, 4))[0])
        return np.stack(out)

    np.testing.assert_array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))


def test_box_actions_are_clipped_and_episodes_counted():
    env = make_env("gym:Pendulum-v1", {"num_envs": 2}, seed=0)
    assert isinstance(env.single_action_space, spaces.Box)
    env.reset(seed=0)
    for _ in range(200):  # Pendulum truncates at 200 steps
        obs, rew, term, trunc, _ = env.step(np.full((2, 1), 50.0, np.float32))  # clipped to 2.0
        assert np.isfinite(rew).all()
    assert trunc.all()
    stats = env.pop_episode_stats()
    assert stats["episodes"] == 2 and stats["episode_length"] == 400 and stats["mean_reward"] < 0


def test_discrete_observations_are_one_hot():
    env = make_env("gym:FrozenLake-v1", {"num_envs": 2}, seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 16)
    np.testing.assert_array_equal(obs.sum(axis=1), [1.0, 1.0])
    assert env.single_observation_space.contains(obs[0])


def test_unknown_gym_id_is_a_one_line_config_error_naming_it():
    with pytest.raises(ConfigError) as err:
        get_env_spec("gym:NoSuchEnv-v42")
    assert "NoSuchEnv-v42" in str(err.value) and "\n" not in str(err.value)


def test_gym_params_reject_unknown_keys():
    with pytest.raises(ConfigError, match="env.num_drones"):
        validate_env_params("gym:CartPole-v1", {"num_drones": 4})
    with pytest.raises(ConfigError, match="env.num_envs"):
        validate_env_params("gym:CartPole-v1", {"num_envs": 0})
