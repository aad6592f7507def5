"""The sb3 backend: config mapping and checks, metrics and summary files, true resume, and the loop."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")
import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402

from autopilot.backends.sb3 import ppo_kwargs, run_sb3  # noqa: E402
from autopilot.config import check_config, config_from_dict, ensure_valid  # noqa: E402
from autopilot.errors import ConfigError  # noqa: E402

CARTPOLE = {"backend": "sb3", "env_name": "CartPole-v1", "vec": {"num_envs": 2},
            "train": {"total_timesteps": 256, "bptt_horizon": 64, "minibatch_size": 32, "update_epochs": 2,
                      "learning_rate": 0.001, "clip_coef": 0.3, "anneal_lr": False},
            "autopilot": {"objective": "mean_reward", "max_run_seconds": 60, "stall_seconds": 40,
                          "metrics_window": 2}}


def test_train_keys_map_onto_ppo_and_extras_pass_through():
    cfg = ensure_valid(config_from_dict({**CARTPOLE, "extras": {"ppo": {"normalize_advantage": False}}}))
    kw = ppo_kwargs(cfg)
    assert (kw["n_steps"], kw["batch_size"], kw["n_epochs"], kw["clip_range"], kw["learning_rate"]) == (64, 32, 2, 0.3,
                                                                                                     0.001)
    assert kw["normalize_advantage"] is False
    bare = config_from_dict({"backend": "sb3", "env_name": "CartPole-v1"})
    assert bare.autopilot.objective == "mean_reward"  # a Gymnasium env is scored by its episode return


@pytest.mark.parametrize(("change", "needle"), [
    ({"env_name": "NoSuchEnv-v0"}, "env_name='NoSuchEnv-v0' is not a Gymnasium id"),
    ({"extras": {"ppo": {"n_steps": 8}}}, "extras.ppo.n_steps is set from train.*"),
    ({"extras": {"ppo": {"warp": 1}}}, "extras.ppo.warp is not an argument of SB3's PPO"),
    ({"train": {"adam_beta1": 0.9}}, "train.adam_beta1 is not a known key"),
])
def test_bad_sb3_configs_name_the_key(change, needle):
    data = {**CARTPOLE, **change}
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        config_from_dict(data)


def test_minibatch_larger_than_rollout_fails_with_alternative():
    cfg = config_from_dict({**CARTPOLE, "train": {**CARTPOLE["train"], "minibatch_size": 1024}})
    failed = [v for c in check_config(cfg) for v in c.violations]
    assert any("train.minibatch_size=1024" in v and "use 32" in v for v in failed), failed


def _adam_step(ckpt_path: Path) -> float:
    ckpt = torch.load(ckpt_path, weights_only=False)
    model = PPO.load(io.BytesIO(ckpt["sb3_zip"]), device="cpu")
    state = model.policy.optimizer.state_dict()["state"]
    return float(next(iter(state.values()))["step"])


def test_files_and_true_resume(tmp_path):
    cfg = ensure_valid(config_from_dict(CARTPOLE))
    run_sb3(cfg, tmp_path / "a", None)
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["agent_steps"] == 256
    assert all(r["approx_kl"] is not None and r["entropy"] > 0 for r in rows)
    summary = json.loads((tmp_path / "a" / "trainer_summary.json").read_text())
    assert summary["schema"] == 1 and summary["status"] == "completed"
    assert summary["throughput"]["agent_steps"] == 256 and summary["trainer"]["act_n"] == 2
    first = tmp_path / "a" / "checkpoints" / "latest.pt"
    steps_a = _adam_step(first)
    assert steps_a == 2 * 2 * (128 // 32)  # rollouts × epochs × minibatches

    run_sb3(cfg, tmp_path / "b", str(first))
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["epoch"] == 3 and rows[0]["agent_steps"] == 384  # counters continue
    summary = json.loads((tmp_path / "b" / "trainer_summary.json").read_text())
    assert summary["checkpoint"]["resume_kind"] == "warm" and summary["throughput"]["agent_steps"] == 512
    assert _adam_step(tmp_path / "b" / "checkpoints" / "latest.pt") == 2 * steps_a  # the optimizer continued


def test_a_run_leaves_nothing_in_the_temp_dir(tmp_path, monkeypatch):
    """SB3's default logger makes a tempdir/SB3-<time> folder per learn(); the backend's writes nothing."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    run_sb3(ensure_valid(config_from_dict(CARTPOLE)), tmp_path / "a", None)
    assert (tmp_path / "a" / "metrics.jsonl").is_file()
    assert list(temp.iterdir()) == []


def test_autopilot_run_three_runs_with_sb3(tmp_path):
    ws = tmp_path / "ws"
    cli = [sys.executable, "-m", "autopilot"]
    config = tmp_path / "cartpole_sb3.json"
    config.write_text(json.dumps(CARTPOLE))
    proc = subprocess.run([*cli, "run", "--config", str(config), "--runs", "3", "--workdir", str(ws)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted(p for p in (ws / "runs").iterdir() if p.is_dir())
    assert len(runs) == 3
    steps = [json.loads((r / "trainer_summary.json").read_text())["throughput"]["agent_steps"] for r in runs]
    assert steps == [256, 512, 768]  # each run continued the previous one's model
    notes = (runs[-1] / "notes.md").read_text()
    assert "bptt 64 (CartPole-v1, backend sb3)" in notes and "Derived batch: 1×2×64 = 128" in notes
    shutil.rmtree(ws)


@pytest.mark.slow
def test_sigterm_mid_run_leaves_a_resumable_checkpoint(tmp_path):
    import signal
    import time

    from autopilot.config import save_config

    data = {**CARTPOLE, "train": {**CARTPOLE["train"], "total_timesteps": 2560}}  # 20 rollouts
    config = save_config(config_from_dict(data), tmp_path / "config.json")
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "autopilot.backends.sb3", "--config", str(config), "--run-dir",
                             str(run)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    summary = json.loads((run / "trainer_summary.json").read_text())
    ckpt = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)
    assert summary["status"] == "interrupted" and ckpt["resumable"]
    steps = ckpt["counters"]["agent_steps"]
    assert steps == summary["throughput"]["agent_steps"] and steps % 128 == 0 and 0 < steps < 2560
    run_sb3(ensure_valid(config_from_dict(data)), tmp_path / "again", str(run / "checkpoints" / "latest.pt"))
    rows = [json.loads(line) for line in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["agent_steps"] == steps + 128 and rows[-1]["agent_steps"] == 2560  # on to the original target
