"""Whole runs on the toy env: the files and the summary schema, checkpoints, resume, stops, divergence."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import read_rows, toy_config

from autopilot.summary import read_summary
from autopilot.trainer.checkpoint import CheckpointError, load_checkpoint
from autopilot.trainer.train import Trainer, train

ROW_KEYS = {"epoch", "agent_steps", "sps", "wall_s", "learning_rate", "approx_kl", "old_approx_kl", "clipfrac",
            "entropy", "value_loss", "policy_loss", "explained_var", "success_rate", "mean_reward",
            "episode_length", "episodes", "cpu_pct", "dram_pct", "gpu_pct", "vram_pct"}


def _stop_after(n):
    def hook(trainer, row):
        if row["epoch"] >= n:
            trainer.request_stop("test")
    return hook


def test_summary_schema_files_and_checkpoints(tmp_path):
    run = tmp_path / "run-a"
    summary = train(toy_config(), run, dashboard=False)
    data = json.loads((run / "trainer_summary.json").read_text())
    assert data["schema"] == 1 and data["run_id"] == "run-a" and data["status"] == "completed"
    assert set(data) >= {"throughput", "metrics", "trainer", "utilisation", "eval", "checkpoint"}
    parsed = read_summary(run / "trainer_summary.json")
    assert parsed.to_json() == summary.to_json()

    tp = data["throughput"]
    assert tp["agent_steps"] == 2048 and tp["epoch"] == 4 and tp["sps"] > 0 and tp["wall_s"] > 0
    m = data["metrics"]
    assert m["episodes"] > 0 and 0.0 <= m["success_rate"] <= 1.0
    assert {"mean_reward", "episode_length"} <= set(m)
    assert all(math.isfinite(data["trainer"][k]) for k in ("approx_kl", "clipfrac", "entropy", "value_loss",
                                                            "policy_loss", "explained_var"))
    assert data["trainer"]["act_dim"] >= 1  # diagnosis judges entropy per action dimension
    u = data["utilisation"]
    assert 0.0 <= u["cpu_pct"] <= 100.0 and 0.0 < u["dram_pct"] <= 100.0
    if not torch.cuda.is_available():
        assert u["gpu_pct"] is None and u["vram_pct"] is None  # not measurable: null, never 0.0
    ev = data["eval"]
    assert ev["episodes"] >= 16 and 0.0 <= ev["success_rate"] <= 1.0 and math.isfinite(ev["mean_reward"])
    ck = data["checkpoint"]
    assert Path(ck["path"]) == run / "checkpoints" / "latest.pt" and Path(ck["path"]).is_file()
    assert ck["resumed_from"] is None
    assert Path(ck["best_path"]).is_file() and 0.0 <= ck["best_score"] <= 1.0

    rows = read_rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["agent_steps"] for r in rows] == [512, 1024, 1536, 2048]
    assert all(ROW_KEYS <= set(r) for r in rows)
    assert (run / "train.log").read_text().count("\n") >= 2

    latest = load_checkpoint(ck["path"])
    assert latest["counters"]["agent_steps"] == 2048 and latest["counters"]["epoch"] == 4
    assert latest["resumable"] is False  # a completed run: resuming it is a warm start
    assert {"policy", "optimizer", "rng", "config", "env_state"} <= set(latest)


def test_save_strategies(tmp_path):
    train(toy_config({"autopilot.save_strategy": "all"}, checkpoint_interval=2), tmp_path / "all", dashboard=False)
    names = sorted(p.name for p in (tmp_path / "all" / "checkpoints").iterdir())
    assert names == ["best.pt", "epoch_2.pt", "epoch_4.pt", "latest.pt"]
    s = train(toy_config({"autopilot.save_strategy": "latest"}), tmp_path / "latest", dashboard=False)
    assert sorted(p.name for p in (tmp_path / "latest" / "checkpoints").iterdir()) == ["latest.pt"]
    assert s.checkpoint.model_dump()["best_path"] is None


def test_log_captured_means_print_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOPILOT_LOG_CAPTURED", "1")
    train(toy_config(total_timesteps=512), tmp_path / "r", dashboard=False)
    assert not (tmp_path / "r" / "train.log").exists()
    assert "run r" in capsys.readouterr().out


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_is_exact(tmp_path, workers):
    cfg = toy_config({"vec.num_workers": workers}, anneal_lr=True, torch_deterministic=True)
    straight = train(cfg, tmp_path / "straight", dashboard=False)

    first = Trainer(cfg, tmp_path / "first", on_epoch=_stop_after(2)).run(dashboard=False)
    assert first.status == "interrupted" and first.throughput.epoch == 2
    ckpt = load_checkpoint(first.checkpoint.path)
    assert ckpt["resumable"] is True and ckpt["counters"]["epoch"] == 2

    resumed = train(cfg, tmp_path / "second", resume=first.checkpoint.path, dashboard=False)
    assert resumed.status == "completed"
    assert resumed.checkpoint.model_dump()["resume_kind"] == "continue"
    assert (resumed.throughput.agent_steps, resumed.throughput.epoch) == (2048, 4)
    a = load_checkpoint(straight.checkpoint.path)
    b = load_checkpoint(resumed.checkpoint.path)
    assert a["counters"] == b["counters"]
    for k in a["policy"]:
        assert torch.allclose(a["policy"][k], b["policy"][k], atol=1e-6), k
    # The learning-rate schedule continued (epochs 3 and 4 at the straight run's rates) and the
    # experience was the same.
    rows_a, rows_b = read_rows(tmp_path / "straight")[2:], read_rows(tmp_path / "second")
    assert [r["learning_rate"] for r in rows_a] == [r["learning_rate"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra["episodes"] == rb["episodes"] and ra["success_rate"] == pytest.approx(rb["success_rate"])
        assert ra["value_loss"] == pytest.approx(rb["value_loss"], rel=1e-4, abs=1e-7)


def test_warm_start_loads_weights_takes_new_hyperparameters_and_trains_its_own_budget(tmp_path):
    base = train(toy_config(), tmp_path / "base", dashboard=False)
    cfg = toy_config(ent_coef=0.05, learning_rate=1e-3)
    t = Trainer(cfg, tmp_path / "warm-probe", resume=base.checkpoint.path)
    t.t_start = time.time()
    t._setup()
    try:
        saved = load_checkpoint(base.checkpoint.path)["policy"]
        assert all(torch.equal(v, saved[k]) for k, v in t.policy.state_dict().items())
        assert t.resume_kind == "warm" and t.optimizer.param_groups[0]["lr"] == 1e-3
    finally:
        t.vec.close()

    warm = train(cfg, tmp_path / "warm", resume=base.checkpoint.path, dashboard=False)
    assert warm.status == "completed" and warm.checkpoint.resumed_from == base.checkpoint.path
    assert (warm.throughput.agent_steps, warm.throughput.epoch) == (4096, 8)  # counters continue
    rows = read_rows(tmp_path / "warm")
    assert rows[0]["epoch"] == 5 and rows[0]["learning_rate"] == pytest.approx(1e-3)  # schedule restarted
    assert len(rows) == 4


def test_interrupted_checkpoint_with_changed_hyperparameters_is_a_warm_start(tmp_path):
    first = Trainer(toy_config(), tmp_path / "first", on_epoch=_stop_after(1)).run(dashboard=False)
    changed = train(toy_config(ent_coef=0.1), tmp_path / "b", resume=first.checkpoint.path, dashboard=False)
    assert changed.checkpoint.model_dump()["resume_kind"] == "warm"
    assert changed.throughput.agent_steps == 512 + 2048


def test_missing_checkpoint_fails_with_a_summary(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        train(toy_config(), tmp_path / "r", resume=str(tmp_path / "nope.pt"), dashboard=False)
    assert read_summary(tmp_path / "r" / "trainer_summary.json").status == "failed"


def test_divergence_stops_early_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(trainer, row):
        if row["epoch"] == 1:
            with torch.no_grad():
                next(trainer.policy.parameters()).fill_(float("nan"))

    cfg = toy_config(total_timesteps=512 * 6)
    s = Trainer(cfg, tmp_path / "r", on_epoch=poison).run(dashboard=False)
    assert s.status == "diverged" and s.throughput.epoch == 2 and "non-finite" in s.error
    assert read_summary(tmp_path / "r" / "trainer_summary.json").status == "diverged"
    ckpt = load_checkpoint(s.checkpoint.path)
    assert ckpt["counters"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["policy"].values())
    assert s.eval is None


def test_max_run_seconds_interrupts_and_keeps_a_resumable_checkpoint(tmp_path):
    cfg = toy_config({"autopilot.max_run_seconds": 1.0}, total_timesteps=512 * 100_000, checkpoint_interval=1000)
    s = train(cfg, tmp_path / "r", dashboard=False)
    assert s.status == "interrupted" and "max_run_seconds" in s.error
    assert 1 <= s.throughput.epoch < 100_000
    assert load_checkpoint(s.checkpoint.path)["resumable"] is True


def test_sigterm_interrupts_cleanly(tmp_path):
    here = Path(__file__).parent
    script = (
        f"import sys; sys.path.insert(0, {str(here)!r})\n"
        "from conftest import toy_config\n"
        "from autopilot.trainer.train import train\n"
        f"s = train(toy_config(total_timesteps=512 * 100000, checkpoint_interval=1000), {str(tmp_path / 'r')!r}, "
        "dashboard=False)\n"
        "print('STATUS', s.status)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": str(here)})
    metrics = tmp_path / "r" / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "STATUS interrupted" in out
    s = read_summary(tmp_path / "r" / "trainer_summary.json")
    assert s.status == "interrupted" and "SIGTERM" in s.error
    assert load_checkpoint(s.checkpoint.path)["counters"]["epoch"] == s.throughput.epoch >= 2


def test_resume_into_a_crashed_runs_folder_drops_its_rows_past_the_checkpoint(tmp_path):
    run = tmp_path / "r"
    first = Trainer(toy_config(checkpoint_interval=2), run, on_epoch=_stop_after(3)).run(dashboard=False)
    # Pretend the run crashed after epoch 3 with its last checkpoint at epoch 2.
    (run / "checkpoints" / "latest.pt").unlink()
    first_ckpt = run / "checkpoints" / "ep2.pt"
    Trainer(toy_config(checkpoint_interval=2), tmp_path / "scratch", on_epoch=_stop_after(2)).run(dashboard=False)
    (tmp_path / "scratch" / "checkpoints" / "latest.pt").rename(first_ckpt)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 4, "torn')  # a half-written line
    assert first.throughput.epoch == 3
    resumed = train(toy_config(checkpoint_interval=2), run, resume=str(first_ckpt), dashboard=False)
    assert resumed.status == "completed"
    assert [r["epoch"] for r in read_rows(run)] == [1, 2, 3, 4]


def test_torch_threads_take_the_cores_env_workers_leave_free(monkeypatch):
    from autopilot.trainer.train import torch_threads

    monkeypatch.delenv("AUTOPILOT_TORCH_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    assert torch_threads(1) == 8  # every core, at most 8: a 64-wide MLP gains nothing from more
    assert torch_threads(6) == 6  # six cores for six env worker processes
    assert torch_threads(12) == 1  # never none
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # a launcher's budget (Ray sets it per task) caps the count
    assert torch_threads(1) == 3
    monkeypatch.setenv("AUTOPILOT_TORCH_THREADS", "5")  # and the user's setting wins
    assert torch_threads(1) == 5
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert torch_threads(8) == 4  # but stays off the cores of workers that step while the policy runs
