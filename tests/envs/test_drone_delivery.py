"""drone_delivery: contract, rules, determinism, auto-reset, stats and vectorisation."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autopilot.envs.drone_delivery import (
    SPACE,
    STAT_KEYS,
    DroneDeliveryEnv,
    DroneDeliveryParams,
)
from autopilot.envs.drone_delivery_torch import DroneDeliveryTorchEnv
from autopilot.envs.registry import VecEnv, agents_factors, agents_per_env, make_env, validate_env_params
from autopilot.errors import ConfigError


class TorchAsNumpy:
    """The torch implementation behind the numpy one's interface (CPU tensors shown as numpy arrays that
    share their memory, so the tests' writes reach the torch env's state): the same tests run on both."""

    def __init__(self, env: DroneDeliveryTorchEnv):
        self.env = env

    def __getattr__(self, name):
        value = getattr(self.env, name)
        return value.numpy() if isinstance(value, torch.Tensor) else value

    def __setattr__(self, name, value):
        if name == "env":
            object.__setattr__(self, name, value)
        else:
            setattr(self.env, name, value)

    def reset(self, seed=None):
        obs, info = self.env.reset(seed=seed)
        return obs.numpy(), info

    def step(self, actions):
        *out, info = self.env.step(torch.as_tensor(np.asarray(actions, np.float32)))
        info = {k: v.numpy() for k, v in info.items()}
        return (*(t.numpy() for t in out), info)


IMPLS = pytest.mark.parametrize("impl", ["numpy", "torch"])


def make(num_envs=4, num_drones=4, seed=0, impl="numpy", **kw) -> DroneDeliveryEnv:
    params = DroneDeliveryParams(num_envs=num_envs, num_drones=num_drones, **kw)
    env = DroneDeliveryEnv(params, seed) if impl == "numpy" else TorchAsNumpy(DroneDeliveryTorchEnv(params, seed))
    env.reset(seed=seed)
    return env


def place(env: DroneDeliveryEnv, agent: int, pos, vel=(0.0, 0.0), package=None, drop=None, carrying=None):
    """Put one drone in a chosen state (the views write through to the env's arrays)."""
    env.pos[agent] = pos
    env.vel[agent] = vel
    if package is not None:
        env.package[agent] = package
    if drop is not None:
        env.drop[agent] = drop
    if carrying is not None:
        env.carrying[agent] = carrying
    env.target[agent] = env.drop[agent] if env.carrying[agent] else env.package[agent]
    env._dist[agent] = np.linalg.norm(env.target[agent] - env.pos[agent])


def test_registry_builds_the_env_with_the_contract_shapes():
    env = make_env("drone_delivery", {"num_envs": 3, "num_drones": 5}, seed=1)
    assert isinstance(env, VecEnv)
    assert env.num_agents == 15 == agents_per_env("drone_delivery", {"num_envs": 3, "num_drones": 5})
    assert agents_factors("drone_delivery", {"num_envs": 3, "num_drones": 5}) == [3, 5]
    obs, info = env.reset(seed=1)
    assert obs.shape == (15, 22) and obs.dtype == np.float32 and info == {}
    assert env.single_observation_space.shape == (22,)
    assert env.single_action_space.shape == (2,)
    obs, rew, term, trunc, info = env.step(np.zeros((15, 2), np.float32))
    assert obs.shape == (15, 22) and obs.dtype == np.float32
    assert rew.shape == (15,) and rew.dtype == np.float32
    assert term.shape == trunc.shape == (15,) and term.dtype == trunc.dtype == bool


@IMPLS
def test_observations_are_finite_and_inside_the_declared_space_under_random_and_extreme_actions(impl):
    env = make(num_envs=8, num_drones=6, seed=3, impl=impl)
    rng = np.random.default_rng(0)
    space = env.single_observation_space
    ended = 0
    for i in range(600):
        # Mix uniform actions with out-of-range ones (they are clipped) to drive drones out of bounds.
        act = rng.uniform(-1, 1, (env.num_agents, 2)) if i % 2 else rng.normal(0, 5, (env.num_agents, 2))
        obs, rew, term, trunc, _ = env.step(act)
        assert np.isfinite(obs).all() and np.isfinite(rew).all()
        assert (obs >= space.low).all() and (obs <= space.high).all()
        assert not (term & trunc).any()
        ended += int((term | trunc).sum())
    assert ended > 50  # the loop really crossed many episode boundaries
    assert env.pop_episode_stats()["oob_rate"] > 0


@IMPLS
def test_same_seed_same_trajectory_and_different_seed_differs(impl):
    def rollout(seed):
        env = make(num_envs=4, num_drones=4, seed=seed, impl=impl)
        rng = np.random.default_rng(7)
        out = [env.reset(seed=seed)[0]]
        for _ in range(300):
            obs, rew, term, trunc, _ = env.step(rng.uniform(-1, 1, (env.num_agents, 2)))
            out += [obs, rew, term, trunc]
        return out, env.pop_episode_stats()

    a, sa = rollout(11)
    b, sb = rollout(11)
    c, _ = rollout(12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)) and sa == sb
    assert not np.array_equal(a[0], c[0])


