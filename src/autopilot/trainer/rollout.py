"""Rollouts: every agent steps `bptt_horizon` times into preallocated (T, N, ...) tensors.

The policy runs under `torch.inference_mode`; observations enter torch zero-copy (`torch.from_numpy`)
on the CPU. After the rollout, GAE (see `ppo.compute_gae`) turns the buffers into a flat `Batch`.
Also here: the end-of-run deterministic evaluation.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable

import numpy as np
import torch

from autopilot.trainer.ppo import Batch, compute_gae
from autopilot.trainer.vector import SerialVec


class RolloutBuffer:
    def __init__(self, T: int, N: int, obs_dim: int, act_shape: tuple[int, ...], act_dtype: torch.dtype,
                 device: torch.device):
        self.T, self.N, self.device = T, N, device
        # Observations with a trailing column of ones, [obs | 1]: what the policy's first layer reads (its bias
        # rides in the matmul), in the rollout and again in the update, without a copy to add the column.
        self.obs_with_ones = torch.ones((T, N, obs_dim + 1), device=device)
        self.obs = self.obs_with_ones[..., :-1]
        self.actions = torch.zeros((T, N, *act_shape), dtype=act_dtype, device=device)
        self.logprobs = torch.zeros((T, N), device=device)
        self.rewards = torch.zeros((T, N), device=device)
        self.dones = torch.zeros((T, N), device=device)
        self.values = torch.zeros((T, N), device=device)


class RolloutState:
    """What carries from one rollout to the next: the current observation and whether it starts an episode."""

    def __init__(self, obs: np.ndarray | torch.Tensor, device: torch.device):
        if isinstance(obs, torch.Tensor):  # a device-resident env's own tensor
            self.next_obs = obs.to(device, torch.float32).clone()
        else:
            self.next_obs = torch.as_tensor(np.array(obs, np.float32, copy=True), device=device)
        self.next_done = torch.zeros(obs.shape[0], device=device)


@torch.inference_mode()
def collect(policy, vec, buf: RolloutBuffer, state: RolloutState, should_stop: Callable[[], bool] | None = None,
            timings: dict[str, float] | None = None) -> bool:
    """Fill `buf` with one rollout; return False if `should_stop()` fired mid-way (buffer incomplete)."""
    groups = vec.step_groups() if hasattr(vec, "step_groups") else []
    if len(groups) > 1:
        return _collect_overlapped(policy, vec, groups, buf, state, should_stop, timings)
    t_env = t_pol = 0.0
    dev = buf.device
    on_device = getattr(vec, "device_resident", False)  # torch env: tensors in and out, no host copies
    with_ones = "obs_with_ones" in inspect.signature(policy.act).parameters
    for t in range(buf.T):
        if should_stop is not None and should_stop():
            return False
        t0 = time.perf_counter()
        buf.obs[t] = state.next_obs
        buf.dones[t] = state.next_done
        action, logprob, value = (policy.act(state.next_obs, obs_with_ones=buf.obs_with_ones[t])
                                  if with_ones else policy.act(state.next_obs))
        buf.actions[t] = action
        buf.logprobs[t] = logprob
        buf.values[t] = value
        env_action = policy.env_action(action) if on_device else policy.to_env_action(action)
        t1 = time.perf_counter()
        obs, rew, term, trunc = vec.step(env_action)
        t2 = time.perf_counter()
        if on_device:  # fresh tensors every step: keep them as they are
            buf.rewards[t] = rew
            state.next_obs = obs
            state.next_done = (term | trunc).to(torch.float32)
        else:
            buf.rewards[t] = torch.from_numpy(rew).to(dev)
            state.next_obs = torch.from_numpy(obs).to(dev, copy=True)
            state.next_done = torch.from_numpy(np.logical_or(term, trunc)).to(dev, torch.float32)
        t_pol += t1 - t0 + (time.perf_counter() - t2)
        t_env += t2 - t1
    if timings is not None:
        timings["env"] = timings.get("env", 0.0) + t_env
        timings["policy"] = timings.get("policy", 0.0) + t_pol
    return True


def _collect_overlapped(policy, vec, groups: list[tuple[int, int, range]], buf: RolloutBuffer, state: RolloutState,
                        should_stop: Callable[[], bool] | None, timings: dict[str, float] | None) -> bool:
    """`collect` for env worker processes in groups (`SharedMemoryVec.step_groups`): while one group's
    workers step, the policy computes the next group's actions, so the env's time hides behind the policy's
    (PufferLib's double buffering). Every agent's step t still uses the policy's output for its own obs t;
    what changes against stepping all agents at once is only the order of the random draws."""
    t_env = t_pol = 0.0
    dev = buf.device
    with_ones = "obs_with_ones" in inspect.signature(policy.act).parameters
    pending: list[int | None] = [None] * len(groups)  # the step each group's workers are taking

    def receive(g: int) -> None:  # group g's step: its rewards, next observations and done flags
        lo, hi, workers = groups[g]
        t, pending[g] = pending[g], None
        vec.step_wait(workers)
        buf.rewards[t, lo:hi] = torch.from_numpy(vec.rewards[lo:hi]).to(dev)
        state.next_obs[lo:hi] = torch.from_numpy(vec.obs[lo:hi]).to(dev)
        state.next_done[lo:hi] = torch.from_numpy(np.logical_or(vec.terminals[lo:hi], vec.truncations[lo:hi]))

    try:
        for t in range(buf.T):
            if should_stop is not None and should_stop():
                return False
            for g, (lo, hi, workers) in enumerate(groups):
                if pending[g] is not None:
                    t0 = time.perf_counter()
                    receive(g)
                    t_env += time.perf_counter() - t0
                t0 = time.perf_counter()
                obs = state.next_obs[lo:hi]
                buf.obs[t, lo:hi] = obs
                buf.dones[t, lo:hi] = state.next_done[lo:hi]
                action, logprob, value = (policy.act(obs, obs_with_ones=buf.obs_with_ones[t, lo:hi])
                                          if with_ones else policy.act(obs))
                buf.actions[t, lo:hi] = action
                buf.logprobs[t, lo:hi] = logprob
                buf.values[t, lo:hi] = value
                vec.actions[lo:hi] = policy.to_env_action(action)
                vec.step_send(workers)
                pending[g] = t
                t_pol += time.perf_counter() - t0
    finally:
        # Every step sent is received, whatever ended the loop: the state then matches the env objects (a stop
        # checkpoints both), and no worker is left mid-step to answer the next command out of turn.
        t0 = time.perf_counter()
        for g in range(len(groups)):
            if pending[g] is not None:
                receive(g)
        t_env += time.perf_counter() - t0
        if timings is not None:
            timings["env"] = timings.get("env", 0.0) + t_env
            timings["policy"] = timings.get("policy", 0.0) + t_pol
    return True


@torch.inference_mode()
def make_batch(policy, buf: RolloutBuffer, state: RolloutState, gamma: float, gae_lambda: float) -> Batch:
    next_value = policy.value(state.next_obs)
    adv, ret = compute_gae(buf.rewards, buf.values, buf.dones, next_value, state.next_done, gamma, gae_lambda)
    flat = buf.T * buf.N
    return Batch(buf.obs.reshape(flat, -1), buf.actions.reshape(flat, *buf.actions.shape[2:]),
                 buf.logprobs.reshape(flat), buf.values.reshape(flat), adv.reshape(flat), ret.reshape(flat),
                 buf.obs_with_ones.reshape(flat, -1))


@torch.inference_mode()
def evaluate(policy, maker, episodes: int, seed: int, device: torch.device, max_steps: int = 100_000) -> dict:
    """Deterministic evaluation (mean action / argmax) on one fresh env object.

    Counts each agent's FIRST episode only, in rounds: reset, step until every agent has finished one
    episode, repeat until `episodes` are counted (or `max_steps` steps). Stopping at the first N finishes
    instead would over-count short episodes (crashes, quick failures). Episode stats come as sums per
    step; a step where some agents finish their first episode and others a later one (rare) is
    attributed pro rata."""
    vec = SerialVec(maker, 1, seed)
    total: dict[str, float] = {}
    counted = steps = rounds = 0
    try:
        while counted < episodes and steps < max_steps:
            obs = vec.reset(seed + rounds)
            rounds += 1
            vec.pop_episode_stats()
            finished = np.zeros(vec.num_agents, bool)
            while not finished.all() and steps < max_steps:
                action = policy.deterministic(torch.from_numpy(obs).to(device))
                obs, _, term, trunc = vec.step(policy.to_env_action(action))
                steps += 1
                done = np.logical_or(term, trunc)
                part = vec.pop_episode_stats()
                if not done.any():
                    continue
                first = done & ~finished
                share = float(first.sum()) / float(done.sum())
                finished |= done
                if share > 0:
                    for key, value in part.items():
                        if key != "episodes":
                            total[key] = total.get(key, 0.0) + share * float(value)
                    counted += int(first.sum())
    finally:
        vec.close()
    means = {k: v / counted if counted else None for k, v in total.items()}
    return {"episodes": counted, "success_rate": means.get("success_rate"), "mean_reward": means.get("mean_reward"),
            **{k: v for k, v in means.items() if k not in ("success_rate", "mean_reward")}}
