"""The in-process and shared-memory vectorisation give the same experience; worker failures surface."""

from __future__ import annotations

import numpy as np
import pytest

from autopilot.trainer.vector import EnvMaker, SerialVec, SharedMemoryVec, WorkerError, make_vector


def _run(vec, steps=30, discrete=False, seed=0):
    rng = np.random.default_rng(seed)
    obs = [vec.reset(7).copy()]
    rews = []
    for _ in range(steps):
        if discrete:
            a = rng.integers(0, 5, vec.num_agents)
        else:
            a = rng.uniform(-1, 1, (vec.num_agents, 2)).astype(np.float32)
        o, r, te, tr = vec.step(a)
        obs.append(o.copy())
        rews.append(r.copy())
    return np.stack(obs), np.stack(rews), vec.pop_episode_stats()


@pytest.mark.parametrize("discrete", [False, True])
def test_serial_and_shared_memory_workers_agree(discrete):
    params = {"num_agents": 8, "discrete": discrete, "max_steps": 5}
    serial = make_vector("toy_reach", params, num_envs=4, num_workers=1, seed=3)
    shared = make_vector("toy_reach", params, num_envs=4, num_workers=2, seed=3)
    try:
        assert isinstance(serial, SerialVec) and isinstance(shared, SharedMemoryVec)
        assert serial.num_agents == shared.num_agents == 32
        o1, r1, s1 = _run(serial, discrete=discrete)
        o2, r2, s2 = _run(shared, discrete=discrete)
    finally:
        serial.close()
        shared.close()
    assert np.array_equal(o1, o2) and np.array_equal(r1, r2)
    assert s1 == s2 and s1["episodes"] >= 32  # max_steps 5 over 30 steps: every agent finished several


@pytest.mark.parametrize(("src_workers", "dst_workers"), [(1, 1), (2, 2), (1, 2), (2, 1)])
def test_env_state_moves_between_backends_and_continues_the_same_trajectories(src_workers, dst_workers):
    params = {"num_agents": 4, "max_steps": 50}
    a = make_vector("toy_reach", params, num_envs=2, num_workers=src_workers, seed=1)
    b = make_vector("toy_reach", params, num_envs=2, num_workers=dst_workers, seed=99)
    try:
        _run(a, steps=5)
        state = a.get_state()
        assert state is not None and b.set_state(state) is True
        act = np.full((8, 2), 0.3, np.float32)
        for _ in range(3):
            assert np.array_equal(a.step(act)[0], b.step(act)[0])
    finally:
        a.close()
        b.close()


def test_env_state_that_does_not_fit_is_refused():
    a = make_vector("toy_reach", {"num_agents": 4}, num_envs=2, num_workers=1, seed=1)
    b = make_vector("toy_reach", {"num_agents": 3}, num_envs=2, num_workers=2, seed=1)
    try:
        assert b.set_state(a.get_state()) is False
        assert a.set_state(b.get_state()) is False
    finally:
        a.close()
        b.close()


def test_worker_failure_is_reported_with_its_traceback():
    vec = make_vector("toy_reach", {"num_agents": 4}, num_envs=2, num_workers=2, seed=0)
    try:
        vec.reset(0)
        with pytest.raises(WorkerError, match="Traceback"):
            vec._call("set_state", [b"not a pickle", b"not a pickle"])
    finally:
        vec.close()


def test_env_maker_is_picklable_and_builds_the_env():
    import pickle

    maker = pickle.loads(pickle.dumps(EnvMaker.for_env("toy_reach", {"num_agents": 3})))
    env = maker(0)
    assert env.num_agents == 3