@IMPLS
def test_zero_thrust_truncates_every_drone_exactly_at_the_time_limit_and_resets_it(impl):
    env = make(num_envs=2, num_drones=3, max_steps=25, impl=impl)
    first, _ = env.reset(seed=5)
    zero = np.zeros((env.num_agents, 2), np.float32)
    for _ in range(24):
        obs, rew, term, trunc, _ = env.step(zero)
        assert not term.any() and not trunc.any()
    np.testing.assert_array_equal(obs[:, 0:2], first[:, 0:2])  # hovering drones do not move
    obs, rew, term, trunc, _ = env.step(zero)
    assert trunc.all() and not term.any()
    # Auto-reset: the returned obs is the next episode's first: clock 0, at rest, new spawn points.
    assert (obs[:, 11] == 0).all() and (obs[:, 2:4] == 0).all() and (obs[:, 10] == 0).all()
    assert not np.array_equal(obs[:, 0:2], first[:, 0:2])
    assert (env.t == 0).all()
    stats = env.pop_episode_stats()
    assert set(stats) == set(STAT_KEYS)
    assert stats["episodes"] == 6 and stats["episode_length"] == 6 * 25
    assert stats["success_rate"] == 0 and stats["oob_rate"] == 0
    assert env.pop_episode_stats()["episodes"] == 0  # popping empties the window


@IMPLS
def test_final_obs_reports_the_terminal_state_when_asked(impl):
    env = make(num_envs=1, num_drones=2, max_steps=10, impl=impl)
    env.record_final_obs = True
    zero = np.zeros((2, 2), np.float32)
    for _ in range(9):
        _, _, _, _, info = env.step(zero)
        assert info["final_idx"].size == 0
    obs, _, _, trunc, info = env.step(zero)
    assert trunc.all() and list(info["final_idx"]) == [0, 1]
    assert (info["final_obs"][:, 11] == 1.0).all() and (obs[:, 11] == 0.0).all()
    assert not info["final_delivered"].any()


@IMPLS
def test_pickup_needs_to_be_near_and_slow_and_pays_the_bonus(impl):
    p = DroneDeliveryParams(num_envs=1, num_drones=2)
    env = make(num_envs=1, num_drones=2, impl=impl)
    # Drone 0: inside the radius, slow -> picked up. Drone 1: inside the radius but too fast -> not.
    place(env, 0, pos=(0.0, 0.0), vel=(0.0, 0.0), package=(0.02, 0.0), drop=(0.6, 0.6), carrying=False)
    place(env, 1, pos=(-0.5, -0.5), vel=(0.05, 0.0), package=(-0.44, -0.5), drop=(0.6, -0.6), carrying=False)
    obs, rew, term, _, _ = env.step(np.zeros((2, 2), np.float32))
    assert env.carrying[0] and not env.carrying[1]
    assert obs[0, 10] == 1.0 and obs[1, 10] == 0.0
    np.testing.assert_allclose(obs[0, 4:6], obs[0, 8:10])  # the target is now the drop zone
    assert rew[0] == pytest.approx(p.reward_pickup, abs=1e-6)  # no movement: only the bonus
    assert not term.any()


