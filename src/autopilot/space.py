"""The search space: for every tunable key, its type, range and scale.

One `ParamSpec` per dotted key. Validation uses it for ranges, the guard for the whitelist and the
trust region, advisors for sampling (`to_unit` / `from_unit` map a value to [0, 1] on its scale).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

Scale = Literal["log", "log0", "log1m", "linear", "int", "intlog", "pow2", "choice", "bool"]
# How each numeric scale measures distance. A knob acts multiplicatively on a log scale (learning rate,
# coefficients); `log0` is a log scale whose 0 is an explicit "off" value (ent_coef); `log1m` measures
# 1 - v on a log scale (gamma, gae_lambda: 0.99 -> 0.995 halves the horizon's complement); `intlog` is an
# integer that acts multiplicatively (update_epochs).
LOG_SCALES = ("log", "log0", "log1m", "intlog", "pow2")
INT_SCALES = ("int", "intlog", "pow2")
OFF_SHARE = 0.05  # of the unit interval that `log0` gives to its "off" value when sampling


def fmt_num(value: Any) -> str:
    """Short human form: 0.0025, 1e-05, 28672."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.4g}"


class Prior(BaseModel):
    """Where good values usually lie (CleanRL / SB3-zoo / PufferLib defaults): `center` is the standard
    value, [`low`, `high`] the range most tuned configs fall in. Advisors answer a finding on the knob
    farthest outside its typical range first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    center: float
    low: float
    high: float
    source: str = ""


class ParamSpec(BaseModel):
    """Type, range, scale, prior and doc of one config key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    scale: Scale
    low: float | None = None  # for log0: the smallest value above "off" (0)
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    # Tunable keys form the whitelist advisors may move; the others are range-checked only.
    tunable: bool = True
    prior: Prior | None = None
    doc: str = ""

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
            if self.scale in ("log", "log0", "intlog") and self.low <= 0:
                raise ValueError(f"{self.key}: a log scale needs low > 0, got {self.low}")
            if self.scale == "log1m" and not (self.high < 1):
                raise ValueError(f"{self.key}: a log(1 - v) scale needs high < 1, got {self.high}")
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
        if self.scale in INT_SCALES and not float(value).is_integer():
            return False
        if self.scale == "pow2" and not _is_pow2(int(value)):
            return False
        if self.scale == "log0" and value == 0:
            return True
        return self.low <= value <= self.high  # type: ignore[operator]

    def describe(self) -> str:
        if self.scale == "bool":
            return "true or false"
        if self.scale == "choice":
            return "one of " + ", ".join(str(c) for c in self.choices)  # type: ignore[union-attr]
        kind = {"log": "log scale", "log0": "log scale, 0 = off", "log1m": "log scale of 1 - value",
                "linear": "linear", "int": "integer", "intlog": "integer, log scale",
                "pow2": "power of two"}[self.scale]
        zero = "0 or " if self.scale == "log0" else ""
        return f"{zero}[{fmt_num(self.low)}, {fmt_num(self.high)}] ({kind})"

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
        if self.scale == "log0" and v <= 0:
            return 0.0
        if self.scale == "log0" and v < self.low:  # nearer to off or to the smallest "on" value
            return 0.0 if v < self.low / 2 else float(self.low)  # type: ignore[arg-type]
        v = min(max(v, self.low), self.high)  # type: ignore[type-var]
        if self.scale in ("int", "intlog"):
            return int(round(v))
        if self.scale == "pow2":
            return int(2 ** round(math.log2(max(v, 1))))
        return v

    # -- the scale's own coordinate: distances, trust regions, sampling ----------------------------
    @property
    def numeric(self) -> bool:
        return self.scale not in ("choice", "bool")

    @property
    def multiplicative(self) -> bool:
        return self.scale in LOG_SCALES

    def is_off(self, value: Any) -> bool:
        return self.scale == "log0" and value == 0

    def coord(self, value: float) -> float:
        """The value in the scale's own coordinate (log for log scales; -log(1-v) for log1m). `off`
        (0 on log0) sits one factor of 10 below the smallest "on" value."""
        v = float(value)
        if self.scale == "log1m":
            return -math.log(max(1.0 - v, 1e-12))
        if self.scale == "log0" and v <= 0:
            return math.log(float(self.low)) - math.log(10.0)  # type: ignore[arg-type]
        if self.multiplicative:
            return math.log(max(v, 1e-300))
        return v

    def from_coord(self, c: float) -> float:
        if self.scale == "log1m":
            return 1.0 - math.exp(-c)
        if self.multiplicative:
            return math.exp(c)
        return c

    def to_unit(self, value: Any) -> float:
        if self.scale == "bool":
            return 1.0 if value else 0.0
        if self.scale == "choice":
            n = len(self.choices)  # type: ignore[arg-type]
            return self.choices.index(value) / max(n - 1, 1)  # type: ignore[union-attr]
        lo, hi = self.coord(self.low), self.coord(self.high)  # type: ignore[arg-type]
        if hi == lo:
            return 0.0
        if self.scale == "log0":
            if value <= 0:
                return 0.0
            return OFF_SHARE + (1 - OFF_SHARE) * (self.coord(value) - lo) / (hi - lo)
        return (self.coord(value) - lo) / (hi - lo)

    def from_unit(self, u: float) -> Any:
        u = min(max(float(u), 0.0), 1.0)
        if self.scale == "bool":
            return u >= 0.5
        if self.scale == "choice":
            n = len(self.choices)  # type: ignore[arg-type]
            return self.choices[min(int(round(u * (n - 1))), n - 1)]  # type: ignore[index]
        if self.scale == "log0":
            if u < OFF_SHARE:
                return 0.0
            u = (u - OFF_SHARE) / (1 - OFF_SHARE)
        lo, hi = self.coord(self.low), self.coord(self.high)  # type: ignore[arg-type]
        return self.clamp(self.from_coord(lo + u * (hi - lo)))

    def prior_distance(self, value: Any) -> float:
        """How far `value` lies outside the prior's typical range, signed (negative: below), in
        doublings on multiplicative scales (of 1 - v for log1m) and in typical-range widths on linear
        ones; 0 inside the range or without a prior."""
        if self.prior is None or not self.numeric or not isinstance(value, (int, float)) or isinstance(value, bool):
            return 0.0
        lo, hi = self.prior.low, self.prior.high
        if lo <= value <= hi:
            return 0.0
        edge = lo if value < lo else hi
        if self.scale == "log0" and (value == 0 or edge == 0):
            # off versus a typical range that excludes off: as far as one factor of 10 below its low end
            return -math.log2(10.0) if value == 0 else math.log2(max(value, 1e-12) / max(hi, 1e-12))
        if self.multiplicative:
            d = (self.coord(value) - self.coord(edge)) / math.log(2.0)
        else:
            d = (float(value) - edge) / max(hi - lo, 1e-12)
        return d


