"""Trainer backends: who trains a run, and what that means for its config.

A config names its backend (`"backend": "builtin" | "pufferlib" | "sb3" | "command"`, or any name a
plugin registers in the `autopilot.backends` entry-point group). A backend owns:

* its config: which extra keys the `vec`/`train`/`policy` sections and the free `extras` section may
  hold (passed through to the trainer, typed where the backend knows them), and whether `env_name`/`env`
  are autopilot's registered envs or the trainer's own;
* its invariants (`checks`), the values it derives (`resolve`) and its search space;
* how the child process is launched (`argv_template`), which in turn owns the trainer's files:
  `metrics.jsonl` every epoch, the schema-v1 `trainer_summary.json`, `checkpoints/latest.pt`.

A `.ini` file is PufferLib's format, so it selects the `pufferlib` backend unless it names another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autopilot.errors import ConfigError
from autopilot.plugins import Registry

if TYPE_CHECKING:
    from autopilot.config.invariants import BatchArithmetic, Check
    from autopilot.config.model import Config
    from autopilot.space import SearchSpace

DEFAULT_BACKEND = "builtin"
INI_BACKEND = "pufferlib"
SECTIONS_WITH_EXTRAS = ("vec", "train", "policy")


class Backend:
    """Base class; a backend overrides what differs from autopilot's own trainer."""

    name = ""
    description = ""
    uses_env_registry = True  # env_name must be a registered autopilot env, env.* its params
    passes_unknown_keys = False  # unknown vec/train/policy keys go through to the trainer
    extras_keys: dict[str, type | tuple[type, ...]] = {}  # allowed `extras.*` keys and their types
    sweeps_are_priors = False  # [sweep.*] blocks: True = the advisors' prior, False = validation limits

    # -- config ---------------------------------------------------------------------------------
    def prepare(self, data: dict[str, Any]) -> dict[str, Any]:
        """The raw config dict before validation (a backend may move or translate its keys)."""
        return data

    def validate(self, cfg: Config) -> None:
        """Raise ConfigError for keys this backend does not know or values of the wrong type."""
        bad: list[str] = []
        for section in SECTIONS_WITH_EXTRAS:
            model = getattr(cfg, section)
            for key, value in (model.model_extra or {}).items():
                bad += self.check_section_extra(section, key, value, sorted(type(model).model_fields))
        for key, value in cfg.extras.items():
            bad += self.check_extra(key, value)
        if bad:
            raise ConfigError(bad)
        self.validate_env(cfg)

    def check_section_extra(self, section: str, key: str, value: Any, known: list[str]) -> list[str]:
        if self.passes_unknown_keys:
            return []
        return [f"{section}.{key} is not a known key (rule: unknown keys are errors); known keys here: "
                f"{', '.join(known)}"]

    def check_extra(self, key: str, value: Any) -> list[str]:
        want = self.extras_keys.get(key)
        if want is None:
            known = ", ".join(sorted(self.extras_keys)) or "none"
            return [f"extras.{key} is not a key the {self.name} backend knows (rule: unknown keys are errors); "
                    f"known: {known}"]
        return type_violation(f"extras.{key}", value, want)

    def env_in_registry(self, cfg: Config) -> bool:
        """Is `env_name` one of autopilot's registered envs (its params, ranges and agent count known)?"""
        return self.uses_env_registry

    def validate_env(self, cfg: Config) -> None:
        from autopilot.envs.registry import validate_env_params

        if self.env_in_registry(cfg):
            cfg.env = validate_env_params(cfg.env_name, cfg.env).model_dump()

    # -- invariants, derived values, search space -------------------------------------------------
    def checks(self, cfg: Config, space: SearchSpace, sps: float | None) -> list[Check]:
        from autopilot.config.invariants import builtin_checks

        return builtin_checks(cfg, space, sps=sps)

    def resolve(self, cfg: Config) -> Config:
        from autopilot.config.invariants import resolve_builtin

        return resolve_builtin(cfg)

    def search_space(self, cfg: Config) -> SearchSpace:
        from autopilot.config.model import trainer_space
        from autopilot.envs.registry import get_env_spec

        space: SearchSpace = dict(trainer_space())
        if self.env_in_registry(cfg):
            space.update(get_env_spec(cfg.env_name).space)
        return space

    def derive_batch(self, cfg: Config) -> BatchArithmetic:
        """Factors [agents per env object, env objects, bptt] and their product; ConfigError when unknown."""
        from autopilot.config.invariants import derive_builtin_batch

        return derive_builtin_batch(cfg)

    def batch_line(self, cfg: Config) -> str:
        return str(self.derive_batch(cfg))

    # -- launch ---------------------------------------------------------------------------------
    def argv_template(self, cfg: Config) -> list[str]:
        """The child's argv with `{config}`, `{run_dir}`, `{resume}` placeholders."""
        raise NotImplementedError


def resume_kind(ckpt: dict[str, Any], cfg: Config) -> str:
    """autopilot's resume rule (see `autopilot.trainer.checkpoint`), with a backend's `extras` (network
    kwargs, trainer arguments) among the settings that must match for a true resume."""
    from autopilot.trainer.checkpoint import resume_kind as builtin_rule

    same_extras = (ckpt.get("config") or {}).get("extras", {}) == cfg.extras
    return "continue" if builtin_rule(ckpt, cfg) == "continue" and same_extras else "warm"


def type_violation(key: str, value: Any, want: type | tuple[type, ...]) -> list[str]:
    kinds = want if isinstance(want, tuple) else (want,)
    ok = any(isinstance(value, k) and not (isinstance(value, bool) and k in (int, float)) for k in kinds)
    if ok or (float in kinds and isinstance(value, int) and not isinstance(value, bool)):
        return []
    names = " or ".join(k.__name__ for k in kinds)
    return [f"{key}={value!r} must be {names} (rule: a backend's typed keys keep their type); "
            f"e.g. {_example(kinds[0])}"]


def _example(kind: type) -> str:
    return {bool: "True", int: "1", float: "0.5", str: "'name'", dict: "{}", list: "[]"}.get(kind, kind.__name__)


BACKENDS: Registry[Backend] = Registry(
    "trainer backend", "autopilot.backends",
    builtins={"builtin": "autopilot.backends.builtin", "command": "autopilot.backends.command",
              "sb3": "autopilot.backends.sb3", "pufferlib": "autopilot.backends.pufferlib"},
)


def register_backend(backend: Backend) -> Backend:
    if not backend.name:
        raise ValueError("a backend needs a name")
    return BACKENDS.register(backend.name, backend)


def get_backend(name: str) -> Backend:
    return BACKENDS.get(name, hint="backend")


def available_backends() -> list[str]:
    return BACKENDS.names()


def backend_of(data: dict[str, Any]) -> Backend:
    """The backend a raw config dict names (the default when it names none)."""
    name = data.get("backend", DEFAULT_BACKEND)
    if not isinstance(name, str):
        raise ConfigError(f"backend={name!r} must be a name; use one of {', '.join(available_backends())}")
    return get_backend(name)


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "INI_BACKEND", "Backend", "available_backends", "backend_of",
           "get_backend", "register_backend", "resume_kind", "type_violation"]
