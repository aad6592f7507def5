"""drone_delivery in torch: the same trajectories as the numpy env, and a device-RNG mode that never
reads the device from the host during a step. (The shared contract and rule tests run on both
implementations in test_drone_delivery.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autopilot.envs.drone_delivery import DroneDeliveryEnv, DroneDeliveryParams
from autopilot.envs.drone_delivery_torch import DroneDeliveryTorchEnv
from autopilot.trainer.vector import TorchVec


def assert_same_step(numpy_out, torch_out, where: str) -> None:
    for name, a, b in zip(("obs", "reward", "terminated", "truncated"), numpy_out[:4], torch_out[:4], strict=True):
        b = b.numpy()
        assert a.shape == b.shape and a.dtype == b.dtype, (where, name)
        if a.dtype == bool:
            np.testing.assert_array_equal(a, b, err_msg=f"{where}: {name}")
        else:
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=f"{where}: {name}")


@pytest.mark.parametrize("shape", [
    {"num_envs": 16, "num_drones": 6, "max_steps": 60},
    {"num_envs": 7, "num_drones": 3, "max_steps": 25, "collision_ends_episode": False, "penalty_collision": 0.3},
    {"num_envs": 5, "num_drones": 1, "num_neighbors": 0, "max_steps": 40},
    {"num_envs": 3, "num_drones": 9, "num_neighbors": 4, "collision_radius": 0.08, "reward_progress": 2.5},
])
def test_same_seed_and_actions_give_the_numpy_trajectory(shape):
    params = DroneDeliveryParams(**shape)
    ref, env = DroneDeliveryEnv(params, seed=3), DroneDeliveryTorchEnv(params, seed=3)
    ref.record_final_obs = env.record_final_obs = True
    o_ref, _ = ref.reset(seed=11)
    o_env, _ = env.reset(seed=11)
    np.testing.assert_array_equal(o_ref, o_env.numpy())
    rng = np.random.default_rng(0)
    episodes = 0
    for step in range(200):
        # Mostly in-range thrust, sometimes saturated (clipping), sometimes near zero (pickups need slow drones).
        scale = (1.0, 3.0, 0.05)[step % 3]
        act = (rng.uniform(-1, 1, (ref.num_agents, 2)) * scale).astype(np.float32)
        out_ref, out_env = ref.step(act), env.step(torch.from_numpy(act))
        assert_same_step(out_ref, out_env, f"step {step}")
        np.testing.assert_array_equal(out_ref[4]["final_idx"], out_env[4]["final_idx"].numpy())
        np.testing.assert_allclose(out_ref[4]["final_obs"], out_env[4]["final_obs"].numpy(), atol=1e-5)
        episodes += out_ref[4]["final_idx"].size
        if step == 100:  # a reseeded reset mid-way draws the same again
            np.testing.assert_array_equal(ref.reset(seed=5)[0], env.reset(seed=5)[0].numpy())
    assert episodes > ref.num_agents  # the comparison crossed many respawns
    s_ref, s_env = ref.pop_episode_stats(), env.pop_episode_stats()
    assert s_ref.keys() == s_env.keys()
    for key in s_ref:
        assert s_env[key] == pytest.approx(s_ref[key], rel=1e-9, abs=1e-6), key
    np.testing.assert_array_equal(ref.carrying, env.carrying.numpy())
    np.testing.assert_array_equal(ref.neighbors, env.neighbors.numpy())


def test_the_scripted_controller_scores_the_same_on_both():
    from autopilot.envs.scripted import scripted_actions

    params = DroneDeliveryParams(num_envs=16, num_drones=4)
    ref, env = DroneDeliveryEnv(params, seed=1), DroneDeliveryTorchEnv(params, seed=1)
    ref.reset(seed=1)
    env.reset(seed=1)
    for _ in range(250):
        act = scripted_actions(ref)
        assert_same_step(ref.step(act), env.step(torch.from_numpy(act)), "scripted")
    s_ref, s_env = ref.pop_episode_stats(), env.pop_episode_stats()
    assert s_ref["success_rate"] > 0.3 * s_ref["episodes"]  # the controller really delivers
    assert s_env == pytest.approx(s_ref)


class _HostReadForbidden(AssertionError):
    pass


def _forbid_host_reads(monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise _HostReadForbidden("a step read a tensor back to the host")

    for name in ("cpu", "numpy", "item", "tolist", "__bool__", "__int__", "__float__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


def test_device_respawns_never_read_the_device_during_a_step(monkeypatch):
    env = DroneDeliveryTorchEnv(DroneDeliveryParams(num_envs=8, num_drones=4, max_steps=10), seed=0,
                                respawn_rng="device")
    env.reset(seed=0)
    act = torch.ones(env.num_agents, 2)
    with monkeypatch.context() as m:
        _forbid_host_reads(m)
        for _ in range(25):  # crosses the time limit twice: every drone respawns on the device
            env.step(act)
    stats = env.pop_episode_stats()
    assert stats["episodes"] >= env.num_agents  # (and the host-RNG mode does read: the guard is real)
    host = DroneDeliveryTorchEnv(DroneDeliveryParams(num_envs=8, num_drones=4, max_steps=10), seed=0)
    host.reset(seed=0)
    with monkeypatch.context() as m:
        _forbid_host_reads(m)
        with pytest.raises(_HostReadForbidden):
            for _ in range(25):
                host.step(act)


def test_device_respawns_follow_the_spawn_rules_and_are_seeded():
    params = DroneDeliveryParams(num_envs=16, num_drones=8)

    def run(seed):
        env = DroneDeliveryTorchEnv(params, seed=seed, respawn_rng="device")
        obs = [env.reset(seed=seed)[0]]
        gen = torch.Generator().manual_seed(0)
        for _ in range(30):
            obs.append(env.step(torch.rand(env.num_agents, 2, generator=gen) * 2 - 1)[0])
        return env, torch.stack(obs)

    env, a = run(4)
    _, b = run(4)
    _, c = run(5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    env.reset(seed=9)
    xy = env.pos.reshape(8, 16, 2)
    d = torch.cdist(xy.transpose(0, 1), xy.transpose(0, 1))  # (arena, drone, drone)
    d += torch.eye(8) * 10
    assert d.min() >= 2 * params.collision_radius - 1e-6
    rel = (env.package - env.pos).norm(dim=1)
    assert rel.min() >= 0.3 - 1e-6 and (env.drop - env.package).norm(dim=1).min() >= 0.5 - 1e-6
    assert env.package.abs().max() <= 0.8 and env.pos.abs().max() <= 0.9


def test_device_respawns_give_the_numpy_episode_statistics():
    """Different draws, same distributions: a random policy's episode stats agree within sampling noise."""
    params = DroneDeliveryParams(num_envs=48, num_drones=8, max_steps=40)
    stats = {}
    for name, env in (("numpy", DroneDeliveryEnv(params, 2)),
                      ("device", DroneDeliveryTorchEnv(params, 2, respawn_rng="device"))):
        env.reset(seed=2)
        rng = np.random.default_rng(1)
        for _ in range(120):
            act = rng.uniform(-1, 1, (env.num_agents, 2)).astype(np.float32)
            env.step(act if name == "numpy" else torch.from_numpy(act))
        s = env.pop_episode_stats()
        stats[name] = {k: s[k] / s["episodes"] for k in ("oob_rate", "collision_rate", "episode_length")}
    for key, value in stats["numpy"].items():
        assert stats["device"][key] == pytest.approx(value, rel=0.1), key


def test_torch_vec_joins_env_objects_and_sums_their_stats():
    vec = TorchVec("drone_delivery", {"num_envs": 3, "num_drones": 2, "max_steps": 5}, 2, seed=7, device="cpu",
                   respawn_rng="host")
    obs = vec.reset(seed=7)
    assert obs.shape == (12, 22) and vec.num_agents == 12
    np.testing.assert_array_equal(obs[6:].numpy(), DroneDeliveryTorchEnv(
        DroneDeliveryParams(num_envs=3, num_drones=2, max_steps=5), seed=8).reset(seed=8)[0].numpy())
    for _ in range(5):
        obs, rew, term, trunc = vec.step(torch.zeros(12, 2))
    assert trunc.all() and rew.shape == (12,) and obs.shape == (12, 22)
    assert vec.pop_episode_stats()["episodes"] == 12
    assert vec.get_state() is None and vec.set_state(b"") is False


def test_a_bad_respawn_mode_is_refused():
    with pytest.raises(ValueError, match="respawn_rng"):
        DroneDeliveryTorchEnv(DroneDeliveryParams(), respawn_rng="gpu")
