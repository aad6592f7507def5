"""drone_delivery written in torch: the same task as `drone_delivery.py`, on any torch device.

The numpy env is the specification (its docstring states the physics, rules, observation, rewards and
stats); this module performs the same float32 operations in the same order with torch ops, so the
environment can live on the policy's device (CPU or CUDA): observations, rewards and done flags come
back as device tensors, actions go in as device tensors, and a step copies nothing to or from the host.
Episode stats are accumulated on the device and read once per `pop_episode_stats`.

Respawns are the one place randomness enters, and there are two ways to draw them (`respawn_rng`):

* "host" (the default): the numpy env's own samplers draw them, from the same `np.random.Generator`
  seeded the same way, on the host; only the respawning agents' new spawn points, packages and drop
  zones travel to the device. Trajectories then equal the numpy env's under the same seed and actions
  (tested to float tolerance). It costs one device-to-host read of the done flags per step with a
  respawn, which is nothing on a CPU and a synchronisation point on a GPU.
* "device": a `torch.Generator` on the env's device draws candidates for every agent each step and the
  done mask selects them: no host round trip, so a GPU never waits. The distributions and rules are
  the numpy env's (uniform spawn points kept 2 collision radii from the arena's other drones, packages
  and drop zones uniform at the minimum distances, the same corner fallback); the draws differ.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from autopilot.envs.drone_delivery import (
    _CANDIDATES,
    _INDEX_BITS,
    _INT_MAX,
    ARENA,
    MIN_DROP_DIST,
    MIN_PACKAGE_DIST,
    NEIGHBOR_SCALE,
    SPAWN_HALF,
    STAT_KEYS,
    TARGET_HALF,
    DroneDeliveryEnv,
    DroneDeliveryParams,
)

RespawnRng = Literal["host", "device"]
_SPAWN_ROUNDS = 16  # device respawns: redraw a crowded spawn point up to this many times (one candidate each)


def _f32(x: float) -> float:
    """A constant rounded to float32 first, as the numpy env's `np.float32(...)` constants are."""
    return float(np.float32(x))


