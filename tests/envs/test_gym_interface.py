"""Gymnasium views of drone_delivery: a VectorEnv over all agents and a single-agent Env for SB3."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from autopilot.envs.gym_interface import GYM_ID, DroneDeliverySingleEnv, DroneDeliveryVectorEnv
from autopilot.envs.scripted import scripted_actions


def test_vector_env_is_a_gymnasium_vector_env_with_batched_spaces():
    env = DroneDeliveryVectorEnv(num_envs=3, num_drones=4)
    assert isinstance(env, VectorEnv) and env.num_envs == 12
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert env.observation_space.shape == (12, 22) and env.action_space.shape == (12, 2)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.action_space.seed(0)
    obs, rew, term, trunc, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs) and rew.shape == term.shape == trunc.shape == (12,)
    env.close()


def test_vector_env_same_step_autoreset_reports_final_obs():
    env = DroneDeliveryVectorEnv(num_envs=2, num_drones=2, max_steps=12)
    env.reset(seed=1)
    zero = np.zeros((4, 2), np.float32)
    for _ in range(11):
        _, _, _, _, info = env.step(zero)
        assert "final_obs" not in info
    obs, _, term, trunc, info = env.step(zero)
    assert trunc.all() and info["_final_obs"].all()
    for i in range(4):
        assert info["final_obs"][i][11] == 1.0  # the terminal obs: clock at the limit
    assert (obs[:, 11] == 0.0).all()  # the returned obs: the next episode's first


def test_vector_env_works_under_gymnasium_vector_wrappers():
    env = gym.wrappers.vector.RecordEpisodeStatistics(DroneDeliveryVectorEnv(num_envs=2, num_drones=2,
                                                                             max_steps=20))
    env.reset(seed=0)
    seen = False
    for _ in range(20):
        _, _, _, _, info = env.step(np.zeros((4, 2), np.float32))
        seen = seen or "episode" in info
    assert seen and (info["episode"]["l"][info["_episode"]] == 20).all()


def test_single_env_passes_the_gymnasium_and_sb3_checkers():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(gym.make(GYM_ID, num_drones=3).unwrapped)
    sb3_check_env(DroneDeliverySingleEnv(num_drones=3))


def test_single_env_episode_is_drone_zero_with_terminal_obs_and_success_flag():
    env = DroneDeliverySingleEnv(num_drones=3, seed=0)
    obs, _ = env.reset(seed=5)
    successes, episodes, steps = 0, 0, 0
    while episodes < 20:
        action = scripted_actions(env.env)[0]  # fly drone 0 with the scripted controller
        obs, rew, term, trunc, info = env.step(action)
        steps += 1
        assert env.observation_space.contains(obs) and isinstance(rew, float)
        if term or trunc:
            episodes += 1
            successes += info["is_success"]
            assert obs[10] == 1.0 or not info["is_success"]  # delivered while carrying
            nxt, _ = env.reset()
            assert nxt[11] == 0.0 and nxt[10] == 0.0  # a fresh episode, from the auto-reset
    assert successes >= 18
    assert steps < 20 * 120  # the scripted episodes are short


def test_single_env_reset_with_seed_is_deterministic():
    a = DroneDeliverySingleEnv(num_drones=2)
    b = DroneDeliverySingleEnv(num_drones=2)
    np.testing.assert_array_equal(a.reset(seed=3)[0], b.reset(seed=3)[0])
    for _ in range(30):
        act = np.array([0.3, -0.7], np.float32)
        np.testing.assert_array_equal(a.step(act)[0], b.step(act)[0])


def test_stable_baselines3_ppo_trains_on_the_single_arena_view():
    """~10 s on a laptop core; an outside library trains end to end through the Gymnasium API."""
    from stable_baselines3 import PPO

    env = DroneDeliverySingleEnv(num_drones=2, seed=0)
    model = PPO("MlpPolicy", env, n_steps=512, batch_size=128, n_epochs=2, seed=0, device="cpu", verbose=0)
    model.learn(total_timesteps=3072)
    assert model.num_timesteps >= 3072
    action, _ = model.predict(env.reset(seed=1)[0], deterministic=True)
    assert env.action_space.contains(np.asarray(action, dtype=np.float32))


def test_sb3_make_vec_env_builds_the_registered_id():
    """SB3 passes render_mode and retries without it only on a TypeError; the id must build."""
    import warnings

    from stable_baselines3.common.env_util import make_vec_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vec = make_vec_env("autopilot/DroneDelivery-v0", n_envs=2)
    obs = vec.reset()
    assert obs.shape == (2, 22)
    vec.close()
