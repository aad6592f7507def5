"""`command`: a user's own trainer, launched as `autopilot.trainer_command` (argv with `{config}`,
`{run_dir}`, `{resume}` placeholders).

The trainer reads `config.json` and writes `metrics.jsonl`, `trainer_summary.json` (schema v1) and
`checkpoints/latest.pt` into the run folder. Its config is its own: unknown `vec`/`train`/`policy` keys
and any `extras.*` pass through, and `env_name` is checked against autopilot's env registry only when it
names a registered env. autopilot's batch rules apply only to registered envs (it cannot know how many
agents a foreign env has); the other rules apply to every config.
"""

from __future__ import annotations

from typing import Any

from autopilot.backends import Backend, register_backend
from autopilot.config.invariants import (
    BatchArithmetic,
    Check,
    builtin_checks,
    check_device,
    check_ranges,
    check_runtime,
)
from autopilot.config.model import Config
from autopilot.envs.registry import is_builtin_env
from autopilot.errors import ConfigError
from autopilot.space import SearchSpace


class CommandBackend(Backend):
    name = "command"
    description = "your own trainer: autopilot.trainer_command, speaking autopilot's run-folder files"
    passes_unknown_keys = True

    def env_in_registry(self, cfg: Config) -> bool:
        return is_builtin_env(cfg.env_name)

    def check_extra(self, key: str, value: Any) -> list[str]:
        return []  # the trainer's own settings

    def validate(self, cfg: Config) -> None:
        if not cfg.autopilot.trainer_command:
            raise ConfigError("autopilot.trainer_command is not set (rule: the command backend launches it); "
                              "e.g. [\"python\", \"my_trainer.py\", \"--config\", \"{config}\", \"--run-dir\", "
                              "\"{run_dir}\"]")
        super().validate(cfg)

    def checks(self, cfg: Config, space: SearchSpace, sps: float | None) -> list[Check]:
        if is_builtin_env(cfg.env_name):
            return builtin_checks(cfg, space, sps=sps)
        return [check_ranges(cfg, space),
                Check("segments", "skip", f"env {cfg.env_name!r} is the trainer's own: its batch rules are its own"),
                check_device(cfg), check_runtime(cfg, sps)]

    def resolve(self, cfg: Config) -> Config:
        return super().resolve(cfg) if is_builtin_env(cfg.env_name) else cfg.model_copy(deep=True)

    def derive_batch(self, cfg: Config) -> BatchArithmetic:
        if not is_builtin_env(cfg.env_name):
            raise ConfigError(f"the batch of {cfg.env_name!r} is decided by the trainer (rule: autopilot counts "
                              f"agents of registered envs only); set train.batch_size in its own terms")
        return super().derive_batch(cfg)

    def batch_line(self, cfg: Config) -> str:
        return super().batch_line(cfg) if is_builtin_env(cfg.env_name) else "decided by the trainer"

    def argv_template(self, cfg: Config) -> list[str]:
        return list(cfg.autopilot.trainer_command or [])


COMMAND = register_backend(CommandBackend())
