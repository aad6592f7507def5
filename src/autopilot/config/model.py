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
from autopilot.space import SearchSpace, knob, space_from_model


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenSection(BaseModel):
    """A section whose unknown keys are kept for the backend to accept (pass-through) or reject."""

    model_config = ConfigDict(extra="allow")


# Each knob is declared once, here: default and one-line doc (the pydantic field), scale, range, whether
# advisors may tune it, and its prior (standard value, typical range). The search space
# (`autopilot.config.load.config_space`), the guard, the advisors, the notes and `autopilot keys` derive
# from these declarations.
class VecConfig(OpenSection):
    num_envs: int = knob(2, "env objects stepped per rollout", "int", 1, 4096, tunable=False)
    num_workers: int | Literal["auto"] = knob(1, "processes stepping the env objects (1 = in-process; auto: "
                                                 "PufferLib's, one per env)", "int", 1, 256, tunable=False)
    # "torch": the env's torch implementation stepped on train.device (chosen anyway on CUDA when there is one).
    # ray/pufferenv: PufferLib's other vectorisations (the pufferlib backend's).
    backend: Literal["serial", "multiprocessing", "torch", "ray", "pufferenv"] = "serial"

    @field_validator("backend", mode="before")
    @classmethod
    def _pufferlib_backend_names(cls, v: Any) -> Any:
        # PufferLib writes `Serial` / `Multiprocessing`; accept its spelling.
        return v.lower() if isinstance(v, str) else v


_PPO = "CleanRL / SB3 / PufferLib PPO defaults and tuned configs"


class TrainConfig(OpenSection):
    device: Literal["cpu", "cuda", "mps", "auto"] = "cpu"
    seed: int = knob(1, "RNG seed; runs differing only in it measure the noise band", "int", 0, 2**31 - 1,
                     tunable=False)
    torch_deterministic: bool = True
    total_timesteps: int = knob(1_000_000, "agent-steps to train in this run", "int", 1, 10**12, tunable=False)
    learning_rate: float = knob(3e-3, "Adam step size", "log", 1e-5, 1e-1, prior=(1e-3, 1e-4, 1e-2), source=_PPO)
    anneal_lr: bool = knob(True, "linearly anneal the learning rate to 0 over the run", "bool")
    # muon: PufferLib's (heavyball); the pufferlib backend's search space offers it.
    optimizer: Literal["adam", "adamw", "muon"] = knob("adam", "the optimizer", "choice", choices=("adam", "adamw"))
    gamma: float = knob(0.99, "discount factor; 1 - gamma is the inverse horizon", "log1m", 0.8, 0.9999,
                        prior=(0.99, 0.95, 0.999), source=_PPO)
    gae_lambda: float = knob(0.95, "GAE lambda: bias/variance trade-off of the advantages", "log1m", 0.5, 0.999,
                             prior=(0.95, 0.9, 0.99), source=_PPO)
    update_epochs: int = knob(4, "passes over each batch", "intlog", 1, 32, prior=(4, 1, 10), source=_PPO)
    clip_coef: float = knob(0.2, "PPO's policy-ratio clip", "log", 0.01, 1.0, prior=(0.2, 0.1, 0.3), source=_PPO)
    vf_coef: float = knob(0.5, "weight of the value loss", "log0", 0.01, 10.0, prior=(0.5, 0.25, 2.0), source=_PPO)
    vf_clip_coef: float = knob(0.2, "clip of the value update", "log", 0.01, 10.0, prior=(0.2, 0.1, 1.0),
                               source=_PPO)
    ent_coef: float = knob(0.01, "weight of the entropy bonus (0 = off)", "log0", 1e-4, 0.5,
                           prior=(0.01, 0.0, 0.02), source=_PPO)
    max_grad_norm: float = knob(0.5, "global gradient-norm clip", "log", 0.05, 10.0, prior=(0.5, 0.3, 2.0),
                                source=_PPO)
    bptt_horizon: int = knob(32, "steps per segment (rollout length per agent)", "pow2", 1, 1024, tunable=False)
    batch_size: int | Literal["auto"] = "auto"
    minibatch_size: int | Literal["auto"] = "auto"
    max_minibatch_size: int = knob(32768, "larger minibatches are accumulated in chunks of this size", "int", 1,
                                   2**24, tunable=False)
    checkpoint_interval: int = knob(50, "epochs between periodic checkpoints", "int", 1, 10**6, tunable=False)


class PolicyConfig(OpenSection):
    hidden_size: int = knob(64, "width of each hidden layer", "pow2", 8, 1024, tunable=False)
    num_layers: int = knob(2, "hidden layers", "int", 1, 8, tunable=False)


class AdvisorSettings(Section):
    """How the `llm`, `command` and `manual` advisors reach their source (`autopilot.advisor.*`).

    Never tunable and never settable by a proposal: they choose what program runs and which server is
    asked. The API key is read from $OPENAI_API_KEY only, so no secret lands in a run's config.json.
    """

    # `command` advisor: argv list (no shell); `{digest}` is replaced by a file holding the digest,
    # which is also written to the command's stdin.
    command: list[str] | None = None
    timeout_s: float = Field(120.0, gt=0)  # per request (llm) or per invocation (command)
    # `llm` advisor; None = $OPENAI_BASE_URL / $AUTOPILOT_LLM_MODEL.
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_max_retries: int = Field(2, ge=0, le=10)  # the client's retries, with exponential backoff
    llm_token_budget: int = Field(200_000, ge=0)  # prompt + completion tokens per session; 0 = none
    llm_response_format: Literal["json_schema", "json_object", "none"] = "json_object"
    # `manual` advisor: seconds to wait for a person; then the staged proposal runs as it is.
    approval_timeout_s: float = Field(900.0, gt=0)


class AutopilotConfig(Section):
    resume_mode: Literal["fresh", "continue"] = "fresh"
    resume_from: str = "latest"  # latest | best | a checkpoint path
    save_strategy: Literal["best", "latest", "all"] = "best"
    objective: str = "success_rate"
    max_run_seconds: float = knob(900.0, "wall budget of one run; the watchdog stops it past this", "linear", 1.0,
                                  7 * 24 * 3600.0, tunable=False)
    stall_seconds: float = knob(120.0, "no new metrics for this long: the run is stalled", "linear", 1.0,
                                24 * 3600.0, tunable=False)
    eval_episodes: int = knob(64, "deterministic evaluation episodes at the end of a run (0 = none)", "int", 0,
                              100_000, tunable=False)
    metrics_window: int = knob(10, "epochs in the tail window that summaries and best are judged on", "int", 1,
                               10_000, tunable=False)
    max_retries: int = knob(1, "a crashed trainer is retried this many times from its latest checkpoint", "int", 0,
                            10, tunable=False)
    # A user's own trainer: argv with {config}, {run_dir}, {resume} placeholders; None = the built-in one.
    trainer_command: list[str] | None = None
    advisor: AdvisorSettings = Field(default_factory=AdvisorSettings)
    # A user's own modules (not packaged) that register envs/advisors/backends: imported before the config
    # is validated, in the loop and in the trainer child alike. Packages use entry points instead.
    plugins: list[str] = Field(default_factory=list)


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


SECTIONS: dict[str, type[BaseModel]] = {"vec": VecConfig, "train": TrainConfig, "policy": PolicyConfig,
                                      "autopilot": AutopilotConfig}


def trainer_space() -> SearchSpace:
    """The ParamSpecs of every knob of the vec/train/policy/autopilot sections (env keys come from the env)."""
    space: SearchSpace = {}
    for prefix, model in SECTIONS.items():
        space.update(space_from_model(model, prefix))
    return space
