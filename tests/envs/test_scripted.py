"""The task is solvable (scripted controller) and not trivial (uniformly random thrust)."""

from __future__ import annotations

import numpy as np

from autopilot.envs.drone_delivery import DroneDeliveryEnv, DroneDeliveryParams
from autopilot.envs.scripted import scripted_actions


def run(policy: str, steps: int = 700, num_envs: int = 16, num_drones: int = 4, seed: int = 0) -> dict:
    env = DroneDeliveryEnv(DroneDeliveryParams(num_envs=num_envs, num_drones=num_drones), seed)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        act = scripted_actions(env) if policy == "scripted" else rng.uniform(-1, 1, (env.num_agents, 2))
        env.step(act)
    stats = env.pop_episode_stats()
    n = stats.pop("episodes")
    return {"episodes": n, **{k: v / n for k, v in stats.items()}}


def test_scripted_controller_delivers_in_at_least_90_percent_of_episodes():
    s = run("scripted")
    assert s["episodes"] >= 500
    assert s["success_rate"] >= 0.9, s
    assert s["oob_rate"] == 0.0
    assert s["mean_reward"] > 4.0  # progress + pickup + delivery, few collisions


def test_uniformly_random_thrust_delivers_in_at_most_5_percent_of_episodes():
    s = run("random")
    assert s["episodes"] >= 200
    assert s["success_rate"] <= 0.05, s
    assert s["oob_rate"] > 0.2  # an untrained policy does wander out: the oob stat is informative


def test_scripted_actions_are_valid_thrusts():
    env = DroneDeliveryEnv(DroneDeliveryParams(num_envs=3, num_drones=5), 0)
    env.reset(seed=0)
    act = scripted_actions(env)
    assert act.shape == (15, 2) and act.dtype == np.float32
    assert np.abs(act).max() <= 1.0 and np.abs(act).max() > 0.5


def test_scripted_controller_keeps_its_distance_from_neighbours():
    """Avoidance works: it nearly never crashes, and the same controller without the neighbour term does."""
    import autopilot.envs.scripted as scripted

    with_avoid = run("scripted", steps=400, num_envs=16, num_drones=8)["collision_rate"]
    gain = scripted.AVOID_GAIN
    try:
        scripted.AVOID_GAIN = 0.0
        without = run("scripted", steps=400, num_envs=16, num_drones=8)["collision_rate"]
    finally:
        scripted.AVOID_GAIN = gain
    assert with_avoid < 0.02 and without > 0.2, (with_avoid, without)
