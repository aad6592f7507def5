"""Metric rows and the tail window: episode-weighted env stats, nulls for the unmeasurable."""

from __future__ import annotations

import json
import math

import pytest

from autopilot.trainer.metrics import TailWindow, env_means, epoch_row, row_json

UTIL = {"cpu_pct": 50.0, "dram_pct": 20.0, "gpu_pct": None, "vram_pct": None}
STATS = {"approx_kl": 0.01, "old_approx_kl": 0.011, "clipfrac": 0.1, "entropy": 1.0, "value_loss": 0.5,
         "policy_loss": -0.01, "explained_var": 0.3}


def _row(epoch, sums, **stats):
    return epoch_row(epoch=epoch, agent_steps=epoch * 100, sps=1000.0, wall_s=float(epoch), lr=1e-3,
                     stats={**STATS, **stats}, env_sums=sums, env_keys=["success_rate", "mean_reward"], util=UTIL)


def test_env_means_divides_sums_by_episodes():
    means, n = env_means({"episodes": 4.0, "success_rate": 3.0, "mean_reward": 10.0})
    assert n == 4 and means == {"success_rate": 0.75, "mean_reward": 2.5}
    means, n = env_means({"episodes": 0.0, "success_rate": 0.0})
    assert n == 0 and means == {"success_rate": None}


def test_row_has_nulls_when_no_episode_finished_and_is_strict_json():
    row = _row(1, {}, explained_var=float("nan"))
    assert row["success_rate"] is None and row["mean_reward"] is None and row["episodes"] == 0
    assert row["gpu_pct"] is None and row["cpu_pct"] == 50.0
    parsed = json.loads(row_json(row))
    assert parsed["explained_var"] is None
    for key in ("epoch", "agent_steps", "sps", "wall_s", "learning_rate", "approx_kl", "old_approx_kl", "clipfrac",
                "entropy", "value_loss", "policy_loss", "explained_var", "episodes", "cpu_pct", "dram_pct",
                "gpu_pct", "vram_pct"):
        assert key in parsed


def test_tail_window_weights_env_stats_by_episodes_and_keeps_the_last_n():
    w = TailWindow(2)
    w.add(_row(1, {"episodes": 100, "success_rate": 0.0, "mean_reward": 0.0}, entropy=9.0))
    w.add(_row(2, {"episodes": 1, "success_rate": 1.0, "mean_reward": 5.0}, entropy=2.0))
    w.add(_row(3, {"episodes": 3, "success_rate": 0.0, "mean_reward": 1.0}, entropy=4.0))
    assert w.full
    m = w.env_metrics()
    assert m["episodes"] == 4
    assert m["success_rate"] == pytest.approx(0.25)  # (1*1 + 0*3) / 4, the 100-episode epoch dropped out
    assert m["mean_reward"] == pytest.approx((5.0 + 1.0) / 4)  # sums 5 and 1 over 1 + 3 episodes
    assert w.trainer_metrics()["entropy"] == pytest.approx(3.0)
    assert w.utilisation() == {"cpu_pct": 50.0, "dram_pct": 20.0, "gpu_pct": None, "vram_pct": None}
    assert w.objective("success_rate") == pytest.approx(0.25)
    assert w.objective("entropy") == pytest.approx(3.0)
    assert w.objective("no_such_metric") is None


def test_tail_window_with_no_episodes_gives_null_metrics():
    w = TailWindow(3)
    w.add(_row(1, {}))
    m = w.env_metrics()
    assert m == {"success_rate": None, "mean_reward": None, "episodes": 0}
    assert w.objective("success_rate") is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in m.values())
