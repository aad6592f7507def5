"""Trainer throughput: our PPO trainer against Stable-Baselines3 PPO and against our previous update.

    .venv/bin/python benchmarks/trainer_throughput.py                  # update phase + whole epochs, ~5 min
    .venv/bin/python benchmarks/trainer_throughput.py --no-epoch       # the update phase only
    .venv/bin/python benchmarks/trainer_throughput.py --sb3-gym        # + SB3 on its DummyVecEnv (slow)
    .venv/bin/python benchmarks/trainer_throughput.py --require-ratio 2 --require-update-ratio 2
    .venv/bin/python benchmarks/trainer_throughput.py --profile        # + where each update's time goes

Everything runs in this one process, at each `--threads` count in turn (default: one thread, and the
count our trainer picks on this machine: every core its env workers leave free), every trainer with the
same torch thread count and the same PPO work: a batch
of `--batch` agent-steps, `--update-epochs` passes in minibatches of `--minibatch`, the same network (a
shared MLP trunk of `--layers` × `--hidden` tanh units feeding linear policy and value heads: our
`policy.py`, and in SB3 a features extractor shared by actor and critic with empty `net_arch`), the
same PPO hyperparameters. Two figures, each on every device present (CPU, and CUDA when there is one):

1. The update phase alone, on the very same batch (SB3's own rollout buffer, fed to all three):
   median wall time of `--repeats` interleaved rounds after `--warmup` untimed ones.
2. Whole epochs (rollout + update): `--rounds` interleaved runs of `--epochs` epochs of each trainer,
   the first epoch of each run excluded (warm-up); SPS = batch / the median epoch time.

Each ratio against SB3 is also given round by round (min–max): its noise band on a machine whose speed
drifts between runs.

* ours: `autopilot.trainer.train.train` on drone_delivery, `--env-objects` env objects of
  `--arenas` arenas × `--drones` drones, `bptt_horizon = batch / agents`; at one thread stepped
  in-process, at more by one worker process per env object (`--workers`), half the agents stepping
  while the policy computes the other half's actions (one torch thread meanwhile, every thread in the
  update): the same cores SB3's torch threads get. On CUDA the env is the device-resident torch
  implementation.
* legacy: the same trainer with the previous update swapped in (kept here as a reference): autograd
  through `nn.Linear`, a row gather per minibatch, Adam's and the clipping's per-parameter loops.
* SB3 (native VecEnv): SB3's PPO on an SB3 `VecEnv` adapter over ONE vectorised drone_delivery object
  holding as many agents as ours, `n_steps = batch / agents`: SB3 without a Python loop over envs.
* SB3 (gym): `PPO("MlpPolicy", make_vec_env("autopilot/DroneDelivery-v0", n_envs=--sb3-envs))`, the
  env's single-agent Gymnasium view vectorised by SB3's DummyVecEnv, `n_steps = batch / n_envs`: how
  SB3 users train on a Gymnasium env.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch import nn


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arenas", type=int, default=256, help="drone_delivery env.num_envs (arenas per object)")
    ap.add_argument("--drones", type=int, default=8, help="drone_delivery env.num_drones")
    ap.add_argument("--env-objects", type=int, default=2, help="vec.num_envs for our trainer")
    ap.add_argument("--workers", type=int, default=None,
                    help="vec.num_workers for our trainer (default: 1, the env in-process, at one thread; one "
                         "per env object at more, stepping half the agents while the policy works on the rest)")
    ap.add_argument("--batch", type=int, default=65536, help="agent-steps per epoch (both trainers)")
    ap.add_argument("--minibatch", type=int, default=16384)
    ap.add_argument("--update-epochs", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5, help="epochs per whole-epoch run (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved whole-epoch runs of each trainer")
    ap.add_argument("--sb3-envs", type=int, default=16, help="n_envs of SB3's make_vec_env")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch thread counts to measure at, the same for every trainer (default: 1 and ours)")
    ap.add_argument("--sb3-gym", action="store_true", help="add the (slow) SB3 DummyVecEnv whole-epoch figure")
    ap.add_argument("--no-sb3", action="store_true", help="measure ours only")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds of the update-phase comparison")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds before them")
    ap.add_argument("--no-legacy", action="store_true", help="skip the previous implementation's figures")
    ap.add_argument("--no-epoch", action="store_true", help="measure the update phase only")
    ap.add_argument("--profile", action="store_true", help="profile our update (and the legacy one)")
    ap.add_argument("--require-ratio", type=float, default=None, help="minimum whole-epoch ours / SB3 native")
    ap.add_argument("--require-update-ratio", type=float, default=None, help="minimum update-phase SB3 / ours")
    ap.add_argument("--require-sps", type=float, default=None)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    return ap.parse_args()


# --------------------------------------------------------------------------------------------------
# Ours


def ours_workers(a: argparse.Namespace, threads: int) -> int:
    """Our env worker processes at `threads` torch threads: none at one thread (everything on one core, as
    SB3 has it); at more, one per env object (all the cores SB3's torch threads get)."""
    if a.workers is not None:
        return a.workers
    return 1 if threads == 1 else a.env_objects


def run_ours(a: argparse.Namespace, legacy: bool = False, device: str = "cpu", workers: int = 1
             ) -> tuple[float, dict]:
    """Whole epochs of `autopilot.trainer.train`; `legacy` swaps in the previous update (policy forward,
    optimizer, update loop) and leaves everything else as it is."""
    from autopilot.config import config_from_dict, ensure_valid
    from autopilot.trainer import train as train_module

    agents = a.env_objects * a.arenas * a.drones
    bptt = a.batch // agents
    cfg = ensure_valid(config_from_dict({
        "env_name": "drone_delivery", "env": {"num_envs": a.arenas, "num_drones": a.drones},
        "vec": {"num_envs": a.env_objects, "num_workers": workers},
        "train": {"total_timesteps": a.batch * a.epochs, "bptt_horizon": bptt, "minibatch_size": a.minibatch,
                  "update_epochs": a.update_epochs, "checkpoint_interval": 10**6, "device": device},
        "policy": {"hidden_size": a.hidden, "num_layers": a.layers},
        "autopilot": {"eval_episodes": 0, "save_strategy": "latest"},
    }))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AUTOPILOT_LOG_CAPTURED"] = "1"  # keep our log lines out of the benchmark's output
        out = io.StringIO()
        stdout, sys.stdout = sys.stdout, out
        swapped = {"ActorCritic": LegacyActorCritic, "make_optimizer": legacy_optimizer,
                   "ppo_update": legacy_ppo_update, "UpdateHelpers": NoUpdateHelpers} if legacy else {}
        saved = {k: getattr(train_module, k) for k in swapped}
        try:
            for k, v in swapped.items():
                setattr(train_module, k, v)
            train_module.train(cfg, Path(tmp) / "bench", dashboard=False)
        finally:
            sys.stdout = stdout
            for k, v in saved.items():
                setattr(train_module, k, v)
        rows = [json.loads(x) for x in (Path(tmp) / "bench" / "metrics.jsonl").read_text().splitlines()]
    steady = rows[1:]  # the first epoch is warm-up
    parts = {k: sum(r[k] for r in steady) for k in ("env_s", "policy_s", "update_s")}
    total = rows[-1]["wall_s"] - rows[0]["wall_s"]
    parts["other_s"] = total - sum(parts.values())
    durations = [b["wall_s"] - a_["wall_s"] for a_, b in zip(rows, steady, strict=False)]
    return durations, {"seconds": parts}


# --------------------------------------------------------------------------------------------------
# SB3


def sb3_policy_kwargs(hidden: int, layers: int) -> dict:
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class SharedMLP(BaseFeaturesExtractor):
        """The same trunk as ours: `layers` × Linear+Tanh, shared by the actor and the critic."""

        def __init__(self, observation_space, hidden: int, layers: int):
            super().__init__(observation_space, features_dim=hidden)
            mods: list[nn.Module] = []
            width = int(np.prod(observation_space.shape))
            for _ in range(layers):
                mods += [nn.Linear(width, hidden), nn.Tanh()]
                width = hidden
            self.net = nn.Sequential(*mods)

        def forward(self, obs):
            return self.net(obs)

    return {"features_extractor_class": SharedMLP, "features_extractor_kwargs": {"hidden": hidden, "layers": layers},
            "share_features_extractor": True, "net_arch": {"pi": [], "vf": []}, "activation_fn": nn.Tanh}


class _Timer:
    def __new__(cls):
        from stable_baselines3.common.callbacks import BaseCallback

        class Timer(BaseCallback):
            def __init__(self):
                super().__init__()
                self.marks: list[tuple[int, float]] = []

            def _on_rollout_start(self) -> None:
                self.marks.append((self.num_timesteps, time.perf_counter()))

            def _on_step(self) -> bool:
                return True

            def _on_training_end(self) -> None:
                self.marks.append((self.num_timesteps, time.perf_counter()))

        return Timer()


def run_sb3(a: argparse.Namespace, env, n_steps: int) -> list[float]:
    """Seconds of each SB3 epoch (rollout + update) but the first."""
    model = sb3_model(a, env, n_steps)
    timer = _Timer()
    model.learn(total_timesteps=a.batch * a.epochs, callback=timer)
    env.close()
    times = [t for _, t in timer.marks[1:]]  # from the second rollout's start
    return [t1 - t0 for t0, t1 in zip(times, times[1:], strict=False)]


def _native_env_and_steps(a: argparse.Namespace):
    env, n_agents = sb3_native_env(a)
    return env, a.batch // n_agents


def sb3_gym_env(a: argparse.Namespace):
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_vec_env

    from autopilot.envs.gym_interface import GYM_ID

    # A callable rather than the id string: SB3's make_vec_env passes render_mode="rgb_array" to an id and
    # only falls back on a TypeError, which the env's strict parameter model does not raise.
    return make_vec_env(lambda: gym.make(GYM_ID, num_drones=1), n_envs=a.sb3_envs, seed=1)


def sb3_native_env(a: argparse.Namespace):
    """An SB3 VecEnv over one DroneDeliveryEnv: every drone is one of SB3's envs, stepped by numpy."""
    from stable_baselines3.common.vec_env import VecEnv

    from autopilot.envs.drone_delivery import DroneDeliveryEnv, DroneDeliveryParams

    class DroneVecEnv(VecEnv):
        def __init__(self, arenas: int, drones: int):
            self.env = DroneDeliveryEnv(DroneDeliveryParams(num_envs=arenas, num_drones=drones), seed=1)
            self.env.record_final_obs = True
            super().__init__(self.env.num_agents, self.env.single_observation_space, self.env.single_action_space)
            self._actions = None

        def reset(self):
            return self.env.reset(seed=1)[0]

        def step_async(self, actions):
            self._actions = actions

        def step_wait(self):
            obs, rew, term, trunc, raw = self.env.step(self._actions)
            infos = [{} for _ in range(self.num_envs)]
            for row, agent in enumerate(raw.get("final_idx", [])):
                infos[agent] = {"terminal_observation": raw["final_obs"][row],
                                "TimeLimit.truncated": bool(trunc[agent])}
            return obs, rew, term | trunc, infos

        def close(self):
            self.env.close()

        def get_attr(self, attr_name, indices=None):
            return [getattr(self.env, attr_name, None)] * len(self._indices(indices))

        def set_attr(self, attr_name, value, indices=None):
            pass

        def env_method(self, method_name, *args, indices=None, **kwargs):
            return [None] * len(self._indices(indices))

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * len(self._indices(indices))

        def _indices(self, indices):
            if indices is None:
                return range(self.num_envs)
            return [indices] if isinstance(indices, int) else indices

    agents = a.env_objects * a.arenas * a.drones
    return DroneVecEnv(a.env_objects * a.arenas, a.drones), agents


# --------------------------------------------------------------------------------------------------
# The update phase alone: ours, the previous implementation, SB3 — on the very same batch


class LegacyActorCritic:
    """The previous forward pass: autograd through `nn.Sequential` and `nn.Linear` (no fused node)."""

    def __new__(cls, *args, **kwargs):
        from autopilot.trainer.policy import ActorCritic

        class Legacy(ActorCritic):
            def forward(self, obs):
                out = self.heads(self.trunk(obs))
                return out[:, : self.act_dim], out[:, self.act_dim]

        return Legacy(*args, **kwargs)


def legacy_optimizer(policy, hp):
    """The previous optimizer: Adam's default on CPU, a Python loop over the parameters."""
    cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
    return cls(policy.parameters(), lr=hp.learning_rate, eps=1e-5, foreach=False,
               **({"weight_decay": 0.01} if hp.optimizer == "adamw" else {}))


class NoUpdateHelpers:
    """The previous trainer had no update helpers: one process, intra-op threads."""

    @staticmethod
    def start(*args, **kwargs) -> None:
        return None


def legacy_ppo_update(policy, optimizer, batch, hp, generator=None, helpers=None) -> dict[str, float]:
    """The previous update: a row gather per minibatch, per-parameter gradient clipping."""
    from autopilot.trainer.ppo import STAT_KEYS, PackedBatch, normalize_advantages, ppo_loss

    n, mb_size = len(batch), int(hp.minibatch_size)
    packed = PackedBatch(batch)
    total = torch.zeros(len(STAT_KEYS), device=batch.obs.device)
    steps = 0
    for _ in range(hp.update_epochs):
        perm = torch.randperm(n, generator=generator).to(batch.obs.device)
        for start in range(0, n, mb_size):
            mb = packed.take(perm[start:start + mb_size])
            optimizer.zero_grad(set_to_none=True)
            loss, stats = ppo_loss(policy, mb, normalize_advantages(mb.advantages), hp)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), hp.max_grad_norm, foreach=False)
            optimizer.step()
            total += stats
            steps += 1
    return dict(zip(STAT_KEYS, (total / max(steps, 1)).tolist(), strict=True))


