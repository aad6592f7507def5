"""A scripted drone_delivery controller: the sanity reference for what a good policy achieves.

Per drone, vectorised over all agents: pick a desired velocity toward the current target (the package,
then the drop zone) whose speed is proportional to the distance (so the drone arrives slowly enough to
pick up) and capped at the top speed; bend it away from neighbours that are too close; then choose the
thrust that reaches that velocity after drag, clipped to [-1, 1]. Tests use it to show the task is
solvable (it delivers in well over 90 % of episodes) and a learned policy can be compared with it.
"""

from __future__ import annotations

import numpy as np

from autopilot.envs.drone_delivery import DroneDeliveryEnv

AVOID_RADIUS = 0.15  # start steering away from a neighbour closer than this (3 collision radii)
AVOID_GAIN = 2.0  # how hard, in units of max_speed at contact (beats the pull of the target)


def scripted_actions(env: DroneDeliveryEnv) -> np.ndarray:
    """Thrust (num_agents, 2) in [-1, 1] for every drone of `env`, from its current state."""
    p = env.params
    pos, vel = env.pos, env.vel
    to_target = env.target - pos
    dist = np.sqrt((to_target**2).sum(axis=1, keepdims=True))
    # Speed ∝ distance: at the pickup (drop) radius the drone moves at 60 % of that speed limit.
    gain = 0.6 * min(p.pickup_max_speed / p.pickup_radius, p.drop_max_speed / p.drop_radius)
    speed = np.minimum(gain * dist, 0.95 * p.max_speed)
    desired = to_target * (speed / np.maximum(dist, 1e-6))

    for slot in range(env.neighbors.shape[0]):  # neighbour slots (≤ 8), vectorised over agents
        away = pos - pos[env.neighbors[slot]]
        d = np.sqrt((away**2).sum(axis=1, keepdims=True))
        push = np.clip((AVOID_RADIUS - d) / AVOID_RADIUS, 0.0, 1.0) * AVOID_GAIN * p.max_speed
        desired += away / np.maximum(d, 1e-6) * push

    thrust = (desired - vel * (1.0 - p.drag)) / p.accel
    return np.clip(thrust, -1.0, 1.0).astype(np.float32)
