"""Trainer throughput: our PPO trainer against Stable-Baselines3 PPO, same env and same work per epoch.

    .venv/bin/python benchmarks/trainer_throughput.py                   # defaults below, ~3-4 minutes
    .venv/bin/python benchmarks/trainer_throughput.py --no-sb3-native   # skip the second SB3 figure
    .venv/bin/python benchmarks/trainer_throughput.py --require-ratio 20 --require-sps 100000
    .venv/bin/python benchmarks/trainer_throughput.py --profile         # + where our update's time goes

Both trainers run in this one process, one after the other, with the same torch thread count, and
train the same PPO work per epoch: a rollout of `--batch` agent-steps, `--update-epochs` passes in
minibatches of `--minibatch`, the same network (a shared MLP trunk of `--layers` × `--hidden` tanh
units feeding linear policy and value heads: our `policy.py`, and in SB3 a features extractor shared
by actor and critic with empty `net_arch`), the same PPO hyperparameters. SPS counts agent-steps per
wall-clock second over whole epochs (rollout + update), the first epoch excluded as warm-up.

* ours: `autopilot.trainer.train.train` on drone_delivery, `--env-objects` env objects of
  `--arenas` arenas × `--drones` drones stepped in-process, `bptt_horizon = batch / agents`.
* SB3 (gymnasium): `PPO("MlpPolicy", make_vec_env("autopilot/DroneDelivery-v0", n_envs=--sb3-envs))`,
  i.e. the env's single-agent Gymnasium view (one drone per arena, the cheapest form of the env)
  vectorised by SB3's own DummyVecEnv, `n_steps = batch / n_envs`. This is how SB3 users train on a
  Gymnasium env.
* SB3 (native VecEnv): the same PPO on an SB3 `VecEnv` adapter over ONE vectorised drone_delivery object
  holding as many agents as ours, `n_steps = batch / agents`: SB3 without a Python loop over envs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arenas", type=int, default=256, help="drone_delivery env.num_envs (arenas per object)")
    ap.add_argument("--drones", type=int, default=8, help="drone_delivery env.num_drones")
    ap.add_argument("--env-objects", type=int, default=2, help="vec.num_envs for our trainer")
    ap.add_argument("--batch", type=int, default=65536, help="agent-steps per epoch (both trainers)")
    ap.add_argument("--minibatch", type=int, default=16384)
    ap.add_argument("--update-epochs", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=12, help="epochs for our trainer")
    ap.add_argument("--sb3-epochs", type=int, default=3, help="epochs for each SB3 run (first is warm-up)")
    ap.add_argument("--sb3-envs", type=int, default=16, help="n_envs of SB3's make_vec_env")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both (default: ours)")
    ap.add_argument("--no-sb3-native", action="store_true", help="skip the SB3 native-VecEnv figure")
    ap.add_argument("--no-sb3", action="store_true", help="measure ours only")
    ap.add_argument("--profile", action="store_true", help="profile our update with torch.profiler")
    ap.add_argument("--require-ratio", type=float, default=None)
    ap.add_argument("--require-sps", type=float, default=None)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    return ap.parse_args()


# --------------------------------------------------------------------------------------------------
# Ours


def run_ours(a: argparse.Namespace) -> tuple[float, dict]:
    from autopilot.config import config_from_dict, ensure_valid
    from autopilot.trainer.train import train

    agents = a.env_objects * a.arenas * a.drones
    bptt = a.batch // agents
    cfg = ensure_valid(config_from_dict({
        "env_name": "drone_delivery", "env": {"num_envs": a.arenas, "num_drones": a.drones},
        "vec": {"num_envs": a.env_objects, "num_workers": 1},
        "train": {"total_timesteps": a.batch * a.epochs, "bptt_horizon": bptt, "minibatch_size": a.minibatch,
                  "update_epochs": a.update_epochs, "checkpoint_interval": 10**6},
        "policy": {"hidden_size": a.hidden, "num_layers": a.layers},
        "autopilot": {"eval_episodes": 0, "save_strategy": "latest"},
    }))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AUTOPILOT_LOG_CAPTURED"] = "1"  # keep our log lines out of the benchmark's output
        out = io.StringIO()
        stdout, sys.stdout = sys.stdout, out
        try:
            train(cfg, Path(tmp) / "bench", dashboard=False)
        finally:
            sys.stdout = stdout
        rows = [json.loads(x) for x in (Path(tmp) / "bench" / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    sps = (last["agent_steps"] - first["agent_steps"]) / (last["wall_s"] - first["wall_s"])
    steady = rows[1:]
    parts = {k: sum(r[k] for r in steady) for k in ("env_s", "policy_s", "update_s")}
    total = last["wall_s"] - first["wall_s"]
    parts["other_s"] = total - sum(parts.values())
    return sps, {"bptt": bptt, "agents": agents, "seconds": parts, "epochs_timed": len(steady)}


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


def run_sb3(a: argparse.Namespace, env, n_steps: int) -> float:
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", env, n_steps=n_steps, batch_size=a.minibatch, n_epochs=a.update_epochs,
                learning_rate=3e-3, gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5,
                max_grad_norm=0.5, policy_kwargs=sb3_policy_kwargs(a.hidden, a.layers), device="cpu", seed=1,
                verbose=0)
    timer = _Timer()
    model.learn(total_timesteps=a.batch * a.sb3_epochs, callback=timer)
    (s0, t0), (s1, t1) = timer.marks[1], timer.marks[-1]  # from the second rollout's start to the end
    env.close()
    return (s1 - s0) / (t1 - t0)


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
# Profile of our update


def profile_update(a: argparse.Namespace, threads: int) -> str:
    from gymnasium import spaces
    from torch.profiler import ProfilerActivity, profile

    from autopilot.config.model import TrainConfig
    from autopilot.trainer.policy import ActorCritic
    from autopilot.trainer.ppo import Batch, make_optimizer, ppo_update

    torch.set_num_threads(threads)
    obs_dim = 12 + 5 * 2
    pol = ActorCritic(spaces.Box(-1, 1, (obs_dim,), np.float32), spaces.Box(-1, 1, (2,), np.float32),
                      a.hidden, a.layers)
    hp = TrainConfig(minibatch_size=a.minibatch, batch_size=a.batch, update_epochs=a.update_epochs,
                     bptt_horizon=a.batch // (a.env_objects * a.arenas * a.drones))
    opt = make_optimizer(pol, hp)
    B = a.batch
    with torch.no_grad():
        obs, act = torch.rand(B, obs_dim) * 2 - 1, torch.randn(B, 2)
        lp, _, v = pol.evaluate(obs, act)
    batch = Batch(obs, act, lp, v, torch.randn(B), torch.randn(B))
    ppo_update(pol, opt, batch, hp)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ppo_update(pol, opt, batch, hp)
    def group(key: str) -> str:
        if key in ("aten::addmm", "aten::tanh"):
            return "forward matmuls + tanh (addmm, tanh)"
        if key == "aten::copy_":
            return "bias broadcast + casts (copy_)"
        if key == "aten::mm":
            return "backward matmuls (mm)"
        if key == "aten::tanh_backward":
            return "backward tanh"
        if key == "aten::sum":
            return "bias gradients (sum)"
        if key in ("aten::index_select", "aten::cat", "aten::randperm"):
            return "minibatch gather (index_select)"
        if key.startswith(("Optimizer.", "aten::_foreach", "aten::linalg_vector_norm", "aten::addcdiv_",
                           "aten::addcmul_", "aten::lerp_", "aten::sqrt", "aten::clamp_", "aten::zero_")):
            return "optimizer step + grad clip + zero_grad"
        return "PPO loss elementwise ops, autograd glue"

    totals: dict[str, float] = {}
    all_self = 0.0
    for ev in prof.key_averages():
        t = ev.self_cpu_time_total
        all_self += t
        totals[group(ev.key)] = totals.get(group(ev.key), 0.0) + t
    lines = [f"update profile: {a.update_epochs} epochs × {B // a.minibatch} minibatches of {a.minibatch:,} "
             f"({B:,} samples), {threads} thread(s), self CPU time {all_self / 1e3:,.0f} ms"]
    for g, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {g:44s} {t / 1e3:8.1f} ms  {100 * t / all_self:5.1f}%")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------


def main() -> int:
    a = parse_args()
    from autopilot.trainer.train import torch_threads

    threads = a.threads or torch_threads(1)
    os.environ["AUTOPILOT_TORCH_THREADS"] = str(threads)
    agents = a.env_objects * a.arenas * a.drones
    if a.batch % agents:
        sys.exit(f"--batch {a.batch} must be a multiple of the agents {agents}")
    import stable_baselines3

    net = f"shared MLP {a.layers}×{a.hidden} tanh + linear policy/value heads"
    print("Trainer throughput: autopilot PPO vs Stable-Baselines3 PPO "
          f"{stable_baselines3.__version__}, drone_delivery, cpu, {threads} torch thread(s), this one process")
    print(f"  same for both: {a.batch:,} agent-steps per epoch, minibatch {a.minibatch:,}, "
          f"{a.update_epochs} update epochs, {net}; SPS over whole epochs, first epoch excluded")
    print(f"  ours:        autopilot.trainer, {a.env_objects} env objects × {a.arenas} arenas × {a.drones} drones = "
          f"{agents:,} agents, bptt {a.batch // agents}, stepped in-process")
    print(f"  SB3 (gym):   PPO('MlpPolicy') on make_vec_env('autopilot/DroneDelivery-v0', n_envs={a.sb3_envs}) "
          f"[DummyVecEnv over the single-agent Gymnasium view, 1 drone per arena], n_steps {a.batch // a.sb3_envs:,}")
    if not a.no_sb3_native:
        print(f"  SB3 (native): the same PPO on an SB3 VecEnv adapter over one drone_delivery object of "
              f"{agents:,} agents, n_steps {a.batch // agents}")
    sys.stdout.flush()

    ours, detail = run_ours(a)
    s = detail["seconds"]
    tot = sum(s.values())
    print(f"ours:         {ours:12,.0f} SPS   (epoch time: env step {100 * s['env_s'] / tot:.0f}%, policy forward "
          f"in rollout {100 * s['policy_s'] / tot:.0f}%, update {100 * s['update_s'] / tot:.0f}%, "
          f"other {100 * s['other_s'] / tot:.0f}%; {detail['epochs_timed']} epochs)", flush=True)
    if a.no_sb3:
        if a.profile:
            print(profile_update(a, threads))
        return 0 if a.require_sps is None or ours >= a.require_sps else 1
    torch.set_num_threads(threads)
    sb3 = run_sb3(a, sb3_gym_env(a), a.batch // a.sb3_envs)
    print(f"SB3 (gym):    {sb3:12,.0f} SPS   ratio ours / SB3 = {ours / sb3:,.1f}×", flush=True)
    result = {"ours_sps": ours, "sb3_gym_sps": sb3, "ratio_gym": ours / sb3, "threads": threads}
    if not a.no_sb3_native:
        torch.set_num_threads(threads)
        env, n_agents = sb3_native_env(a)
        native = run_sb3(a, env, a.batch // n_agents)
        print(f"SB3 (native): {native:12,.0f} SPS   ratio ours / SB3 = {ours / native:,.1f}×", flush=True)
        result.update(sb3_native_sps=native, ratio_native=ours / native)
    if a.profile:
        print(profile_update(a, threads))
    if a.json:
        print(json.dumps(result))
    ok = True
    if a.require_ratio is not None and ours / sb3 < a.require_ratio:
        print(f"FAIL: ratio {ours / sb3:.1f} < {a.require_ratio}")
        ok = False
    if a.require_sps is not None and ours < a.require_sps:
        print(f"FAIL: {ours:,.0f} SPS < {a.require_sps:,.0f}")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
