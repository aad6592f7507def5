"""The search space as Optuna sees it: one distribution per tunable key, on the key's own scale.

Real-valued knobs (log, log0 with its "off", log1m, linear) → FloatDistribution(0, 1) over the knob's own
scale coordinate (`ParamSpec.to_unit`: uniform there is uniform in log, or in log(1 - v)); int →
IntDistribution; intlog → IntDistribution(log=True); pow2 → an IntDistribution over the exponent (so 64
and 128 are neighbours, as they are for the knob); choice and bool → CategoricalDistribution. A ledger value outside its distribution is clamped into it (and said so);
a value the distribution cannot hold at all (a string for a number) leaves the key out of that trial.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from autopilot.config.model import Config
from autopilot.config.overrides import flatten
from autopilot.space import ParamSpec, SearchSpace, fmt_num
from autopilot.summary import is_finite_number


def distribution(spec: ParamSpec) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if spec.scale == "bool":
        return CategoricalDistribution((False, True))
    if spec.scale == "choice":
        return CategoricalDistribution(tuple(spec.choices or ()))
    lo, hi = float(spec.low), float(spec.high)  # type: ignore[arg-type]
    if spec.scale in UNIT_SCALES:
        return FloatDistribution(0.0, 1.0)
    if spec.scale in ("int", "intlog"):
        return IntDistribution(int(math.ceil(lo)), int(math.floor(hi)), log=spec.scale == "intlog")
    return IntDistribution(int(round(math.log2(lo))), int(round(math.log2(hi))))  # pow2: the exponent


UNIT_SCALES = ("log", "log0", "log1m", "linear")


@dataclass
class SearchMap:
    specs: dict[str, ParamSpec]
    dists: dict[str, Any] = field(default_factory=dict)

    def signature(self) -> str:
        """A short hash of the distributions: a study is only ever fed trials from one space."""
        text = repr(sorted((k, repr(d)) for k, d in self.dists.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def encode_value(self, key: str, value: Any) -> tuple[Any, str]:
        """(the distribution's value for `value`, a note if it had to be changed); (None, why) if it cannot."""
        spec, dist = self.specs[key], self.dists[key]
        if spec.scale in ("bool", "choice"):
            if value in dist.choices:
                return value, ""
            return None, f"{key}={value!r} is not one of {list(dist.choices)}: left out of the trial"
        if not is_finite_number(value):
            return None, f"{key}={value!r} is not a finite number: left out of the trial"
        v = float(value)
        if spec.scale in UNIT_SCALES:
            fixed = spec.clamp(v)
            note = "" if fixed == v else f"{key}={fmt_num(value)} is outside the space {spec.describe()}: told as {fmt_num(fixed)}"
            return spec.to_unit(fixed), note
        if spec.scale == "pow2":
            if v < 1:
                return None, f"{key}={fmt_num(value)} is not a power of two: left out of the trial"
            v = math.log2(v)
        lo, hi = dist.low, dist.high
        clamped = min(max(v, lo), hi)
        if spec.scale in ("int", "intlog", "pow2"):
            clamped = int(round(clamped))
        note = ""
        if clamped != v:
            shown = fmt_num(2 ** clamped) if spec.scale == "pow2" else fmt_num(clamped)
            note = f"{key}={fmt_num(value)} is outside the space {spec.describe()}: told as {shown}"
        return clamped, note

    def encode(self, cfg: Config) -> tuple[dict[str, Any], list[str]]:
        """The trial parameters of a run's config, and notes on every value that was clamped or left out."""
        flat = flatten(cfg.model_dump(exclude={"sweep"}))
        params, notes = {}, []
        for key in self.dists:
            if key not in flat:
                notes.append(f"{key} is not in the run's config: left out of the trial")
                continue
            value, note = self.encode_value(key, flat[key])
            if note:
                notes.append(note)
            if value is not None:
                params[key] = value
        return params, notes

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """Config values for trial parameters (pow2 exponents back to powers of two)."""
        out = {}
        for key, value in params.items():
            spec = self.specs[key]
            if spec.scale == "pow2":
                out[key] = int(2 ** int(value))
            elif spec.scale in ("int", "intlog"):
                out[key] = int(value)
            elif spec.scale in UNIT_SCALES:
                v = float(spec.from_unit(float(value)))
                short = float(f"{v:.4g}")
                out[key] = short if spec.contains(short) else v
            else:
                out[key] = value
        return out

    def same(self, a: dict[str, Any], b: dict[str, Any]) -> bool:
        """Equal parameter sets (floats compared to 1e-9 relative, as a JSON round trip may perturb them)."""
        if set(a) != set(b):
            return False
        for key in a:
            x, y = a[key], b[key]
            if isinstance(x, float) or isinstance(y, float):
                if not (is_finite_number(x) and is_finite_number(y) and math.isclose(x, y, rel_tol=1e-9,
                                                                                       abs_tol=1e-12)):
                    return False
            elif x != y:
                return False
        return True


def build_search_map(space: SearchSpace) -> SearchMap:
    """Every tunable key of `space` with its distribution (sorted, so the study's space is stable)."""
    specs = {k: s for k, s in sorted(space.items()) if s.tunable}
    return SearchMap(specs=specs, dists={k: distribution(s) for k, s in specs.items()})
