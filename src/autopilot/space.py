"""The search space: for every tunable key, its type, range and scale.

One `ParamSpec` per dotted key. Validation uses it for ranges, the guard for the whitelist and the
trust region, advisors for sampling (`to_unit` / `from_unit` map a value to [0, 1] on its scale).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

Scale = Literal["log", "linear", "int", "pow2", "choice", "bool"]


def fmt_num(value: Any) -> str:
    """Short human form: 0.0025, 1e-05, 28672."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.4g}"


class ParamSpec(BaseModel):
    """Type, range and scale of one config key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    scale: Scale
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    # Tunable keys form the whitelist advisors may move; the others are range-checked only.
    tunable: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.scale in ("choice",):
            if not self.choices:
                raise ValueError(f"{self.key}: a choice parameter needs choices")
        elif self.scale == "bool":
            pass
        else:
            if self.low is None or self.high is None or self.low > self.high:
                raise ValueError(f"{self.key}: needs low <= high, got [{self.low}, {self.high}]")
            if self.scale in ("log",) and self.low <= 0:
                raise ValueError(f"{self.key}: a log scale needs low > 0, got {self.low}")
            if self.scale == "pow2" and (self.low < 1 or not _is_pow2(self.low) or not _is_pow2(self.high)):
                raise ValueError(f"{self.key}: pow2 bounds must be powers of two")
        return self

    # -- membership ---------------------------------------------------------------------------
    def contains(self, value: Any) -> bool:
        if self.scale == "bool":
            return isinstance(value, bool)
        if self.scale == "choice":
            return value in self.choices  # type: ignore[operator]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.scale in ("int", "pow2") and not float(value).is_integer():
            return False
        if self.scale == "pow2" and not _is_pow2(int(value)):
            return False
        return self.low <= value <= self.high  # type: ignore[operator]

    def describe(self) -> str:
        if self.scale == "bool":
            return "true or false"
        if self.scale == "choice":
            return "one of " + ", ".join(str(c) for c in self.choices)  # type: ignore[union-attr]
        kind = {"log": "log scale", "linear": "linear", "int": "integer", "pow2": "power of two"}[self.scale]
        return f"[{fmt_num(self.low)}, {fmt_num(self.high)}] ({kind})"

    def clamp(self, value: Any) -> Any:
        """The nearest valid value: the 'valid alternative' an error suggests, the guard's repair."""
        if self.scale == "bool":
            return bool(value)
        if self.scale == "choice":
            return value if value in self.choices else self.choices[0]  # type: ignore[index]
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float(self.low)  # type: ignore[arg-type]
        if not math.isfinite(v):
            v = float(self.low)  # type: ignore[arg-type]
        v = min(max(v, self.low), self.high)  # type: ignore[type-var]
        if self.scale == "int":
            return int(round(v))
        if self.scale == "pow2":
            return int(2 ** round(math.log2(max(v, 1))))
        return v

    # -- the unit cube, for samplers and the trust region ------------------------------------
    def to_unit(self, value: Any) -> float:
        if self.scale == "bool":
            return 1.0 if value else 0.0
        if self.scale == "choice":
            n = len(self.choices)  # type: ignore[arg-type]
            return self.choices.index(value) / max(n - 1, 1)  # type: ignore[union-attr]
        lo, hi = float(self.low), float(self.high)  # type: ignore[arg-type]
        if hi == lo:
            return 0.0
        if self.scale in ("log", "pow2"):
            return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (float(value) - lo) / (hi - lo)

    def from_unit(self, u: float) -> Any:
        u = min(max(float(u), 0.0), 1.0)
        if self.scale == "bool":
            return u >= 0.5
        if self.scale == "choice":
            n = len(self.choices)  # type: ignore[arg-type]
            return self.choices[min(int(round(u * (n - 1))), n - 1)]  # type: ignore[index]
        lo, hi = float(self.low), float(self.high)  # type: ignore[arg-type]
        if self.scale in ("log", "pow2"):
            v = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        else:
            v = lo + u * (hi - lo)
        return self.clamp(v)

    @property
    def numeric(self) -> bool:
        return self.scale in ("log", "linear", "int", "pow2")


def _is_pow2(x: float) -> bool:
    xi = int(x)
    return xi == x and xi >= 1 and (xi & (xi - 1)) == 0


SearchSpace = dict[str, ParamSpec]


def spec(key: str, scale: Scale, low: float | None = None, high: float | None = None, *,
         choices: tuple[Any, ...] | None = None, tunable: bool = True) -> ParamSpec:
    return ParamSpec(key=key, scale=scale, low=low, high=high, choices=choices, tunable=tunable)


def trainer_space() -> SearchSpace:
    """Ranges for the vec/train/policy/autopilot keys (env keys come from the env's registration)."""
    specs = [
        spec("vec.num_envs", "int", 1, 4096, tunable=False),
        spec("vec.num_workers", "int", 1, 256, tunable=False),
        spec("train.seed", "int", 0, 2**31 - 1, tunable=False),
        spec("train.total_timesteps", "int", 1, 10**12, tunable=False),
        spec("train.learning_rate", "log", 1e-5, 1e-1),
        spec("train.gamma", "linear", 0.8, 0.9999),
        spec("train.gae_lambda", "linear", 0.5, 1.0),
        spec("train.update_epochs", "int", 1, 32),
        spec("train.clip_coef", "linear", 0.01, 1.0),
        spec("train.vf_coef", "linear", 0.0, 10.0),
        spec("train.vf_clip_coef", "linear", 0.01, 10.0),
        spec("train.ent_coef", "linear", 0.0, 0.5),
        spec("train.max_grad_norm", "linear", 0.05, 10.0),
        spec("train.bptt_horizon", "pow2", 1, 1024, tunable=False),
        spec("train.max_minibatch_size", "int", 1, 2**24, tunable=False),
        spec("train.checkpoint_interval", "int", 1, 10**6, tunable=False),
        spec("train.anneal_lr", "bool"),
        spec("train.optimizer", "choice", choices=("adam", "adamw")),
        spec("policy.hidden_size", "pow2", 8, 1024, tunable=False),
        spec("policy.num_layers", "int", 1, 8, tunable=False),
        spec("autopilot.max_run_seconds", "linear", 1.0, 7 * 24 * 3600.0, tunable=False),
        spec("autopilot.stall_seconds", "linear", 1.0, 24 * 3600.0, tunable=False),
        spec("autopilot.eval_episodes", "int", 0, 100_000, tunable=False),
        spec("autopilot.metrics_window", "int", 1, 10_000, tunable=False),
        spec("autopilot.max_retries", "int", 0, 10, tunable=False),
    ]
    return {s.key: s for s in specs}