@IMPLS
def test_delivery_terminates_counts_a_success_and_pays_the_bonus(impl):
    env = make(num_envs=1, num_drones=2, impl=impl)
    env.pop_episode_stats()
    place(env, 0, pos=(0.3, 0.3), package=(-0.5, -0.5), drop=(0.33, 0.3), carrying=True)
    place(env, 1, pos=(-0.6, 0.6), package=(0.5, -0.5), drop=(-0.6, 0.63), carrying=True)
    env.vel[1] = (0.0, 0.04)  # drone 1 is in its drop zone but too fast to land
    obs, rew, term, trunc, _ = env.step(np.zeros((2, 2), np.float32))
    assert term[0] and not term[1] and not trunc.any()
    assert rew[0] == pytest.approx(2.0, abs=1e-6)
    stats = env.pop_episode_stats()
    assert stats["episodes"] == 1 and stats["success_rate"] == 1 and stats["oob_rate"] == 0
    assert stats["mean_reward"] == pytest.approx(float(rew[0]))
    assert obs[0, 10] == 0.0 and obs[0, 11] == 0.0  # respawned, not carrying


@IMPLS
def test_leaving_the_arena_terminates_with_the_penalty_and_counts_oob(impl):
    env = make(num_envs=1, num_drones=1, impl=impl)
    env.pop_episode_stats()
    place(env, 0, pos=(0.99, 0.0), vel=(0.05, 0.0), package=(0.0, 0.5), drop=(-0.5, -0.5), carrying=False)
    dist_before = float(env._dist[0])
    _, rew, term, _, _ = env.step(np.array([[1.0, 0.0]], np.float32))
    assert term[0]
    moved_away = np.hypot(1.04, 0.5) - dist_before  # 0.05 further from the package
    assert rew[0] == pytest.approx(-1.0 - moved_away, abs=1e-5)
    stats = env.pop_episode_stats()
    assert stats["oob_rate"] == 1 and stats["success_rate"] == 0 and stats["episodes"] == 1


@IMPLS
def test_a_collision_is_a_crash_that_ends_both_episodes_with_the_penalty(impl):
    env = make(num_envs=1, num_drones=3, impl=impl)
    env.pop_episode_stats()
    place(env, 0, pos=(0.0, 0.0), package=(0.5, 0.5), drop=(-0.5, 0.5))
    place(env, 1, pos=(0.03, 0.0), package=(-0.5, -0.5), drop=(0.5, -0.5))
    place(env, 2, pos=(0.7, -0.7), package=(-0.5, 0.0), drop=(0.5, 0.0))
    obs, rew, term, trunc, _ = env.step(np.zeros((3, 2), np.float32))
    np.testing.assert_array_equal(term, [True, True, False])
    np.testing.assert_allclose(rew, [-1.0, -1.0, 0.0], atol=1e-6)
    stats = env.pop_episode_stats()
    assert stats["episodes"] == 2 and stats["collision_rate"] == 2 and stats["success_rate"] == 0
    assert np.linalg.norm(env.pos[0] - env.pos[1]) >= 0.1  # respawned clear of each other


