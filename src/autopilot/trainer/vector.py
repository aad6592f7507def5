"""Vectorisation: `vec.num_envs` env objects, stepped in-process or by `vec.num_workers` processes.

Both backends present one flat batch of agents, env object i owning a contiguous slice of rows:

    vec = make_vector(cfg)                 # SerialVec when num_workers == 1, else SharedMemoryVec
    obs = vec.reset(seed)                  # float32 (num_agents, obs_dim), a view of vec's own buffer
    obs, rew, term, trunc = vec.step(act)  # views again: copy what you keep before the next step
    stats = vec.pop_episode_stats()        # summed over env objects (and workers)

`SharedMemoryVec` puts obs/actions/rewards/terminals/truncations in `multiprocessing.shared_memory`
arrays; each worker owns `num_envs / num_workers` env objects and a contiguous slice of the rows. A
step is one byte down a pipe to every worker and one byte back: no per-step pickling. Rare control
messages (reset, stats, env state for checkpoints, close) are pickled. Workers start with `spawn`
(safe on every OS and with a torch parent); they import only numpy and the env's module.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import pickle
import signal
import traceback
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np
from gymnasium import spaces

from autopilot.envs.registry import VecEnv, get_env_spec, make_env

_STEP = b"s"


@dataclass(frozen=True)
class EnvMaker:
    """A picklable recipe for one env object (what a spawned worker needs to build it)."""

    env_name: str
    params: dict[str, Any]
    module: str  # importing it registers the env in a fresh process

    @classmethod
    def for_env(cls, env_name: str, params: dict[str, Any]) -> EnvMaker:
        spec = get_env_spec(env_name)
        return cls(env_name, dict(params), getattr(spec.factory, "__module__", "autopilot.envs.registry"))

    def __call__(self, seed: int) -> VecEnv:
        importlib.import_module(self.module)
        return make_env(self.env_name, self.params, seed)


def _sum_stats(parts: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0.0) + float(value)
    return out


def _action_layout(space: spaces.Space) -> tuple[tuple[int, ...], np.dtype]:
    if isinstance(space, spaces.Box):
        return (int(np.prod(space.shape)),), np.dtype(np.float32)
    return (), np.dtype(np.int64)


class SerialVec:
    """All env objects in this process."""

    def __init__(self, maker: EnvMaker, num_envs: int, seed: int):
        self.envs = [maker(seed + i) for i in range(num_envs)]
        first = self.envs[0]
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.counts = [int(e.num_agents) for e in self.envs]
        self.num_agents = sum(self.counts)
        self.bounds = np.concatenate([[0], np.cumsum(self.counts)])
        obs_dim = int(np.prod(self.single_observation_space.shape))
        self.obs = np.zeros((self.num_agents, obs_dim), np.float32)
        self.rewards = np.zeros(self.num_agents, np.float32)
        self.terminals = np.zeros(self.num_agents, bool)
        self.truncations = np.zeros(self.num_agents, bool)

    def reset(self, seed: int | None = None) -> np.ndarray:
        for i, env in enumerate(self.envs):
            o, _ = env.reset(seed=None if seed is None else seed + i)
            self.obs[self.bounds[i]:self.bounds[i + 1]] = o.reshape(self.counts[i], -1)
        return self.obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if len(self.envs) == 1:  # zero-copy path: the env's own arrays
            o, r, te, tr, _ = self.envs[0].step(actions)
            return (np.asarray(o, np.float32).reshape(self.num_agents, -1), np.asarray(r, np.float32),
                    np.asarray(te, bool), np.asarray(tr, bool))
        for i, env in enumerate(self.envs):
            lo, hi = self.bounds[i], self.bounds[i + 1]
            o, r, te, tr, _ = env.step(actions[lo:hi])
            self.obs[lo:hi] = o.reshape(hi - lo, -1)
            self.rewards[lo:hi] = r
            self.terminals[lo:hi] = te
            self.truncations[lo:hi] = tr
        return self.obs, self.rewards, self.terminals, self.truncations

    def pop_episode_stats(self) -> dict[str, float]:
        return _sum_stats([env.pop_episode_stats() for env in self.envs])

    def get_state(self) -> bytes | None:
        """All env objects, pickled as one list (the same format for every backend and worker count, so
        an exact resume may change `vec.num_workers`), or None when they cannot be pickled."""
        try:
            return pickle.dumps(self.envs)
        except Exception:  # noqa: BLE001 - any env that cannot pickle just resumes from a fresh reset
            return None

    def set_state(self, state: bytes) -> bool:
        """Replace the env objects by a `get_state` snapshot; False (nothing changed) if it does not fit."""
        envs = pickle.loads(state)
        if not isinstance(envs, list) or [int(e.num_agents) for e in envs] != self.counts:
            return False
        for env in self.envs:
            env.close()
        self.envs = envs
        return True

    def close(self) -> None:
        for env in self.envs:
            env.close()


# --------------------------------------------------------------------------------------------------
# Shared-memory multiprocessing


def _worker(conn, maker: EnvMaker, seeds: list[int], shm_names: dict[str, str], layout: dict[str, Any],
            lo: int, hi: int) -> None:
    """Steps its env objects on a one-byte command; writes results into its rows of the shared arrays.

    Ctrl-C and SIGTERM are the parent's to handle (it finishes cleanly and closes us); a worker whose
    parent died sees its pipe close and exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    shms = {k: shared_memory.SharedMemory(name=n) for k, n in shm_names.items()}
    try:
        arrays = {k: np.ndarray(layout[k][0], layout[k][1], buffer=shms[k].buf)[lo:hi] for k in shms}
        envs = [maker(s) for s in seeds]
        counts = [int(e.num_agents) for e in envs]
        bounds = np.concatenate([[0], np.cumsum(counts)])
        obs, act, rew, term, trunc = (arrays[k] for k in ("obs", "actions", "rewards", "terminals", "truncations"))
        conn.send(("ready", None))
        while True:
            msg = conn.recv_bytes()
            if msg == _STEP:
                for i, env in enumerate(envs):
                    a, b = bounds[i], bounds[i + 1]
                    o, r, te, tr, _ = env.step(act[a:b])
                    obs[a:b] = o.reshape(b - a, -1)
                    rew[a:b] = r
                    term[a:b] = te
                    trunc[a:b] = tr
                conn.send_bytes(_STEP)
                continue
            cmd, arg = pickle.loads(msg)
            if cmd == "reset":
                for i, env in enumerate(envs):
                    o, _ = env.reset(seed=None if arg is None else arg[i])
                    obs[bounds[i]:bounds[i + 1]] = o.reshape(counts[i], -1)
                conn.send(("ok", None))
            elif cmd == "stats":
                conn.send(("ok", _sum_stats([e.pop_episode_stats() for e in envs])))
            elif cmd == "get_state":
                try:
                    conn.send(("ok", pickle.dumps(envs)))
                except Exception:  # noqa: BLE001 - not picklable: no env state in the checkpoint
                    conn.send(("ok", None))
            elif cmd == "set_state":
                envs = pickle.loads(arg)  # the parent checked that the agent counts fit
                conn.send(("ok", None))
            elif cmd == "close":
                for env in envs:
                    env.close()
                conn.send(("ok", None))
                return
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return
    except Exception:  # noqa: BLE001 - report to the parent, which raises
        try:
            conn.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            pass
    finally:
        for shm in shms.values():
            shm.close()


