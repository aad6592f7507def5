"""It learns. One fast test per env family; the acceptance-sized runs are marked slow.

    .venv/bin/pytest tests/trainer/test_learning.py -m slow -s    # the long ones, minutes each
"""

from __future__ import annotations

import time

import pytest
from conftest import read_rows, toy_config

from autopilot.config import config_from_dict, ensure_valid, load_profile
from autopilot.trainer.metrics import TailWindow
from autopilot.trainer.train import train

# CartPole: the rl-zoo settings for SB3 PPO (8 envs × 32 steps, 20 epochs of one minibatch, gamma 0.98,
# lambda 0.8, lr 1e-3 annealed, no entropy bonus), value clipping effectively off (returns reach ~50).
CARTPOLE = {
    "env_name": "gym:CartPole-v1", "env": {"num_envs": 8}, "vec": {"num_envs": 1, "num_workers": 1},
    "train": {"total_timesteps": 300_000, "bptt_horizon": 32, "minibatch_size": 256, "update_epochs": 20,
              "learning_rate": 1e-3, "gamma": 0.98, "gae_lambda": 0.8, "ent_coef": 0.0, "vf_clip_coef": 10.0,
              "checkpoint_interval": 1000},
    "autopilot": {"objective": "mean_reward", "eval_episodes": 16, "metrics_window": 20},
}


def window_means(rows, key, size):
    head, tail = TailWindow(size, rows[:size]), TailWindow(size, rows[-size:])
    return head.objective(key), tail.objective(key)


def test_toy_env_learns_with_two_shared_memory_workers(tmp_path):
    cfg = toy_config({"vec.num_workers": 2, "env.num_agents": 64}, total_timesteps=2048 * 12, update_epochs=4,
                     minibatch_size=512)
    s = train(cfg, tmp_path / "r", dashboard=False)
    first, last = window_means(read_rows(tmp_path / "r"), "success_rate", 3)
    assert last > first + 0.3 and last > 0.6, (first, last)
    assert s.eval.success_rate > 0.6


def test_cartpole_return_improves_in_a_short_run(tmp_path):
    cfg = ensure_valid(config_from_dict(CARTPOLE, {"train.total_timesteps": 256 * 80}))
    train(cfg, tmp_path / "r", dashboard=False)
    first, last = window_means(read_rows(tmp_path / "r"), "mean_reward", 10)
    assert first < 40 and last > 2.5 * first, (first, last)


@pytest.mark.slow
def test_cartpole_reaches_450_within_300k_steps(tmp_path):
    cfg = ensure_valid(config_from_dict(CARTPOLE))
    s = train(cfg, tmp_path / "r", dashboard=False)
    rows = read_rows(tmp_path / "r")
    assert rows[-1]["agent_steps"] <= 300_000
    best = max(TailWindow(20, rows[i - 20:i]).objective("mean_reward") or 0 for i in range(20, len(rows) + 1))
    print(f"cartpole: best 20-epoch mean return {best:.1f}, final tail {s.metrics['mean_reward']:.1f}, "
          f"eval {s.eval.mean_reward:.1f}")
    assert best >= 450 and s.eval.mean_reward >= 450


@pytest.mark.slow
def test_quick_profile_success_rises(tmp_path):
    cfg = ensure_valid(load_profile("quick"))
    t0 = time.time()
    s = train(cfg, tmp_path / "r", dashboard=False)
    wall = time.time() - t0
    rows = read_rows(tmp_path / "r")
    first, last = window_means(rows, "success_rate", cfg.autopilot.metrics_window)
    print(f"quick: success first window {first:.3f} -> last window {last:.3f}, {wall:.0f}s, "
          f"{s.throughput.sps:,.0f} SPS")
    assert last >= first + 0.2, (first, last)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_full_profile_reaches_60_percent_success_within_10_minutes(tmp_path):
    cfg = ensure_valid(load_profile("full"))
    t0 = time.time()
    s = train(cfg, tmp_path / "r", dashboard=False)
    wall = time.time() - t0
    print(f"full: success {s.metrics['success_rate']:.3f} (eval {s.eval.success_rate:.3f}), {wall:.0f}s")
    assert s.status == "completed" and wall < 600
    assert s.metrics["success_rate"] >= 0.6


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_entropy_coefficient_matters_at_full(tmp_path):
    scores = {}
    for ent in (0.01, 0.12):
        cfg = ensure_valid(load_profile("full", {"train.ent_coef": ent}))
        scores[ent] = train(cfg, tmp_path / f"ent{ent}", dashboard=False).metrics["success_rate"]
    print(f"full: success at ent_coef 0.01 = {scores[0.01]:.3f}, at 0.12 = {scores[0.12]:.3f}")
    assert scores[0.01] - scores[0.12] >= 0.2
