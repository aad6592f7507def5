"""The typed configuration, in PufferLib's section and key names.

Validated once at the edge (`Config.model_validate` via `load_config` / `config_from_dict`); the
inside of the system trusts a `Config`. The config's `backend` (see `autopilot.backends`) decides what
else is allowed: unknown `vec`/`train`/`policy` keys are errors for autopilot's own trainer and are passed
through (typed where known) for trainers that own more keys (PufferLib); `extras` holds a backend's own
settings; `env` is validated by the chosen environment's parameter model when the backend uses
autopilot's env registry, and is the trainer's own otherwise.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autopilot.backends import backend_of, get_backend


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenSection(BaseModel):
    """A section whose unknown keys are kept for the backend to accept (pass-through) or reject."""

    model_config = ConfigDict(extra="allow")


class VecConfig(OpenSection):
    num_envs: int = 2  # env objects
    num_workers: int | Literal["auto"] = 1  # processes stepping them (1 = in-process; auto: PufferLib's)
    # serial/multiprocessing: every backend; ray/pufferenv: PufferLib's other vectorisations.
    backend: Literal["serial", "multiprocessing", "ray", "pufferenv"] = "serial"

    @field_validator("backend", mode="before")
    @classmethod
    def _pufferlib_backend_names(cls, v: Any) -> Any:
        # PufferLib writes `Serial` / `Multiprocessing`; accept its spelling.
        return v.lower() if isinstance(v, str) else v


class TrainConfig(OpenSection):
    device: Literal["cpu", "cuda", "mps", "auto"] = "cpu"
    seed: int = 1
    torch_deterministic: bool = True
    total_timesteps: int = 1_000_000
    learning_rate: float = 3e-3
    anneal_lr: bool = True
    optimizer: Literal["adam", "adamw", "muon"] = "adam"  # muon: PufferLib's (heavyball)
    gamma: float = 0.99
    gae_lambda: float = 0.95
    update_epochs: int = 4
    clip_coef: float = 0.2
    vf_coef: float = 0.5
    vf_clip_coef: float = 0.2
    ent_coef: float = 0.01
    max_grad_norm: float = 0.5
    bptt_horizon: int = 32
    batch_size: int | Literal["auto"] = "auto"
    minibatch_size: int | Literal["auto"] = "auto"
    max_minibatch_size: int = 32768
    checkpoint_interval: int = 50  # epochs between periodic checkpoints


class PolicyConfig(OpenSection):
    hidden_size: int = 64
    num_layers: int = 2


class AutopilotConfig(Section):
    resume_mode: Literal["fresh", "continue"] = "fresh"
    resume_from: str = "latest"  # latest | best | a checkpoint path
    save_strategy: Literal["best", "latest", "all"] = "best"
    objective: str = "success_rate"
    max_run_seconds: float = 900.0
    stall_seconds: float = 120.0
    eval_episodes: int = 64  # deterministic evaluation episodes at the end of a run (0 = none)
    metrics_window: int = 10  # epochs in the tail window that summaries and "best" are judged on
    max_retries: int = 1  # a crashed trainer is retried this many times from its latest checkpoint
    # A user's own trainer: argv with {config}, {run_dir}, {resume} placeholders; None = the built-in one.
    trainer_command: list[str] | None = None


class SweepSpec(Section):
    """One PufferLib `[sweep.<section>.<key>]` block: a distribution over a range."""

    distribution: str = "uniform"
    min: float
    max: float
    mean: float | None = None
    scale: float | str | None = None


class Config(Section):
    backend: str = "builtin"  # who trains: builtin | pufferlib | sb3 | command | a plugin's name
    env_name: str = "drone_delivery"
    env: dict[str, Any] = Field(default_factory=dict)
    vec: VecConfig = Field(default_factory=VecConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    autopilot: AutopilotConfig = Field(default_factory=AutopilotConfig)
    sweep: dict[str, SweepSpec] = Field(default_factory=dict)  # dotted key -> range (overrides defaults)
    extras: dict[str, Any] = Field(default_factory=dict)  # the backend's own settings, passed through

    @model_validator(mode="before")
    @classmethod
    def _backend_prepares(cls, data: Any) -> Any:
        return backend_of(data).prepare(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _backend_validates(self) -> Config:
        # Unknown keys, typed extras, and the env's params (its defaults filled) per the backend.
        get_backend(self.backend).validate(self)
        return self
