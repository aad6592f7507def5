"""Shared helpers for the trainer's tests: the toy env (registered on import) and small configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trainer_toy_env  # noqa: F401 - registers `toy_reach`

from autopilot.config import config_from_dict, ensure_valid


def toy_config(overrides: dict[str, Any] | None = None, **train: Any):
    """A tiny, fast config on the toy env: 4 env objects × 16 agents × bptt 8 = batch 512."""
    base = {
        "env_name": "toy_reach", "env": {"num_agents": 16}, "vec": {"num_envs": 4, "num_workers": 1},
        "train": {"total_timesteps": 512 * 4, "bptt_horizon": 8, "minibatch_size": 128, "update_epochs": 2,
                  "learning_rate": 3e-3, "checkpoint_interval": 1, **train},
        "autopilot": {"eval_episodes": 16, "metrics_window": 2},
    }
    return ensure_valid(config_from_dict(base, overrides or {}))


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def make_cfg():
    return toy_config
