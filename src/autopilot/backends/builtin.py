"""`builtin`: autopilot's own PPO trainer (`python -m autopilot train`), on autopilot's registered envs.

Its config is strict: unknown keys are errors, `env.*` are the env's registered params, and the values
only PufferLib understands (`vec.num_workers = auto`, other vectorisations, the muon optimizer) are
rejected with the value to use instead. A config that sets `autopilot.trainer_command` (written before
the `command` backend existed) still launches that command.
"""

from __future__ import annotations

from autopilot.backends import Backend, register_backend
from autopilot.config.model import Config
from autopilot.errors import ConfigError


class BuiltinBackend(Backend):
    name = "builtin"
    description = "autopilot's own PPO trainer on a registered autopilot env"

    def validate(self, cfg: Config) -> None:
        super().validate(cfg)
        bad = []
        if cfg.vec.num_workers == "auto":
            bad.append("vec.num_workers='auto' is PufferLib's (rule: the builtin trainer needs a worker count); "
                       "use 1 (in-process) or a divisor of vec.num_envs")
        if cfg.vec.backend not in ("serial", "multiprocessing", "torch"):
            bad.append(f"vec.backend={cfg.vec.backend!r} is PufferLib's (rule: the builtin trainer vectorises "
                       f"serial, multiprocessing or torch); use serial, or backend pufferlib")
        if cfg.train.optimizer == "muon":
            bad.append("train.optimizer='muon' is PufferLib's (rule: the builtin trainer has adam and adamw); "
                       "use adam, or backend pufferlib")
        if bad:
            raise ConfigError(bad)

    def argv_template(self, cfg: Config) -> list[str]:
        from autopilot.loop.launch import builtin_trainer_argv

        return list(cfg.autopilot.trainer_command or builtin_trainer_argv())


BUILTIN = register_backend(BuiltinBackend())
