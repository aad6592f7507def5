"""Rollouts: stepping half the env workers while the policy works on the other half is the same experience."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autopilot.trainer.policy import ActorCritic
from autopilot.trainer.rollout import RolloutBuffer, RolloutState, collect
from autopilot.trainer.vector import SharedMemoryVec, make_vector


def _rollout(vec, T: int, should_stop=None):
    torch.manual_seed(0)
    policy = ActorCritic(vec.single_observation_space, vec.single_action_space, 16, 2)
    state = RolloutState(vec.reset(5), torch.device("cpu"))
    start = state.next_obs.clone()
    buf = RolloutBuffer(T, vec.num_agents, int(start.shape[1]), (2,), torch.float32, torch.device("cpu"))
    timings: dict[str, float] = {}
    done = collect(policy, vec, buf, state, should_stop, timings)
    return done, buf, state, start, timings


@pytest.mark.parametrize("workers", [2, 4])
def test_overlapped_rollout_is_the_envs_own_response_to_its_actions(workers):
    """Replaying the buffer's actions through the in-process vectorisation (same seeds) gives back every
    observation, reward and done flag the overlapped rollout recorded, and the state it carries on."""
    params = {"num_agents": 8, "max_steps": 4}
    vec = make_vector("toy_reach", params, num_envs=4, num_workers=workers, seed=3)
    serial = make_vector("toy_reach", params, num_envs=4, num_workers=1, seed=3)
    try:
        assert isinstance(vec, SharedMemoryVec) and len(vec.step_groups()) == 2
        done, buf, state, start, timings = _rollout(vec, T=9)
        assert done and timings["env"] > 0 and timings["policy"] > 0
        obs = torch.from_numpy(serial.reset(5).copy())
        assert torch.equal(obs, start)
        next_done = torch.zeros(serial.num_agents)
        for t in range(9):
            assert torch.equal(buf.obs[t], obs) and torch.equal(buf.dones[t], next_done)
            o, r, te, tr = serial.step(buf.actions[t].clamp(-1, 1).numpy())
            assert torch.equal(buf.rewards[t], torch.from_numpy(r))
            obs, next_done = torch.from_numpy(o.copy()), torch.from_numpy(te | tr).float()
        assert torch.equal(state.next_obs, obs) and torch.equal(state.next_done, next_done)
        assert buf.dones.sum() > 0  # episodes of 4 steps ended inside the rollout
    finally:
        vec.close()
        serial.close()


def test_a_stop_mid_rollout_leaves_no_worker_mid_step():
    vec = make_vector("toy_reach", {"num_agents": 8, "max_steps": 4}, num_envs=2, num_workers=2, seed=3)
    try:
        calls = iter([False, False, True])
        done, _, state, _, _ = _rollout(vec, T=9, should_stop=lambda: next(calls))
        assert done is False
        # Both groups' last steps were received: the state is the envs' current obs, and the workers answer
        # the next command in turn.
        assert np.array_equal(state.next_obs.numpy(), vec.obs)
        assert vec.pop_episode_stats() is not None
        vec.step(np.zeros((vec.num_agents, 2), np.float32))
    finally:
        vec.close()


def test_step_groups_split_the_workers_in_halves():
    vec = make_vector("toy_reach", {"num_agents": 2}, num_envs=6, num_workers=3, seed=0)
    try:
        assert vec.step_groups() == [(0, 8, range(0, 2)), (8, 12, range(2, 3))]
        vec.reset(0)
        before = vec.obs.copy()
        vec.actions[...] = 1.0
        vec.step_send(range(2, 3))
        vec.step_wait(range(2, 3))  # only the last worker's rows moved
        assert np.array_equal(vec.obs[:8], before[:8]) and not np.array_equal(vec.obs[8:], before[8:])
    finally:
        vec.close()
