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

pytest.importorskip("pufferlib.pufferl", reason="PufferLib is not installed (scripts/install_pufferlib.sh)")
torch = pytest.importorskip("torch")

from autopilot.config import load_config, save_config  # noqa: E402

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
    assert f"resumed (continue) at step {steps:,}, epoch {epoch}" in out
    rows = [json.loads(line) for line in (run2 / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["epoch"] == epoch + 1 and rows[0]["agent_steps"] == steps + 512
    final = json.loads((run2 / "trainer_summary.json").read_text())
    assert final["status"] == "completed" and final["throughput"]["agent_steps"] == 16384
    assert final["throughput"]["trained_steps"] == 16384 - steps
    # The schedule continued: the first resumed epoch's learning rate is the one after the saved epoch's.
    sched = ckpt["scheduler"]
    assert sched["last_epoch"] == epoch
