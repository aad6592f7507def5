"""Checkpoints, and the resume rule.

A checkpoint (`torch.save` of a dict, written atomically) holds: the policy's and the optimizer's state
dicts, the RNG states (torch CPU and CUDA, numpy, python), the counters (`agent_steps`, `epoch`, the
run's start/target steps and the learning-rate schedule position), the full config, the rollout state
(the current observation and done flags) with the env objects pickled when they can be (so a resumed
rollout continues the same trajectories), the tail window of metrics rows, the best score so far and
the best checkpoint's path, and `resumable`: whether it is the point of an unfinished run.

The resume rule (one rule for `--resume PATH` and for the loop's warm starts):

* **continue** (a true resume) when the checkpoint is `resumable` (latest/epoch checkpoint of a run
  that stopped before its budget: interrupted, crashed) and the config has the same learning-relevant
  settings (everything in `train` but `device`/`checkpoint_interval`, `policy`, `env_name`, `env`,
  `vec.num_envs`). Weights, optimizer, RNGs, env state, counters, tail window and best score are all
  restored; the run ends at the original target step and the learning-rate schedule continues exactly.
  Two epochs + resume + two epochs equals four epochs straight.
* **warm start** otherwise (a finished run's checkpoint, `best.pt`, or changed hyperparameters): the
  weights and optimizer state are loaded when their shapes match (the new config's hyperparameters
  apply: learning rate, optimizer settings), the counters `agent_steps`/`epoch` continue, and this run
  trains `train.total_timesteps` MORE steps with the learning-rate schedule restarted for those steps.
"""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autopilot.atomic import atomic_write_bytes
from autopilot.config.model import Config
from autopilot.errors import AutopilotError

FORMAT = 1
_IGNORED_TRAIN_KEYS = ("device", "checkpoint_interval")


class CheckpointError(AutopilotError):
    """A checkpoint that does not exist or cannot be read."""


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def learning_key(cfg: Config | dict[str, Any]) -> dict[str, Any]:
    """The settings that must match for a true resume."""
    d = cfg.model_dump() if isinstance(cfg, Config) else cfg
    train = {k: v for k, v in d["train"].items() if k not in _IGNORED_TRAIN_KEYS}
    return {"train": train, "policy": d["policy"], "env_name": d["env_name"], "env": d["env"],
            "vec.num_envs": d["vec"]["num_envs"]}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # Our own file: it holds numpy RNG state and pickled env objects, so not weights_only.
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from None
    if not isinstance(ckpt, dict) or "policy" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not an autopilot checkpoint (no policy state)")
    return ckpt


def resume_kind(ckpt: dict[str, Any], cfg: Config) -> str:
    """'continue' (exact resume) or 'warm' (warm start); see the module docstring."""
    saved = ckpt.get("config")
    if ckpt.get("resumable") and saved is not None and learning_key(saved) == learning_key(cfg):
        return "continue"
    return "warm"


def shapes_match(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = module.state_dict()
    return own.keys() == state.keys() and all(own[k].shape == state[k].shape for k in own)


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> bool:
    """Load moments and step counts; keep this config's hyperparameters (lr, eps, weight decay, ...)."""
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError):
        return False
    for group, own in zip(optimizer.param_groups, settings, strict=True):
        group.update(own)
    return True