@IMPLS
def test_without_crashes_collisions_cost_a_penalty_per_step_and_count_once_per_episode(impl):
    env = make(num_envs=1, num_drones=3, max_steps=4, collision_ends_episode=False, penalty_collision=0.1, impl=impl)
    env.pop_episode_stats()
    place(env, 0, pos=(0.0, 0.0), package=(0.5, 0.5), drop=(-0.5, 0.5))
    place(env, 1, pos=(0.03, 0.0), package=(-0.5, -0.5), drop=(0.5, -0.5))
    place(env, 2, pos=(0.7, -0.7), package=(-0.5, 0.0), drop=(0.5, 0.0))
    zero = np.zeros((3, 2), np.float32)
    for _ in range(3):
        _, rew, term, _, _ = env.step(zero)
        np.testing.assert_allclose(rew, [-0.1, -0.1, 0.0], atol=1e-6)
        assert not term.any()
    env.step(zero)  # the 4th step truncates all three
    stats = env.pop_episode_stats()
    assert stats["episodes"] == 3 and stats["collision_rate"] == 2


@IMPLS
def test_spawn_points_keep_clear_of_the_other_drones(impl):
    env = make(num_envs=50, num_drones=16, seed=2, impl=impl)
    for _ in range(3):
        env.reset(seed=None)
        xy = env.pos.reshape(16, 50, 2)  # drone-major: [drone, arena]
        d = np.linalg.norm(xy[:, None] - xy[None, :], axis=-1)
        d[np.arange(16), np.arange(16)] = np.inf
        assert d.min() >= 2 * env.params.collision_radius


@IMPLS
def test_progress_reward_is_the_decrease_in_distance_to_the_target(impl):
    env = make(num_envs=1, num_drones=1, reward_progress=2.0, impl=impl)
    place(env, 0, pos=(0.0, 0.0), package=(0.6, 0.0), drop=(-0.6, 0.0), carrying=False)
    _, rew, _, _, _ = env.step(np.array([[1.0, 0.0]], np.float32))
    assert env.vel[0, 0] == pytest.approx(0.025)  # accel × thrust from rest
    assert rew[0] == pytest.approx(2.0 * 0.025, abs=1e-6)
    _, rew, _, _, _ = env.step(np.array([[-1.0, 0.0]], np.float32))
    assert env.vel[0, 0] == pytest.approx(0.025 * 0.5 - 0.025)  # drag then reverse thrust
    assert rew[0] < 0


@IMPLS
def test_speed_is_capped(impl):
    env = make(num_envs=1, num_drones=1, max_speed=0.03, impl=impl)
    for _ in range(10):
        env.step(np.array([[1.0, 1.0]], np.float32))
    assert np.linalg.norm(env.vel[0]) == pytest.approx(0.03, rel=1e-5)


@IMPLS
def test_neighbour_observation_matches_a_brute_force_nearest_search(impl):
    env = make(num_envs=5, num_drones=6, seed=4, impl=impl)
    rng = np.random.default_rng(1)
    for _ in range(30):
        obs, _, term, trunc, _ = env.step(rng.uniform(-1, 1, (env.num_agents, 2)))
    for _ in range(20):  # coast until a step without respawns, where the ranking is exact
        obs, _, term, trunc, _ = env.step(np.zeros((env.num_agents, 2), np.float32))
        if not (term | trunc).any():
            break
    assert not (term | trunc).any()
    assert np.abs(env.vel).max() > 0  # velocities still differ: the relative-velocity check is real
    pos, vel = env.pos.copy(), env.vel.copy()
    arena = np.arange(env.num_agents) % env.num_envs  # agents are numbered drone-major
    for i in range(env.num_agents):
        others = np.flatnonzero((arena == arena[i]) & (np.arange(env.num_agents) != i))
        order = others[np.argsort(np.linalg.norm(pos[others] - pos[i], axis=1))][:2]
        for slot, j in enumerate(order):
            feats = obs[i, 12 + 5 * slot: 17 + 5 * slot]
            np.testing.assert_allclose(feats[0:2], np.clip((pos[j] - pos[i]) / 0.5, -1, 1), atol=1e-5)
            np.testing.assert_allclose(feats[2:4], np.clip((vel[j] - vel[i]) / 0.1, -1, 1), atol=1e-5)
            assert feats[4] == 1.0


