"""PufferLib's own trainer under the driver: SIGTERM leaves a resumable checkpoint, and a resume restores
weights, optimizer, learning-rate schedule and counters. Needs PufferLib (scripts/install_pufferlib.sh)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autopilot.backends.pufferlib import pufferlib_installed
from autopilot.config import load_config, save_config

# Located, not imported: importing pufferlib links `resources` into the working folder.
pytestmark = pytest.mark.skipif(not pufferlib_installed(), reason="PufferLib is not installed "
                                                                 "(scripts/install_pufferlib.sh)")

INI = """\
[base]
package = ocean
env_name = puffer_squared
policy_name = Policy
rnn_name = Recurrent

[vec]
backend = Serial
num_envs = 1

[env]
num_envs = 32

[train]
device = cpu
total_timesteps = 16384
bptt_horizon = 16
minibatch_size = 512
checkpoint_interval = 1000
"""


def _driver(config: Path, run_dir: Path, resume: Path | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "autopilot.backends.pufferlib_driver", "--config", str(config), "--run-dir",
            str(run_dir)] + (["--resume", str(resume)] if resume else [])
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigterm_checkpoint_then_true_resume(tmp_path):
    ini = tmp_path / "squared.ini"
    ini.write_text(INI)
    config = save_config(load_config(ini), tmp_path / "config.json")
    run1 = tmp_path / "run1"
    proc = _driver(config, run1)
    metrics = run1 / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    summary = json.loads((run1 / "trainer_summary.json").read_text())
    assert summary["status"] == "interrupted", summary
    ckpt = torch.load(run1 / "checkpoints" / "latest.pt", weights_only=False)
    steps, epoch = ckpt["counters"]["agent_steps"], ckpt["counters"]["epoch"]
    assert ckpt["resumable"] and 0 < steps < 16384 and steps == epoch * 512
    assert summary["throughput"]["agent_steps"] == steps  # trained steps only
    assert ckpt["optimizer"]["state"], "optimizer moments were saved"

    run2 = tmp_path / "run2"
    proc = _driver(config, run2, run1 / "checkpoints" / "latest.pt")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    n_states = len(ckpt["optimizer"]["state"])
    assert f"resumed (continue) at step {steps:,}, epoch {epoch}, optimizer state for {n_states} tensors" in out
    rows = [json.loads(line) for line in (run2 / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["epoch"] == epoch + 1 and rows[0]["agent_steps"] == steps + 512
    final = json.loads((run2 / "trainer_summary.json").read_text())
    assert final["status"] == "completed" and final["throughput"]["agent_steps"] == 16384
    assert final["throughput"]["trained_steps"] == 16384 - steps
    # The schedule continued: the first resumed epoch's learning rate is the one after the saved epoch's.
    sched = ckpt["scheduler"]
    assert sched["last_epoch"] == epoch


USER_ENV = '''
import gymnasium
import pufferlib.emulation
import pufferlib.models
import pufferlib.vector


def cartpole(buf=None, seed=0):
    return pufferlib.emulation.GymnasiumPufferEnv(env_creator=gymnasium.make, env_args=["CartPole-v1"], buf=buf,
                                                  seed=seed)


def make_vecenv(args):
    return pufferlib.vector.make(cartpole, num_envs=args["vec"]["num_envs"], backend=pufferlib.vector.Serial)


def make_policy(args, vecenv):
    return pufferlib.models.Default(vecenv.driver_env, **args["policy"])
'''


@pytest.mark.slow
def test_a_users_own_env_and_policy(tmp_path):
    (tmp_path / "user_env.py").write_text(USER_ENV)
    ini = tmp_path / "mine.ini"
    ini.write_text("[base]\npackage = none\nenv_name = my_cartpole\nrnn_name = None\nvecenv = user_env:make_vecenv\n"
                   "policy_factory = user_env:make_policy\n[vec]\nnum_envs = 8\n[policy]\nhidden_size = 32\n"
                   "[train]\ndevice = cpu\noptimizer = adam\ntotal_timesteps = 1024\nbptt_horizon = 16\n"
                   "minibatch_size = 64\n")
    cfg = load_config(ini)
    assert cfg.extras["vecenv"] == "user_env:make_vecenv" and cfg.extras["policy"] == {"hidden_size": 32}
    config = save_config(cfg, tmp_path / "config.json")
    argv = [sys.executable, "-m", "autopilot.backends.pufferlib_driver", "--config", str(config), "--run-dir",
            str(tmp_path / "run")]
    import os

    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "my_cartpole via PufferLib Serial, 8 agents, batch 128 = 8 segments × bptt 16" in proc.stdout
    summary = json.loads((tmp_path / "run" / "trainer_summary.json").read_text())
    assert summary["status"] == "completed" and summary["throughput"]["agent_steps"] == 1024
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 9)) and all(r["entropy"] > 0 for r in rows)