def sb3_model(a: argparse.Namespace, env, n_steps: int, device: str = "cpu"):
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    model = PPO("MlpPolicy", env, n_steps=n_steps, batch_size=a.minibatch, n_epochs=a.update_epochs,
                learning_rate=3e-3, gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5,
                max_grad_norm=0.5, policy_kwargs=sb3_policy_kwargs(a.hidden, a.layers), device=device, seed=1,
                verbose=0)
    model.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default leaves an empty tempdir/SB3-<time>
    return model


def measure_update(a: argparse.Namespace, device: str, with_sb3: bool
                   ) -> tuple[dict[str, float], dict[str, float], dict[str, list[float]]]:
    """Median wall and CPU seconds of one whole update (`update_epochs` passes over `batch` in `minibatch`es) for each
    implementation, interleaved round by round so that load from other programs hits all alike, and each round's
    wall seconds (for the noise band of a ratio).

    The batch is SB3's own: one rollout of SB3 on the native VecEnv fills its buffer, and ours and the
    legacy update train on the same observations, actions, log-probabilities, values and advantages."""
    from autopilot.config.model import TrainConfig
    from autopilot.trainer.optim import make_optimizer
    from autopilot.trainer.policy import ActorCritic
    from autopilot.trainer.ppo import Batch, ppo_update
    from autopilot.trainer.update_helpers import UpdateHelpers

    env, n_agents = sb3_native_env(a)
    model = sb3_model(a, env, a.batch // n_agents, device if with_sb3 else "cpu")
    model.learn(total_timesteps=a.batch)  # one rollout + one update: fills the buffer, warms SB3 up
    rb = model.rollout_buffer
    flat = lambda x, *shape: torch.as_tensor(np.asarray(x), dtype=torch.float32).reshape(a.batch, *shape)  # noqa: E731
    batch = Batch(flat(rb.observations, -1), flat(rb.actions, -1), flat(rb.log_probs), flat(rb.values),
                  flat(rb.advantages), flat(rb.returns))
    batch = Batch(*(t.to(device) for t in (batch.obs, batch.actions, batch.logprobs, batch.values,
                                           batch.advantages, batch.returns)))
    hp = TrainConfig(minibatch_size=a.minibatch, update_epochs=a.update_epochs, learning_rate=3e-3, ent_coef=0.01)
    spaces = (env.observation_space, env.action_space)
    ours_pol = ActorCritic(*spaces, a.hidden, a.layers).to(device)
    old_pol = LegacyActorCritic(*spaces, a.hidden, a.layers).to(device)
    ours_opt, old_opt = make_optimizer(ours_pol, hp), legacy_optimizer(old_pol, hp)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    threads = torch.get_num_threads()
    # As our trainer does: on a CPU with more than one thread, a process per core, one thread each.
    helpers = UpdateHelpers.start(ours_pol, (*spaces, a.hidden, a.layers), threads, a.batch, a.minibatch) \
        if device == "cpu" else None

    def ours() -> None:
        torch.set_num_threads(1 if helpers is not None else threads)
        ppo_update(ours_pol, ours_opt, batch, hp, helpers=helpers)
        torch.set_num_threads(threads)

    runs = {"ours": ours, "legacy": lambda: legacy_ppo_update(old_pol, old_opt, batch, hp)}
    if with_sb3:
        runs["sb3"] = model.train
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(a.warmup):
        for run in runs.values():
            run()
    helper_procs = [psutil.Process(pid) for pid in helpers.pids] if helpers is not None else []

    def cpu_seconds(name: str) -> float:  # this process's, and for ours its update helpers' too
        helpers_cpu = sum(sum(p.cpu_times()[:2]) for p in helper_procs) if name == "ours" else 0.0
        return time.process_time() + helpers_cpu

    for _ in range(a.repeats):
        for name, run in runs.items():
            sync()
            t0, c0 = time.perf_counter(), cpu_seconds(name)
            run()
            sync()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(cpu_seconds(name) - c0)
    env.close()
    if helpers is not None:
        helpers.close()
    return ({k: float(np.median(v)) for k, v in times.items()}, {k: float(np.median(v)) for k, v in cpu.items()},
            times)


# --------------------------------------------------------------------------------------------------
# Profile of our update


def profile_update(a: argparse.Namespace, threads: int, legacy: bool) -> str:
    """Where one update's CPU time goes (torch.profiler self time, grouped), ours or the legacy one."""
    from gymnasium import spaces
    from torch.profiler import ProfilerActivity, profile

    from autopilot.config.model import TrainConfig
    from autopilot.trainer.optim import make_optimizer
    from autopilot.trainer.policy import ActorCritic
    from autopilot.trainer.ppo import Batch, ppo_update

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    obs_dim = 12 + 5 * 2
    pol = (LegacyActorCritic if legacy else ActorCritic)(
        spaces.Box(-1, 1, (obs_dim,), np.float32), spaces.Box(-1, 1, (2,), np.float32), a.hidden, a.layers)
    hp = TrainConfig(minibatch_size=a.minibatch, update_epochs=a.update_epochs)
    opt, update = (legacy_optimizer(pol, hp), legacy_ppo_update) if legacy else (make_optimizer(pol, hp), ppo_update)
    B = a.batch
    with torch.no_grad():
        obs, act = torch.rand(B, obs_dim) * 2 - 1, torch.randn(B, 2)
        lp, _, v = pol.evaluate(obs, act)
    batch = Batch(obs, act, lp, v, torch.randn(B), torch.randn(B))
    update(pol, opt, batch, hp)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        update(pol, opt, batch, hp)

    def group(key: str) -> str:
        if key in ("aten::addmm", "aten::addmm_", "aten::mm"):
            return "matmuls (addmm, mm)"
        if key in ("aten::tanh", "aten::tanh_", "aten::tanh_backward"):
            return "tanh and its derivative"
        if key == "aten::copy_":
            return "copies (bias broadcast, casts, slice gradients)"
        if key == "aten::sum":
            return "sums (bias gradients, loss means)"
        if key in ("aten::index_select", "aten::cat", "aten::randperm"):
            return "minibatch copies (pre-shuffle, tiles: index_select)"
        if key.startswith(("Optimizer.", "aten::_foreach", "aten::_fused", "aten::linalg_vector_norm",
                           "aten::addcdiv_", "aten::addcmul_", "aten::lerp_", "aten::sqrt", "aten::clamp_",
                           "aten::zero_")):
            return "optimizer step + grad clip + zero_grad"
        return "PPO loss elementwise ops, autograd glue, the rest"

    totals: dict[str, float] = {}
    all_self = 0.0
    for ev in prof.key_averages():
        t = ev.self_cpu_time_total
        all_self += t
        totals[group(ev.key)] = totals.get(group(ev.key), 0.0) + t
    lines = [f"{'legacy' if legacy else 'ours'} update profile: {a.update_epochs} epochs × {B // a.minibatch} "
             f"minibatches of {a.minibatch:,} ({B:,} samples), {threads} thread(s), self CPU time "
             f"{all_self / 1e3:,.0f} ms"]
    for g, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {g:48s} {t / 1e3:8.1f} ms  {100 * t / all_self:5.1f}%")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------


def ratios(theirs: list[float], ours: list[float]) -> list[float]:
    """Round by round, their seconds over ours (how many times faster ours was in that round)."""
    return [t / o for t, o in zip(theirs, ours, strict=True)]


def band(theirs: list[float], ours: list[float]) -> str:
    r = ratios(theirs, ours)
    return f"{min(r):.2f}–{max(r):.2f}× over {len(r)} round{'s' if len(r) != 1 else ''}"


def measure_at(a: argparse.Namespace, threads: int, devices: list[str]) -> dict:
    """Both figures with `threads` torch threads for every trainer (ours reads AUTOPILOT_TORCH_THREADS)."""
    from autopilot.trainer.train import torch_threads
    from autopilot.trainer.update_helpers import parts_for

    os.environ["AUTOPILOT_TORCH_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    workers = ours_workers(a, threads)
    result: dict = {"threads": threads, "ours_workers": workers}
    stepping = ("ours steps its env in-process" if workers == 1 else
                f"ours steps its env in {workers} worker processes, half the agents while the policy works on "
                f"the other half, with {torch_threads(workers)} torch thread(s) meanwhile")
    parts = parts_for(threads, a.minibatch)
    if parts > 1:
        stepping += f"; its update runs on {parts} processes, one thread each (update helpers)"
    print(f"--- {threads} torch thread(s) for every trainer; {stepping} ---")

    # 1. The update phase alone, same batch, interleaved rounds, medians.
    for dev in devices:
        upd, upd_cpu, upd_rounds = measure_update(a, dev, with_sb3=not a.no_sb3)
        if a.no_legacy:
            upd.pop("legacy", None)
        print(f"update phase on {dev} (median of {a.repeats} interleaved rounds, {a.batch:,} samples × "
              f"{a.update_epochs} epochs; CPU time in brackets, ours' update helpers' included; the ratio round "
              "by round):")
        for name, sec in upd.items():
            rel = (f"   ours is {sec / upd['ours']:.2f}× faster ({upd_cpu[name] / upd_cpu['ours']:.2f}× in CPU time; "
                   f"{band(upd_rounds[name], upd_rounds['ours'])})" if name != "ours" else "")
            print(f"  {name:8s} {1e3 * sec:8.1f} ms ({1e3 * upd_cpu[name]:6.0f} ms CPU)  {a.batch / sec:12,.0f} "
                  f"samples/s{rel}", flush=True)
        result[f"update_s_{dev}"], result[f"update_cpu_s_{dev}"] = upd, upd_cpu
        if "sb3" in upd:
            result[f"update_ratio_sb3_{dev}"] = upd["sb3"] / upd["ours"]
            result[f"update_ratio_sb3_{dev}_rounds"] = ratios(upd_rounds["sb3"], upd_rounds["ours"])
    if a.profile:
        for legacy in (False, True):
            print(profile_update(a, threads, legacy))
    if a.no_epoch:
        return result

    # 2. Whole epochs (rollout + update): `rounds` interleaved runs of each, SPS from the median epoch.
    print(f"whole epochs (rollout + update): {a.rounds} interleaved runs of {a.epochs} epochs each, first epoch "
          "of each run excluded, SPS from the median epoch:")
    runs: dict[str, Any] = {}
    for dev in devices:
        runs[f"ours ({dev})"] = lambda dev=dev: run_ours(a, device=dev, workers=workers)
        if not a.no_legacy:
            runs[f"legacy ({dev})"] = lambda dev=dev: run_ours(a, legacy=True, device=dev, workers=workers)
    if not a.no_sb3:
        runs["SB3 (native)"] = lambda: (run_sb3(a, *_native_env_and_steps(a)), None)
        if a.sb3_gym:
            runs["SB3 (gym)"] = lambda: (run_sb3(a, sb3_gym_env(a), a.batch // a.sb3_envs), None)
    epochs: dict[str, list[float]] = {k: [] for k in runs}
    round_medians: dict[str, list[float]] = {k: [] for k in runs}  # each run's median epoch: the noise band
    shares: dict[str, dict] = {}
    for _ in range(a.rounds):
        for name, run in runs.items():
            torch.set_num_threads(threads)
            durations, detail = run()
            epochs[name] += durations
            round_medians[name].append(float(np.median(durations)))
            if detail is not None:
                shares[name] = detail["seconds"]
    sps = {name: a.batch / float(np.median(d)) for name, d in epochs.items()}
    ours = sps["ours (cpu)"]
    for name, value in sps.items():
        note = ""
        if name in shares:
            s = shares[name]
            tot = sum(s.values())
            note = (f"(env step {100 * s['env_s'] / tot:.0f}%, policy forward in rollout {100 * s['policy_s'] / tot:.0f}%, "
                    f"update {100 * s['update_s'] / tot:.0f}%, other {100 * s['other_s'] / tot:.0f}%)")
        elif name.startswith("SB3"):
            note = (f"ours (cpu) / this = {ours / value:,.2f}× "
                    f"({band(round_medians[name], round_medians['ours (cpu)'])})")
        print(f"  {name:16s} {value:12,.0f} SPS   {note}", flush=True)
    result["epoch_sps"] = sps
    if "SB3 (native)" in sps:
        result["ratio_native"] = ours / sps["SB3 (native)"]
        result["ratio_native_rounds"] = ratios(round_medians["SB3 (native)"], round_medians["ours (cpu)"])
    if "SB3 (gym)" in sps:
        result["ratio_gym"] = ours / sps["SB3 (gym)"]
    return result


def main() -> int:
    a = parse_args()
    from autopilot.trainer.train import torch_threads

    # One torch thread (the like-for-like figure), and the thread count our trainer picks on this machine
    # (every core the env workers leave free), with SB3 given the same count.
    thread_counts = a.threads or list(dict.fromkeys([1, torch_threads(1)]))
    agents = a.env_objects * a.arenas * a.drones
    if a.batch % agents:
        sys.exit(f"--batch {a.batch} must be a multiple of the agents {agents}")
    import stable_baselines3

    net = f"shared MLP {a.layers}×{a.hidden} tanh + linear policy/value heads"
    print("Trainer throughput: autopilot PPO vs Stable-Baselines3 PPO "
          f"{stable_baselines3.__version__}, drone_delivery, {os.cpu_count()} cores, torch threads "
          f"{', '.join(map(str, thread_counts))}, this one process")
    print(f"  same for all: {a.batch:,} agent-steps per epoch, minibatch {a.minibatch:,}, "
          f"{a.update_epochs} update epochs, {net}")
    print(f"  ours:         autopilot.trainer, {a.env_objects} env objects × {a.arenas} arenas × {a.drones} drones "
          f"= {agents:,} agents, bptt {a.batch // agents}")
    print("  legacy:       the same trainer with the previous update (autograd through nn.Linear, a gather per "
          "minibatch, Adam's per-parameter loop)")
    print(f"  SB3 (native): the same PPO on an SB3 VecEnv adapter over one drone_delivery object of "
          f"{agents:,} agents, n_steps {a.batch // agents}")
    if a.sb3_gym:
        print(f"  SB3 (gym):    PPO('MlpPolicy') on make_vec_env('autopilot/DroneDelivery-v0', n_envs={a.sb3_envs})"
              f" [DummyVecEnv over the single-agent Gymnasium view], n_steps {a.batch // a.sb3_envs:,}")
    sys.stdout.flush()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = [measure_at(a, threads, devices) for threads in thread_counts]
    if a.json:
        print(json.dumps(results))
    ok = True
    for result in results:
        at = f"at {result['threads']} thread(s)"
        if a.require_ratio is not None and result.get("ratio_native", math.inf) < a.require_ratio:
            print(f"FAIL {at}: ours / SB3 native {result['ratio_native']:.2f} < {a.require_ratio}")
            ok = False
        update_ratio = result.get("update_ratio_sb3_cpu")
        if a.require_update_ratio is not None and update_ratio is not None and update_ratio < a.require_update_ratio:
            print(f"FAIL {at}: update phase SB3 / ours {update_ratio:.2f} < {a.require_update_ratio}")
            ok = False
        ours = result.get("epoch_sps", {}).get("ours (cpu)")
        if a.require_sps is not None and ours is not None and ours < a.require_sps:
            print(f"FAIL {at}: {ours:,.0f} SPS < {a.require_sps:,.0f}")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