def _is_pow2(x: float) -> bool:
    xi = int(x)
    return xi == x and xi >= 1 and (xi & (xi - 1)) == 0


SearchSpace = dict[str, ParamSpec]


def spec(key: str, scale: Scale, low: float | None = None, high: float | None = None, *,
         choices: tuple[Any, ...] | None = None, tunable: bool = True) -> ParamSpec:
    return ParamSpec(key=key, scale=scale, low=low, high=high, choices=choices, tunable=tunable)


def knob(default: Any, doc: str, scale: Scale | None = None, low: float | None = None, high: float | None = None,
         *, tunable: bool = True, choices: tuple[Any, ...] | None = None,
         prior: tuple[float, float, float] | None = None, source: str = "") -> Any:
    """Declare a config key once: the pydantic field (default, doc) with its search-space entry (scale,
    range, tunable, prior) attached. `space_from_model` turns a model's knobs into ParamSpecs; the
    config's validation, the guard's whitelist, advisors, notes and `autopilot keys` all read those."""
    from pydantic import Field

    extra: dict[str, Any] = {"knob": {"scale": scale, "low": low, "high": high, "tunable": tunable,
                                      "choices": list(choices) if choices else None,
                                      "prior": list(prior) if prior else None, "source": source}}
    return Field(default, description=doc, json_schema_extra=extra)


def space_from_model(model: type[BaseModel], prefix: str) -> SearchSpace:
    """The ParamSpecs of every knob declared in `model` (fields made with `knob(...)`), keyed `prefix.name`."""
    out: SearchSpace = {}
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else None
        meta = extra.get("knob") if extra else None
        if not isinstance(meta, dict) or meta.get("scale") is None:
            continue
        prior = meta.get("prior")
        key = f"{prefix}.{name}" if prefix else name
        out[key] = ParamSpec(key=key, scale=meta["scale"], low=meta.get("low"), high=meta.get("high"),
                             choices=tuple(meta["choices"]) if meta.get("choices") else None,
                             tunable=bool(meta.get("tunable", True)), doc=field.description or "",
                             prior=Prior(center=prior[0], low=prior[1], high=prior[2], source=meta.get("source", ""))
                             if prior else None)
    return out