class WorkerError(RuntimeError):
    """An env worker process failed; the message carries its traceback."""


class SharedMemoryVec:
    def __init__(self, maker: EnvMaker, num_envs: int, num_workers: int, seed: int):
        if num_envs % num_workers:
            raise ValueError(f"vec.num_envs={num_envs} is not divisible by vec.num_workers={num_workers}")
        probe = maker(seed)  # one env object in the parent, to learn the spaces and agent counts
        self.single_observation_space = probe.single_observation_space
        self.single_action_space = probe.single_action_space
        per_env = int(probe.num_agents)
        probe.close()
        self.num_agents = per_env * num_envs
        per_worker = num_envs // num_workers
        obs_dim = int(np.prod(self.single_observation_space.shape))
        act_shape, act_dtype = _action_layout(self.single_action_space)
        n = self.num_agents
        layout = {"obs": ((n, obs_dim), np.dtype(np.float32)), "actions": ((n, *act_shape), act_dtype),
                  "rewards": ((n,), np.dtype(np.float32)), "terminals": ((n,), np.dtype(bool)),
                  "truncations": ((n,), np.dtype(bool))}
        self._shms = {k: shared_memory.SharedMemory(create=True, size=max(1, int(np.prod(s)) * d.itemsize))
                      for k, (s, d) in layout.items()}
        arr = {k: np.ndarray(s, d, buffer=self._shms[k].buf) for k, (s, d) in layout.items()}
        self.obs, self.actions = arr["obs"], arr["actions"]
        self.rewards, self.terminals, self.truncations = arr["rewards"], arr["terminals"], arr["truncations"]
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        names = {k: s.name for k, s in self._shms.items()}
        for w in range(num_workers):
            parent, child = ctx.Pipe()
            seeds = [seed + w * per_worker + j for j in range(per_worker)]
            lo, hi = w * per_worker * per_env, (w + 1) * per_worker * per_env
            proc = ctx.Process(target=_worker, args=(child, maker, seeds, names, layout, lo, hi), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        self._closed = False
        for conn in self.conns:
            self._expect(conn)
        self.per_worker = per_worker

    def _expect(self, conn) -> Any:
        try:
            kind, payload = conn.recv()
        except EOFError:
            raise WorkerError("an env worker exited unexpectedly") from None
        if kind == "error":
            raise WorkerError(f"env worker failed:\n{payload}")
        return payload

    def _call(self, cmd: str, args: list[Any] | None = None) -> list[Any]:
        for i, conn in enumerate(self.conns):
            conn.send_bytes(pickle.dumps((cmd, None if args is None else args[i])))
        return [self._expect(conn) for conn in self.conns]

    def reset(self, seed: int | None = None) -> np.ndarray:
        args = None if seed is None else [[seed + w * self.per_worker + j for j in range(self.per_worker)]
                                          for w in range(len(self.conns))]
        self._call("reset", args)
        return self.obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self.actions[...] = actions
        everyone = range(len(self.conns))
        self.step_send(everyone)
        self.step_wait(everyone)
        return self.obs, self.rewards, self.terminals, self.truncations

    # -- stepping part of the agents while the policy works on the rest (`rollout.collect`) ------------
    def step_groups(self) -> list[tuple[int, int, range]]:
        """The workers in two halves, as (first row, end row, workers): while one half steps its env objects,
        the policy computes the other half's actions (PufferLib's double buffering). One group (no overlap
        to be had) with a single worker."""
        workers, rows = len(self.conns), self.num_agents // len(self.conns)
        halves = [range(0, (workers + 1) // 2), range((workers + 1) // 2, workers)] if workers > 1 else [range(1)]
        return [(h.start * rows, h.stop * rows, h) for h in halves]

    def step_send(self, workers: range) -> None:
        """Step these workers' env objects on the actions already in `self.actions` (their rows)."""
        for w in workers:
            self.conns[w].send_bytes(_STEP)

    def step_wait(self, workers: range) -> None:
        """Wait for these workers' step: their rows of obs, rewards, terminals and truncations are then new."""
        for w in workers:
            if self.conns[w].recv_bytes() != _STEP:
                raise WorkerError("env worker answered out of protocol")

    def pop_episode_stats(self) -> dict[str, float]:
        return _sum_stats(self._call("stats"))

    def get_state(self) -> bytes | None:
        parts = self._call("get_state")
        if any(p is None for p in parts):
            return None
        return pickle.dumps([env for p in parts for env in pickle.loads(p)])

    def set_state(self, state: bytes) -> bool:
        envs = pickle.loads(state)
        if not isinstance(envs, list) or len(envs) != self.per_worker * len(self.conns):
            return False
        if any(int(e.num_agents) * self.per_worker * len(self.conns) != self.num_agents for e in envs):
            return False
        k = self.per_worker
        self._call("set_state", [pickle.dumps(envs[w * k:(w + 1) * k]) for w in range(len(self.conns))])
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn, proc in zip(self.conns, self.procs, strict=True):
            try:
                conn.send_bytes(pickle.dumps(("close", None)))
                conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
            conn.close()
        for shm in self._shms.values():
            shm.close()
            shm.unlink()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------------------------------
# Device-resident envs: torch implementations stepped on the policy's device

# Envs with a torch implementation: name -> "module:class"; the class takes (params, seed, device, respawn_rng).
TORCH_ENVS = {"drone_delivery": "autopilot.envs.drone_delivery_torch:DroneDeliveryTorchEnv"}


class TorchVec:
    """`num_envs` torch env objects on `device`: actions, observations, rewards and done flags are device
    tensors (new ones every step, so callers may keep them), nothing crosses to the host per step.
    Episode stats are read from the device once per `pop_episode_stats`."""

    device_resident = True

    def __init__(self, env_name: str, params: dict[str, Any], num_envs: int, seed: int, device: Any,
                 respawn_rng: str):
        module, cls_name = TORCH_ENVS[env_name].split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        spec = get_env_spec(env_name)
        validated = spec.params_model(**params)
        self.envs = [cls(validated, seed + i, device=device, respawn_rng=respawn_rng) for i in range(num_envs)]
        first = self.envs[0]
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.counts = [int(e.num_agents) for e in self.envs]
        self.num_agents = sum(self.counts)
        self.bounds = [int(b) for b in np.concatenate([[0], np.cumsum(self.counts)])]

    def reset(self, seed: int | None = None):
        import torch

        return torch.cat([env.reset(seed=None if seed is None else seed + i)[0] for i, env in enumerate(self.envs)])

    def step(self, actions):
        import torch

        if len(self.envs) == 1:
            return self.envs[0].step(actions)[:4]
        parts = [env.step(actions[lo:hi])[:4] for env, lo, hi in zip(self.envs, self.bounds, self.bounds[1:],
                                                                      strict=False)]
        return tuple(torch.cat(col) for col in zip(*parts, strict=True))

    def pop_episode_stats(self) -> dict[str, float]:
        return _sum_stats([env.pop_episode_stats() for env in self.envs])

    def get_state(self) -> bytes | None:
        return None  # device tensors: an exact resume restarts the rollout from a reset instead

    def set_state(self, state: bytes) -> bool:
        return False

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_vector(env_name: str, env_params: dict[str, Any], num_envs: int, num_workers: int, seed: int,
                torch_device: Any = None):
    """SerialVec / SharedMemoryVec over the numpy env objects, or, with `torch_device`, a TorchVec of the
    env's torch implementation on that device (respawns drawn on the device when it is not the CPU)."""
    if torch_device is not None:
        rng = "host" if str(torch_device) == "cpu" else "device"
        return TorchVec(env_name, env_params, num_envs, seed, torch_device, rng)
    maker = EnvMaker.for_env(env_name, env_params)
    if num_workers <= 1:
        return SerialVec(maker, num_envs, seed)
    return SharedMemoryVec(maker, num_envs, num_workers, seed)
