"""drone_delivery: a vectorized multi-agent pick-and-deliver task, simulated in numpy.

One `DroneDeliveryEnv` holds `num_envs` arenas × `num_drones` drones = `num_agents` agents, all stepped
together with array operations (no Python loop over agents or arenas), so a single core runs millions
of agent-steps per second. Each drone has its own package and drop zone; drones share the arena, see
their nearest neighbours and crash if they fly into each other. Every knob below is an `env.*` key
with its range in `SPACE`; only the reward-shaping ones are tunable by advisors.

Physics (2D, arena [-1, 1]², units are arena half-widths, one step is one tick; defaults in brackets)
    a    = clip(action, -1, 1)                      # 2D thrust
    vel  = vel * (1 - drag) + accel * a             # drag [0.5], accel [0.025]
    vel *= min(1, max_speed / |vel|)                # max_speed [0.05]: crossing the arena takes ≥ 40 steps
    pos += vel
The heavy drag makes velocity follow thrust within a couple of steps (easy to learn: thrust ≈ desired
velocity), and it is what makes the task demand precision: a saturated ("bang-bang") or very noisy
thrust changes the velocity by 0.025 per axis every step, so the drone seldom sits under the 0.01
pickup and drop speed limits; only small, steady thrust near the goal meets them. Too much action
entropy therefore costs success directly (measured with the built-in PPO: ent_coef 0.12 ends near 0 %
success where 0.01 reaches 80-95 %), which is the trade-off the entropy coefficient has to find.
A drone leaving the arena (|x| > 1 or |y| > 1) is out of bounds: penalty and the episode terminates.

Episode rules (per drone; every drone resets on its own)
    spawn    position uniform in [-0.9, 0.9]², velocity 0; package uniform in [-0.8, 0.8]² at least
             0.3 from the drone; drop zone uniform in [-0.8, 0.8]² at least 0.5 from the package.
    pickup   not carrying, |package - pos| < pickup_radius [0.05] and |vel| ≤ pickup_max_speed [0.01].
    delivery carrying, |drop - pos| < drop_radius [0.05] and |vel| ≤ drop_max_speed [0.01]: success,
             the episode terminates.
    collision another drone of the same arena within collision_radius [0.05] after the move: a crash,
             the penalty is paid and both drones' episodes terminate (collision_ends_episode [true];
             when false, the penalty is paid on every step in contact and flying on is allowed).
             Spawn points keep 2 collision radii from the other drones, so nobody is born crashed.
    time     max_steps [200] steps truncate the episode (the scripted controller needs ~65 on average).
After `term | trunc` the drone is respawned at once: the obs returned is the next episode's first.

Observation (float32, every entry clipped to [-1, 1]; obs_dim = 12 + 5 * num_neighbors = 22 by default)
    0:2   position / 1
    2:4   velocity / max_speed
    4:6   (current target - position) / 2      target = drop zone when carrying, else the package
    6:8   (package - position) / 2
    8:10  (drop zone - position) / 2
    10    carrying flag (0 or 1)
    11    elapsed fraction of the time limit, t / max_steps
    12+5k (for the k-th nearest other drone of the same arena, nearest first, k < num_neighbors):
          relative position / 0.5 (2), relative velocity / (2 max_speed) (2), present flag (1);
          all five are 0 when the arena has fewer than k + 2 drones.
Neighbours are ranked on the positions after the move (the same pass detects collisions); the relative
vectors use the positions after respawns, so they are exact, and only the ranking around a drone
respawned this step is one step stale.

Reward per step (defaults; all are `env.*` keys)
    reward_progress   1.0  × decrease of the distance to the current target (≈ +0.05 a step at full speed)
    reward_pickup     1.0  once, at pickup
    reward_delivery   2.0  once, at delivery
    penalty_collision 1.0  at a crash (per step in contact when collision_ends_episode is false)
    penalty_oob       1.0  once, when leaving the arena

Episode stats (`pop_episode_stats`, sums over finished episodes; divide by `episodes`)
    success_rate (delivered), collision_rate (≥ 1 collision), oob_rate, episode_length, mean_reward
    (episode return).
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict, model_validator

from autopilot.envs.registry import EnvSpec, register_env
from autopilot.space import knob, space_from_model

ARENA = 1.0  # half-width of the square arena
SPAWN_HALF = 0.9  # drones spawn in [-0.9, 0.9]²
TARGET_HALF = 0.8  # packages and drop zones lie in [-0.8, 0.8]²
MIN_PACKAGE_DIST = 0.3  # package at least this far from the spawn point
MIN_DROP_DIST = 0.5  # drop zone at least this far from the package
NEIGHBOR_SCALE = 0.5  # neighbour offsets are divided by this (and clipped): nearby drones stand out
_CANDIDATES = 8  # rejection sampling: candidate points drawn per point at once
_RESAMPLE_ROUNDS = 4  # spawn rounds: check, redraw the crowded ones, check again


class DroneDeliveryParams(BaseModel):
    """Each env knob declared once: default, doc, range, scale, tunable (the env's search space derives
    from these). Physics and geometry define the task (an advisor moving them would change the problem,
    not solve it), so only the reward-shaping coefficients are tunable."""

    model_config = ConfigDict(extra="forbid")

    num_envs: int = knob(4, "arenas in one env object", "int", 1, 65536, tunable=False)
    num_drones: int = knob(8, "drones (agents) per arena", "int", 1, 64, tunable=False)
    max_steps: int = knob(200, "time limit (truncation) per episode", "int", 1, 10_000, tunable=False)
    num_neighbors: int = knob(2, "nearest other drones in the observation", "int", 0, 8, tunable=False)
    accel: float = knob(0.025, "velocity change per step at full thrust, per axis", "linear", 0.001, 1.0,
                        tunable=False)
    drag: float = knob(0.5, "fraction of velocity lost per step", "linear", 0.0, 0.99, tunable=False)
    max_speed: float = knob(0.05, "speed cap (arena half-widths per step)", "linear", 0.005, 1.0, tunable=False)
    pickup_radius: float = knob(0.05, "distance within which a package can be picked up", "linear", 0.01, 1.0,
                                tunable=False)
    pickup_max_speed: float = knob(0.01, "at most this fast to pick up", "linear", 0.001, 1.0, tunable=False)
    drop_radius: float = knob(0.05, "distance within which a package is delivered", "linear", 0.01, 1.0,
                              tunable=False)
    drop_max_speed: float = knob(0.01, "at most this fast to deliver", "linear", 0.001, 1.0, tunable=False)
    collision_radius: float = knob(0.05, "drones closer than this collide", "linear", 0.0, 1.0, tunable=False)
    collision_ends_episode: bool = knob(True, "a collision is a crash: both episodes end (else a per-step "
                                              "penalty)", "bool", tunable=False)
    reward_progress: float = knob(1.0, "reward per unit of progress toward the current target", "linear", 0.0, 10.0)
    reward_pickup: float = knob(1.0, "reward for a pickup", "linear", 0.0, 10.0)
    reward_delivery: float = knob(2.0, "reward for a delivery", "linear", 0.0, 20.0, tunable=False)
    penalty_collision: float = knob(1.0, "penalty for a collision", "linear", 0.0, 2.0)
    penalty_oob: float = knob(1.0, "penalty for leaving the arena", "linear", 0.0, 10.0, tunable=False)

    @model_validator(mode="after")
    def _pickup_speed_reachable(self) -> DroneDeliveryParams:
        if self.pickup_max_speed > self.max_speed:
            # Not an error of physics, but the pickup-speed rule would then be void; say so early.
            raise ValueError(f"pickup_max_speed={self.pickup_max_speed} exceeds max_speed={self.max_speed}")
        return self


SPACE = space_from_model(DroneDeliveryParams, "env")

STAT_KEYS = ("episodes", "success_rate", "collision_rate", "oob_rate", "episode_length", "mean_reward")
_INDEX_BITS = 6  # low mantissa bits of a squared distance that carry the neighbour index (num_drones ≤ 64)
_INT_MAX = np.iinfo(np.int32).max


class DroneDeliveryEnv:
    """`num_envs` arenas × `num_drones` drones behind the VecEnv contract (see the module docstring).

    Agents are numbered drone-major: agent = drone * num_envs + arena, so reshaping any per-agent
    array to (num_drones, num_envs) keeps every arena in one contiguous column and the pairwise
    arrays (num_drones, num_drones, num_envs) have the long axis innermost (fast numpy loops).
    The state is stored structure-of-arrays; `pos`, `vel`, `package`, `drop`, `target` are
    (num_agents, 2) views of it, and `carrying`, `t`, `neighbors` are per agent, for the scripted
    controller and tests (read them, do not write them).
    """

    def __init__(self, params: DroneDeliveryParams | None = None, seed: int = 0):
        self.params = p = params or DroneDeliveryParams()
        self.num_envs, self.num_drones = e, d = p.num_envs, p.num_drones
        self.num_agents = n = e * d
        self.num_neighbors = p.num_neighbors
        self._k = min(p.num_neighbors, d - 1)  # neighbour slots that can be filled
        self.obs_dim = 12 + 5 * p.num_neighbors
        self.single_observation_space = spaces.Box(-1.0, 1.0, (self.obs_dim,), dtype=np.float32)
        self.single_action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self._rng = np.random.default_rng(seed)
        # When set, `step` also reports every episode that ended: info["final_idx"] (agents),
        # info["final_obs"] (their last observations, rows) and info["final_delivered"] (success
        # flags). The Gymnasium views need it, and a trainer may use it to bootstrap truncated
        # episodes. Off by default: it costs a second observation pass per step.
        self.record_final_obs = False

        f32 = np.float32
        self._state = np.zeros((4, n), f32)  # rows: x, y, vx, vy
        self._package = np.zeros((2, n), f32)
        self._drop = np.zeros((2, n), f32)
        self._target = np.zeros((2, n), f32)  # the package, or the drop zone once carrying
        self.carrying = np.zeros(n, bool)
        self.t = np.zeros(n, np.int32)
        self.neighbors = np.zeros((self._k, n), np.int64)  # agent index in each neighbour slot
        self._dist = np.zeros(n, f32)  # distance to the current target, for the progress reward
        self._ep_return = np.zeros(n, np.float64)
        self._ep_collided = np.zeros(n, bool)
        self._stats = dict.fromkeys(STAT_KEYS, 0.0)
        # Scratch buffers, reused every step.
        self._act = np.zeros((2, n), f32)
        self._tmp2 = np.zeros((2, n), f32)
        self._tmp = np.zeros(n, f32)
        self._speed2 = np.zeros(n, f32)
        self._feat = np.zeros((self.obs_dim, n), f32)  # feature-major observation, transposed on return
        self._nbuf = np.zeros((4, n), f32)
        self._dx = np.zeros((d, d, e), f32)
        self._dy = np.zeros((d, d, e), f32)
        self._d2 = np.zeros((d, d, e), f32)
        self._slot = np.broadcast_to(np.arange(d, dtype=np.int32)[:, None, None], (d, d, e)).copy()
        self._agent_ids = np.arange(n, dtype=np.int64)
        self._arena_of = self._agent_ids % e

    # Views of the state, (num_agents, 2).
    pos = property(lambda self: self._state[0:2].T)
    vel = property(lambda self: self._state[2:4].T)
    package = property(lambda self: self._package.T)
    drop = property(lambda self: self._drop.T)
    target = property(lambda self: self._target.T)

    # -- the VecEnv contract -------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        """Start a fresh episode for every drone; unfinished episodes are dropped from the stats."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._respawn(self._agent_ids)
        self._update_neighbors()
        return self._observe(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        p, n = self.params, self.num_agents
        state, act, tmp, tmp2, speed2 = self._state, self._act, self._tmp, self._tmp2, self._speed2
        pos, vel = state[0:2], state[2:4]
        np.clip(np.asarray(actions, dtype=np.float32).reshape(n, 2).T, -1.0, 1.0, out=act)

        # Dynamics: drag, thrust, speed cap (scale by max_speed / max(speed, max_speed)), move.
        vel *= np.float32(1.0 - p.drag)
        act *= np.float32(p.accel)
        vel += act
        np.multiply(vel[0], vel[0], out=speed2)
        np.multiply(vel[1], vel[1], out=tmp)
        speed2 += tmp
        np.sqrt(speed2, out=tmp)
        np.maximum(tmp, np.float32(p.max_speed), out=tmp)
        np.divide(np.float32(p.max_speed), tmp, out=tmp)
        vel *= tmp
        np.minimum(speed2, np.float32(p.max_speed**2), out=speed2)
        pos += vel

        np.abs(pos, out=tmp2)
        np.maximum(tmp2[0], tmp2[1], out=tmp)
        oob = tmp > np.float32(ARENA)
        inside = ~oob

        # Progress toward the current target, then pickups and deliveries.
        np.subtract(self._target, pos, out=tmp2)
        tmp2 *= tmp2
        dist = tmp2[0] + tmp2[1]
        np.sqrt(dist, out=dist)
        reward = self._dist - dist
        reward *= np.float32(p.reward_progress)
        near = dist < np.float32(p.pickup_radius)
        near &= speed2 <= np.float32(p.pickup_max_speed**2)
        near &= inside
        picked = np.flatnonzero(near & ~self.carrying)
        delivered = dist < np.float32(p.drop_radius)
        delivered &= speed2 <= np.float32(p.drop_max_speed**2)
        delivered &= self.carrying
        delivered &= inside
        if picked.size:
            self.carrying[picked] = True
            self._target[:, picked] = self._drop[:, picked]
            delta = self._drop[:, picked] - pos[:, picked]
            dist[picked] = np.sqrt(delta[0] * delta[0] + delta[1] * delta[1])
            reward[picked] += np.float32(p.reward_pickup)
        self._dist = dist
        reward[delivered] += np.float32(p.reward_delivery)
        reward[oob] -= np.float32(p.penalty_oob)

        # Collisions and the neighbour ranking, from one pairwise-distance pass.
        nearest_d2 = self._update_neighbors()
        terminated = delivered | oob
        if nearest_d2 is not None:
            collided = nearest_d2 < np.float32(p.collision_radius**2)
            reward[collided] -= np.float32(p.penalty_collision)
            self._ep_collided |= collided
            if p.collision_ends_episode:
                terminated |= collided

        self.t += 1
        truncated = self.t >= p.max_steps
        truncated &= ~terminated
        self._ep_return += reward
        done = np.flatnonzero(terminated | truncated)
        info: dict = {}
        if self.record_final_obs:
            info["final_idx"] = done
            info["final_obs"] = self._observe()[done]
            info["final_delivered"] = delivered[done]
        if done.size:
            s = self._stats
            s["episodes"] += float(done.size)
            s["success_rate"] += float(np.count_nonzero(delivered))
            s["oob_rate"] += float(np.count_nonzero(oob))
            s["collision_rate"] += float(np.count_nonzero(self._ep_collided[done]))
            s["episode_length"] += float(self.t[done].sum())
            s["mean_reward"] += float(self._ep_return[done].sum())
            self._respawn(done)
        return self._observe(), reward, terminated, truncated, info

    def pop_episode_stats(self) -> dict[str, float]:
        stats, self._stats = self._stats, dict.fromkeys(STAT_KEYS, 0.0)
        return stats

    def close(self) -> None:
        pass

    # -- internals -----------------------------------------------------------------------------
    def _respawn(self, idx: np.ndarray) -> None:
        """New episodes for the agents `idx`: spawn, package and drop zone with minimum distances."""
        rng = self._rng
        pos = self._spawn_clear_of_others(rng, idx)
        pkg = self._sample_away(rng, pos, MIN_PACKAGE_DIST)
        drop = self._sample_away(rng, pkg, MIN_DROP_DIST)
        self._state[0:2, idx] = pos
        self._state[2:4, idx] = 0.0
        self._package[:, idx] = pkg
        self._drop[:, idx] = drop
        self._target[:, idx] = pkg
        self.carrying[idx] = False
        self.t[idx] = 0
        delta = pkg - pos
        self._dist[idx] = np.sqrt(delta[0] * delta[0] + delta[1] * delta[1])
        self._ep_return[idx] = 0.0
        self._ep_collided[idx] = False

    def _spawn_clear_of_others(self, rng: np.random.Generator, idx: np.ndarray) -> np.ndarray:
        """Spawn points (2, m) for agents `idx`, at least 2 collision radii from every other drone of
        their arena (a crash at birth would be noise in the stats).

        One draw per agent, checked against the arena (newcomers included); each agent still too close
        gets `_CANDIDATES` fresh candidates checked at once and keeps the first clear one, and the
        result is checked again. An arena too crowded for that keeps its last draw.
        """
        m = idx.size
        pos = rng.uniform(-SPAWN_HALF, SPAWN_HALF, (2, m)).astype(np.float32)
        self._state[0:2, idx] = pos
        if self.num_drones == 1:
            return pos
        todo = np.arange(m)
        for _ in range(_RESAMPLE_ROUNDS):
            todo = todo[~self._clear(idx[todo], pos[None, :, todo])[0]]
            if todo.size == 0:
                break
            cands = rng.uniform(-SPAWN_HALF, SPAWN_HALF, (_CANDIDATES, 2, todo.size)).astype(np.float32)
            pick = self._clear(idx[todo], cands).argmax(axis=0)
            pos[:, todo] = cands[pick, :, np.arange(todo.size)].T
            self._state[0:2, idx[todo]] = pos[:, todo]
        return pos

    def _clear(self, agents: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """(candidates, k) bool: candidate points (candidates, 2, k) for `agents` that keep 2 collision
        radii from every other drone of the agent's arena."""
        d, e = self.num_drones, self.num_envs
        others = self._state[0:2].reshape(2, d, e)[:, :, self._arena_of[agents]]  # (2, d, k)
        rel = others[None] - cands[:, :, None, :]  # (candidates, 2, d, k)
        d2 = (rel * rel).sum(axis=1)
        d2[:, agents // e, np.arange(agents.size)] = np.inf  # not against itself
        return d2.min(axis=1) >= np.float32((2.0 * self.params.collision_radius) ** 2)

    @staticmethod
    def _sample_away(rng: np.random.Generator, anchor: np.ndarray, min_dist: float) -> np.ndarray:
        """Uniform points (2, m) in the target square at least `min_dist` from `anchor` (column-wise).

        `_CANDIDATES` candidates per point are drawn in one call and the first far-enough one kept; if
        none is (probability < 1e-4 for the distances used here), the point goes to the corner
        farthest from its anchor (≥ 0.8 away, more than any minimum used here).
        """
        m = anchor.shape[1]
        cands = rng.uniform(-TARGET_HALF, TARGET_HALF, (_CANDIDATES, 2, m)).astype(np.float32)
        rel = cands - anchor[None]
        ok = (rel * rel).sum(axis=1) >= np.float32(min_dist**2)  # (candidates, m)
        pick = ok.argmax(axis=0)
        cols = np.arange(m)
        pts = cands[pick, :, cols].T.copy()
        none = np.flatnonzero(~ok[pick, cols])
        if none.size:
            pts[:, none] = np.where(anchor[:, none] >= 0, -TARGET_HALF, TARGET_HALF)
        return pts

    def _update_neighbors(self) -> np.ndarray | None:
        """Rank the other drones of each arena by distance; return each drone's nearest squared distance.

        Pairwise squared distances d2[j, i, arena] are reinterpreted as int32 (order-preserving for
        non-negative floats) with the neighbour index j written into the low mantissa bits, so one
        `min` over j yields the nearest distance and who it is; the winner is then masked out and the
        next `min` gives the second nearest. Two elementwise passes per slot, no sort, no Python loop
        over agents or arenas.
        """
        k = self._k
        if k == 0:
            return None
        d, e = self.num_drones, self.num_envs
        x = self._state[0].reshape(d, e)
        y = self._state[1].reshape(d, e)
        dx, dy, d2 = self._dx, self._dy, self._d2
        np.subtract(x[:, None, :], x[None, :, :], out=dx)  # dx[j, i] = x_j - x_i
        np.subtract(y[:, None, :], y[None, :, :], out=dy)
        np.multiply(dx, dx, out=d2)
        np.multiply(dy, dy, out=dy)
        d2 += dy
        d2.reshape(d * d, e)[:: d + 1] = np.inf  # a drone is not its own neighbour
        nearest = d2.min(axis=0).reshape(-1)
        keyed = d2.view(np.int32)
        np.bitwise_and(keyed, np.int32(~((1 << _INDEX_BITS) - 1)), out=keyed)
        np.bitwise_or(keyed, self._slot, out=keyed)
        flat = keyed.reshape(-1)
        for slot in range(k):  # over neighbour slots (≤ 8), not agents
            winner = keyed.min(axis=0).reshape(-1) & np.int32((1 << _INDEX_BITS) - 1)
            self.neighbors[slot] = winner * e + self._arena_of
            if slot + 1 < k:
                flat[winner * (d * e) + self._agent_ids] = _INT_MAX
        return nearest

    def _observe(self) -> np.ndarray:
        """The (num_agents, obs_dim) observation, built feature-major then transposed into a new array."""
        p, f, st = self.params, self._feat, self._state
        pos = st[0:2]
        f[0:2] = pos
        np.multiply(st[2:4], np.float32(1.0 / p.max_speed), out=f[2:4])
        np.subtract(self._target, pos, out=f[4:6])
        np.subtract(self._package, pos, out=f[6:8])
        np.subtract(self._drop, pos, out=f[8:10])
        f[4:10] *= np.float32(0.5)
        f[10] = self.carrying
        np.multiply(self.t, np.float32(1.0 / p.max_steps), out=f[11])
        nbuf = self._nbuf
        for slot in range(self._k):  # over neighbour slots (≤ 8), not agents
            row = 12 + 5 * slot
            np.take(st, self.neighbors[slot], axis=1, out=nbuf)
            nbuf -= st
            np.multiply(nbuf[0:2], np.float32(1.0 / NEIGHBOR_SCALE), out=f[row: row + 2])
            np.multiply(nbuf[2:4], np.float32(0.5 / p.max_speed), out=f[row + 2: row + 4])
            f[row + 4] = 1.0
        np.clip(f, -1.0, 1.0, out=f)
        return f.T.copy()


def _factory(params: DroneDeliveryParams, seed: int) -> DroneDeliveryEnv:
    return DroneDeliveryEnv(params, seed)


register_env(EnvSpec(
    name="drone_delivery",
    params_model=DroneDeliveryParams,
    factory=_factory,
    agents_per_env=lambda p: p.num_envs * p.num_drones,
    agents_formula=lambda p: [p.num_envs, p.num_drones],
    space=SPACE,
    description="multi-agent drone pick-and-deliver",
))