class DroneDeliveryTorchEnv:
    """`num_envs` arenas × `num_drones` drones as torch tensors on `device`; agent numbering, state
    layout and views (`pos`, `vel`, `package`, `drop`, `target`, `carrying`, `t`, `neighbors`) as in
    `DroneDeliveryEnv`, but tensors."""

    def __init__(self, params: DroneDeliveryParams | None = None, seed: int = 0, device: str | torch.device = "cpu",
                 respawn_rng: RespawnRng = "host"):
        if respawn_rng not in ("host", "device"):
            raise ValueError(f"respawn_rng={respawn_rng!r} is not one of 'host', 'device'")
        self.params = p = params or DroneDeliveryParams()
        self.device = dev = torch.device(device)
        self.respawn_rng = respawn_rng
        # The host sampler: a numpy env of the same shape whose respawn draws we reuse (host mode).
        self._host = DroneDeliveryEnv(p, seed)
        self.num_envs, self.num_drones = e, d = p.num_envs, p.num_drones
        self.num_agents = n = e * d
        self.num_neighbors, self._k, self.obs_dim = p.num_neighbors, self._host._k, self._host.obs_dim
        self.single_observation_space = self._host.single_observation_space
        self.single_action_space = self._host.single_action_space
        self._gen = torch.Generator(device=dev)
        self._gen.manual_seed(seed)
        self.record_final_obs = False

        f32 = {"device": dev, "dtype": torch.float32}
        self._state = torch.zeros((4, n), **f32)  # rows: x, y, vx, vy
        self._package = torch.zeros((2, n), **f32)
        self._drop = torch.zeros((2, n), **f32)
        self._target = torch.zeros((2, n), **f32)
        self.carrying = torch.zeros(n, dtype=torch.bool, device=dev)
        self.t = torch.zeros(n, dtype=torch.int32, device=dev)
        self.neighbors = torch.zeros((self._k, n), dtype=torch.int64, device=dev)
        self._dist = torch.zeros(n, **f32)
        self._ep_return = torch.zeros(n, dtype=torch.float64, device=dev)
        self._ep_collided = torch.zeros(n, dtype=torch.bool, device=dev)
        self._stats = torch.zeros(len(STAT_KEYS), dtype=torch.float64, device=dev)
        self._feat = torch.zeros((self.obs_dim, n), **f32)
        self._slot = torch.arange(d, dtype=torch.int32, device=dev)[:, None, None].expand(d, d, e).contiguous()
        self._agent_ids = torch.arange(n, device=dev)
        self._arena_of = self._agent_ids % e
        self._all = torch.ones(n, dtype=torch.bool, device=dev)
        self._max_speed = torch.tensor(_f32(p.max_speed), **f32)

    pos = property(lambda self: self._state[0:2].T)
    vel = property(lambda self: self._state[2:4].T)
    package = property(lambda self: self._package.T)
    drop = property(lambda self: self._drop.T)
    target = property(lambda self: self._target.T)

    # -- the VecEnv contract, with device tensors ----------------------------------------------------
    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict]:
        if seed is not None:
            self._host._rng = np.random.default_rng(seed)
            self._gen.manual_seed(seed)
        self._respawn(self._all)
        self._update_neighbors()
        return self._observe(), {}

    def step(self, actions: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                torch.Tensor, dict]:
        p, n = self.params, self.num_agents
        state = self._state
        pos, vel = state[0:2], state[2:4]
        act = torch.as_tensor(actions, device=self.device).to(torch.float32).reshape(n, 2).T.clamp(-1.0, 1.0)

        # Dynamics: drag, thrust, speed cap, move (the numpy env's operations, in its order).
        vel.mul_(_f32(1.0 - p.drag))
        vel.add_(act * _f32(p.accel))
        speed2 = vel[0] * vel[0]
        speed2 += vel[1] * vel[1]
        vel.mul_(torch.div(self._max_speed, speed2.sqrt().clamp_min(_f32(p.max_speed))))  # c / x, not x⁻¹ · c
        speed2.clamp_max_(_f32(p.max_speed**2))
        pos.add_(vel)
        oob = pos.abs().amax(0) > _f32(ARENA)
        inside = ~oob

        # Progress toward the current target, then pickups and deliveries.
        rel = (self._target - pos).square_()
        dist = (rel[0] + rel[1]).sqrt_()
        reward = (self._dist - dist) * _f32(p.reward_progress)
        picked = (dist < _f32(p.pickup_radius)) & (speed2 <= _f32(p.pickup_max_speed**2)) & inside & ~self.carrying
        delivered = (dist < _f32(p.drop_radius)) & (speed2 <= _f32(p.drop_max_speed**2)) & self.carrying & inside
        self.carrying |= picked
        self._target.copy_(torch.where(picked, self._drop, self._target))
        delta = self._drop - pos
        dist = torch.where(picked, (delta[0] * delta[0] + delta[1] * delta[1]).sqrt_(), dist)
        reward += picked * _f32(p.reward_pickup)
        self._dist = dist
        reward += delivered * _f32(p.reward_delivery)
        reward -= oob * _f32(p.penalty_oob)

        # Collisions and the neighbour ranking, from one pairwise-distance pass.
        nearest_d2 = self._update_neighbors()
        terminated = delivered | oob
        if nearest_d2 is not None:
            collided = nearest_d2 < _f32(p.collision_radius**2)
            reward -= collided * _f32(p.penalty_collision)
            self._ep_collided |= collided
            if p.collision_ends_episode:
                terminated |= collided

        self.t += 1
        truncated = (self.t >= p.max_steps) & ~terminated
        self._ep_return += reward
        done = terminated | truncated
        info: dict = {}
        if self.record_final_obs:
            idx = done.nonzero().squeeze(1)
            info.update(final_idx=idx, final_obs=self._observe()[idx], final_delivered=delivered[idx])
        # In STAT_KEYS order: episodes, success_rate, collision_rate, oob_rate, episode_length, mean_reward.
        self._stats += torch.stack([done.sum(), delivered.sum(), (self._ep_collided & done).sum(), oob.sum(),
                                    (self.t * done).sum(), (self._ep_return * done).sum()]).to(torch.float64)
        self._respawn(done)
        return self._observe(), reward, terminated, truncated, info

    def pop_episode_stats(self) -> dict[str, float]:
        values = self._stats.tolist()  # the one host read, once per pop
        self._stats.zero_()
        return dict(zip(STAT_KEYS, values, strict=True))

    def close(self) -> None:
        pass

    # -- respawns ------------------------------------------------------------------------------------
    def _respawn(self, mask: torch.Tensor) -> None:
        """New episodes for the agents in `mask`: spawn point, package and drop zone; see the module doc."""
        if self.respawn_rng == "host":
            idx_np = mask.nonzero().squeeze(1).cpu().numpy()
            if idx_np.size == 0:
                return
            host = self._host
            host._state[0:2] = self._state[0:2].cpu().numpy()  # the sampler keeps clear of these drones
            pos = host._spawn_clear_of_others(host._rng, idx_np)
            pkg = host._sample_away(host._rng, pos, MIN_PACKAGE_DIST)
            drop = host._sample_away(host._rng, pkg, MIN_DROP_DIST)
            idx = torch.from_numpy(idx_np).to(self.device)
            new = torch.from_numpy(np.concatenate([pos, pkg, drop])).to(self.device)
            self._state[0:2, idx] = new[0:2]
            self._state[2:4, idx] = 0.0
            self._package[:, idx] = new[2:4]
            self._drop[:, idx] = new[4:6]
            self._target[:, idx] = new[2:4]
            delta = new[2:4] - new[0:2]
            self._dist[idx] = (delta[0] * delta[0] + delta[1] * delta[1]).sqrt()
        else:
            pos = self._spawn_on_device(mask)
            pkg = self._sample_away_on_device(pos, MIN_PACKAGE_DIST)
            drop = self._sample_away_on_device(pkg, MIN_DROP_DIST)
            self._state[0:2] = torch.where(mask, pos, self._state[0:2])
            self._state[2:4].masked_fill_(mask, 0.0)
            self._package.copy_(torch.where(mask, pkg, self._package))
            self._drop.copy_(torch.where(mask, drop, self._drop))
            self._target.copy_(torch.where(mask, pkg, self._target))
            delta = pkg - pos
            self._dist = torch.where(mask, (delta[0] * delta[0] + delta[1] * delta[1]).sqrt(), self._dist)
        self.carrying &= ~mask
        self.t.masked_fill_(mask, 0)
        self._ep_return.masked_fill_(mask, 0.0)
        self._ep_collided &= ~mask

    def _uniform(self, half: float, *shape: int) -> torch.Tensor:
        u = torch.rand(shape, generator=self._gen, device=self.device)
        return u.mul_(2.0 * half).sub_(half)

    def _spawn_on_device(self, mask: torch.Tensor) -> torch.Tensor:
        """Spawn points (2, n), used where `mask`: each crowded one (closer than 2 collision radii to another
        drone of its arena, newcomers included) is redrawn, up to `_SPAWN_ROUNDS` times."""
        d, e = self.num_drones, self.num_envs
        pos = torch.where(mask, self._uniform(SPAWN_HALF, 2, self.num_agents), self._state[0:2])
        if d == 1:
            return pos
        min_d2 = _f32((2.0 * self.params.collision_radius) ** 2)
        eye = torch.eye(d, dtype=torch.bool, device=self.device)[:, :, None]
        for _ in range(_SPAWN_ROUNDS):
            x, y = pos[0].view(d, e), pos[1].view(d, e)
            d2 = (x[:, None] - x[None]).square() + (y[:, None] - y[None]).square()
            crowded = (d2.masked_fill(eye, float("inf")).amin(0) < min_d2).reshape(-1) & mask
            pos = torch.where(crowded, self._uniform(SPAWN_HALF, 2, self.num_agents), pos)
        return pos

    def _sample_away_on_device(self, anchor: torch.Tensor, min_dist: float) -> torch.Tensor:
        """Uniform points (2, n) in the target square at least `min_dist` from `anchor`: the first of
        `_CANDIDATES` candidates far enough, else the corner farthest from the anchor (as numpy's)."""
        n = anchor.shape[1]
        cands = self._uniform(TARGET_HALF, _CANDIDATES, 2, n)
        ok = ((cands - anchor[None]).square().sum(1) >= _f32(min_dist**2)).to(torch.int8)  # (candidates, n)
        pick = ok.argmax(0)  # the first far-enough candidate
        pts = cands.gather(0, pick[None, None].expand(1, 2, n))[0]
        corner = torch.where(anchor >= 0, -TARGET_HALF, TARGET_HALF).to(pts.dtype)
        return torch.where(ok.amax(0).bool(), pts, corner)

    # -- neighbours and observations -----------------------------------------------------------------
    def _update_neighbors(self) -> torch.Tensor | None:
        """The numpy env's ranking: squared distances as int32 with the neighbour index in the low
        mantissa bits, so one `min` gives the nearest and who it is (see `DroneDeliveryEnv`)."""
        k = self._k
        if k == 0:
            return None
        d, e = self.num_drones, self.num_envs
        x, y = self._state[0].view(d, e), self._state[1].view(d, e)
        dx = x[:, None, :] - x[None, :, :]
        dy = y[:, None, :] - y[None, :, :]
        d2 = dx * dx
        d2 += dy * dy
        d2.view(d * d, e)[:: d + 1] = float("inf")
        nearest = d2.amin(0).reshape(-1)
        keyed = d2.view(torch.int32)
        keyed &= ~((1 << _INDEX_BITS) - 1)
        keyed |= self._slot
        flat = keyed.view(-1)
        for slot in range(k):  # over neighbour slots (≤ 8), not agents
            winner = (keyed.amin(0).reshape(-1) & ((1 << _INDEX_BITS) - 1)).long()
            self.neighbors[slot] = winner * e + self._arena_of
            if slot + 1 < k:
                flat[winner * (d * e) + self._agent_ids] = _INT_MAX
        return nearest

    def _observe(self) -> torch.Tensor:
        p, f, st = self.params, self._feat, self._state
        pos = st[0:2]
        f[0:2] = pos
        torch.mul(st[2:4], _f32(1.0 / p.max_speed), out=f[2:4])
        torch.sub(self._target, pos, out=f[4:6])
        torch.sub(self._package, pos, out=f[6:8])
        torch.sub(self._drop, pos, out=f[8:10])
        f[4:10] *= 0.5
        f[10] = self.carrying
        torch.mul(self.t, _f32(1.0 / p.max_steps), out=f[11])
        for slot in range(self._k):  # over neighbour slots (≤ 8), not agents
            row = 12 + 5 * slot
            rel = st[:, self.neighbors[slot]] - st
            torch.mul(rel[0:2], _f32(1.0 / NEIGHBOR_SCALE), out=f[row: row + 2])
            torch.mul(rel[2:4], _f32(0.5 / p.max_speed), out=f[row + 2: row + 4])
            f[row + 4] = 1.0
        f.clamp_(-1.0, 1.0)
        return f.T.contiguous()