@IMPLS
def test_missing_neighbours_are_zero_padded(impl):
    env = make(num_envs=3, num_drones=2, num_neighbors=3, impl=impl)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6, 12 + 15)
    assert (obs[:, 16] == 1.0).all()  # one real neighbour
    assert (obs[:, 17:] == 0.0).all()  # two empty slots
    solo = make(num_envs=2, num_drones=1, impl=impl)
    obs, _ = solo.reset(seed=0)
    assert (obs[:, 12:] == 0.0).all()
    for _ in range(5):
        obs, *_ = solo.step(np.ones((2, 2), np.float32))
    assert np.isfinite(obs).all()


def test_params_are_validated_with_config_errors():
    with pytest.raises(ConfigError, match="env.bogus"):
        validate_env_params("drone_delivery", {"bogus": 1})
    with pytest.raises(ConfigError, match="env.num_drones"):
        validate_env_params("drone_delivery", {"num_drones": 0})
    with pytest.raises(ConfigError, match="pickup_max_speed"):
        validate_env_params("drone_delivery", {"pickup_max_speed": 0.2})


def test_every_param_has_a_range_and_its_default_lies_inside_it():
    fields = DroneDeliveryParams.model_fields
    assert {k.removeprefix("env.") for k in SPACE} == set(fields)
    for key, ps in SPACE.items():
        assert ps.contains(fields[key.removeprefix("env.")].default), key
    tunable = {k for k, ps in SPACE.items() if ps.tunable}
    assert tunable and all(k.startswith("env.reward_") or k.startswith("env.penalty_") for k in tunable)


@IMPLS
def test_step_runs_the_same_python_lines_whatever_the_agent_count(impl):
    """No Python loop over agents or arenas: the Python lines one step executes must not grow with 64×
    the agents (any per-agent loop, even of plain indexing, runs its body's lines per agent).
    Counted with a line tracer, not timed, so a busy machine cannot make it flaky."""

    def lines_per_step(env, n=10):
        act = np.random.default_rng(0).uniform(-1, 1, (env.num_agents, 2)).astype(np.float32)
        env.step(act)  # warm-up: first-call paths
        count = 0

        def tracer(frame, event, arg):
            nonlocal count
            if event == "line":
                count += 1
            return tracer

        sys.settrace(tracer)
        try:
            for _ in range(n):
                env.step(act)
        finally:
            sys.settrace(None)
        return count / n

    small, big = make(num_envs=8, num_drones=8, impl=impl), make(num_envs=512, num_drones=8, impl=impl)
    # Respawns and rejection-sampling rounds vary a little with the draw; a per-agent loop would be 64×.
    assert lines_per_step(big) < 1.5 * lines_per_step(small)


@IMPLS
@settings(max_examples=25, deadline=None)
@given(num_envs=st.integers(1, 6), num_drones=st.integers(1, 9), num_neighbors=st.integers(0, 4),
       crash=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_any_shape_keeps_the_contract_and_rates_stay_in_the_unit_interval(num_envs, num_drones,
                                                                          num_neighbors, crash, seed, impl):
    env = make(num_envs=num_envs, num_drones=num_drones, num_neighbors=num_neighbors, seed=seed,
               max_steps=30, collision_ends_episode=crash, impl=impl)
    rng = np.random.default_rng(seed)
    for _ in range(70):
        obs, rew, term, trunc, _ = env.step(rng.uniform(-1.5, 1.5, (env.num_agents, 2)))
        assert obs.shape == (env.num_agents, 12 + 5 * num_neighbors) and np.isfinite(obs).all()
        assert env.single_observation_space.contains(obs[0]) and (np.abs(obs) <= 1).all()
    stats = env.pop_episode_stats()
    assert stats["episodes"] >= env.num_agents * 2  # every drone finished at least two episodes
    for key in ("success_rate", "collision_rate", "oob_rate"):
        assert 0 <= stats[key] / stats["episodes"] <= 1
    assert 1 <= stats["episode_length"] / stats["episodes"] <= 30
