"""The trainer on the device-resident drone_delivery: when it is chosen, and that a run with it works."""

from __future__ import annotations

import pytest
import torch
from conftest import read_rows

from autopilot.config import config_from_dict, ensure_valid
from autopilot.errors import ConfigError
from autopilot.trainer.train import Trainer, train, use_torch_env
from autopilot.trainer.vector import SerialVec, TorchVec


def drone_config(backend: str = "serial", **train_keys):
    return ensure_valid(config_from_dict({
        "env_name": "drone_delivery", "env": {"num_envs": 16, "num_drones": 4},
        "vec": {"num_envs": 2, "num_workers": 1, "backend": backend},
        "train": {"total_timesteps": 128 * 8 * 4, "bptt_horizon": 8, "minibatch_size": 256, "update_epochs": 2,
                  "checkpoint_interval": 2, **train_keys},
        "autopilot": {"eval_episodes": 8, "metrics_window": 2},
    }))


def test_the_torch_env_is_chosen_on_cuda_or_when_the_config_asks():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_torch_env(drone_config(), cpu)
    assert use_torch_env(drone_config(), cuda)
    assert use_torch_env(drone_config("torch"), cpu)
    gym = ensure_valid(config_from_dict({"env_name": "gym:CartPole-v1", "env": {"num_envs": 4}}))
    assert not use_torch_env(gym, cuda)  # no torch implementation: the numpy path, even on CUDA
    with pytest.raises(ConfigError, match="vec.backend='torch'.*gym:CartPole-v1.*use vec.backend='serial'"):
        use_torch_env(gym.model_copy(update={"vec": gym.vec.model_copy(update={"backend": "torch"})}), cpu)


def test_a_run_on_the_torch_env_trains_resumes_and_reports_env_stats(tmp_path):
    seen = {}

    def spy(trainer: Trainer, row):
        seen["vec"] = type(trainer.vec)

    summary = Trainer(drone_config("torch"), tmp_path / "r", on_epoch=spy).run(dashboard=False)
    assert seen["vec"] is TorchVec and summary.status == "completed"
    rows = read_rows(tmp_path / "r")
    assert len(rows) == 4 and sum(r["episodes"] for r in rows) > 0
    assert all(r["collision_rate"] is not None and 0 <= r["collision_rate"] <= 1 for r in rows if r["episodes"])
    assert summary.eval is not None and summary.eval.episodes >= 8  # evaluation runs the numpy env
    # A warm start from its checkpoint (the env state is not in it: the rollout starts from a reset).
    resumed = train(drone_config("torch"), tmp_path / "r2", resume=str(tmp_path / "r" / "checkpoints" / "latest.pt"),
                    dashboard=False)
    assert resumed.status == "completed" and resumed.throughput.agent_steps == 2 * summary.throughput.agent_steps


def test_the_serial_backend_keeps_the_numpy_env_on_cpu(tmp_path):
    seen = {}
    Trainer(drone_config(total_timesteps=128 * 8), tmp_path / "r",
            on_epoch=lambda t, row: seen.setdefault("vec", type(t.vec))).run(dashboard=False)
    assert seen["vec"] is SerialVec
