"""What the whole ledger says: the noise band from seed repeats, and a trend per knob that varied.

Only trusted runs count (a finite score, not suspect). Two configs are compared on their *material*
keys: everything that changes what is learned; bookkeeping (save strategy, budgets, checkpoint
interval, device) is left out, and `resume_from` only matters when the run continued.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from autopilot.config.model import AdvisorSettings, Config
from autopilot.config.overrides import flatten
from autopilot.decide.records import KnobTrend, NoiseBand, RunRecord
from autopilot.decide.sanity import trusted_score
from autopilot.space import SearchSpace, fmt_num

# Keys that do not change what a run learns.
BOOKKEEPING = frozenset({
    "train.device", "train.checkpoint_interval", "autopilot.save_strategy", "autopilot.max_run_seconds",
    "autopilot.stall_seconds", "autopilot.max_retries", "autopilot.trainer_command",
    "autopilot.eval_episodes", "autopilot.metrics_window", "autopilot.objective",
}) | frozenset(f"autopilot.advisor.{k}" for k in AdvisorSettings.model_fields)  # who advises, not what trains
SEED_KEY = "train.seed"


@dataclass(frozen=True)
class BandPolicy:
    """How the noise band is estimated, and what is assumed before it can be."""

    k_sigma: float = 2.0  # band = max(k × pooled within-group standard deviation of seed repeats, floor)
    floor: float = 0.01  # a measured σ of 0 (e.g. every repeat scored 0) does not make every difference count
    default_abs: float = 0.02  # unmeasured: max(default_abs, default_rel × |reference score|)
    default_rel: float = 0.10
    max_confounders: int = 1  # a trend point may differ from the anchor in ≤ this many other tunable knobs


BAND = BandPolicy()


def material_config(cfg: Config) -> dict[str, Any]:
    flat = flatten(cfg.model_dump(exclude={"sweep"}))
    out = {k: v for k, v in flat.items() if k not in BOOKKEEPING}
    if out.get("autopilot.resume_mode") == "fresh":
        out.pop("autopilot.resume_from", None)
    return out


def material_diff(a: Config, b: Config, *, ignore: frozenset[str] = frozenset()) -> dict[str, tuple[Any, Any]]:
    """{key: (a's value, b's value)} for every material key that differs."""
    ma, mb = material_config(a), material_config(b)
    missing = object()
    return {k: (ma.get(k), mb.get(k)) for k in sorted(set(ma) | set(mb))
            if k not in ignore and ma.get(k, missing) != mb.get(k, missing)}


RESUME_KEYS = ("autopilot.resume_mode", "autopilot.resume_from")
Start = tuple  # ("fresh",) | ("run", run_id) | ("path", path) | ("unknown", run_id): where a run's weights began


def knobs_of(cfg: Config) -> dict[str, Any]:
    """The material keys without the resume policy: what the run trains with, not where it starts."""
    return {k: v for k, v in material_config(cfg).items() if k not in RESUME_KEYS}


def start_point(rec: RunRecord) -> Start:
    """Where `rec`'s weights began, as the ledger records it. A warm start whose source run the ledger
    does not name is unique: it is never claimed to equal another run's start."""
    resume = rec.loop_summary.resume if rec.loop_summary is not None else {}
    if rec.config is not None and rec.config.autopilot.resume_mode == "fresh" or resume.get("mode") == "fresh":
        return ("fresh",)
    source = resume.get("source_run")
    return ("run", source) if isinstance(source, str) and source else ("unknown", rec.run_id)


def comparable(a: RunRecord, b: RunRecord) -> bool:
    """Two runs are a controlled comparison only when they began from the same point: both fresh, or
    both warm-started from the same run's checkpoint. Along a warm-start chain each run starts where
    the previous one ended, so a score difference mixes the knob's effect with more training."""
    sa, sb = start_point(a), start_point(b)
    return sa == sb and sa[0] in ("fresh", "run")


# -- the noise band -------------------------------------------------------------------------------
def _key(rec: RunRecord) -> str:
    mat = knobs_of(rec.config)  # type: ignore[arg-type]
    mat.pop(SEED_KEY, None)
    return repr((start_point(rec), sorted(mat.items(), key=lambda kv: kv[0])))


def seed_groups(history: list[RunRecord], objective: str) -> list[list[tuple[RunRecord, float]]]:
    """Groups of ≥2 trusted runs whose configs differ only in train.seed (and bookkeeping) and that
    began from the same point (both fresh, or warm-started from the same run)."""
    groups: dict[str, list[tuple[RunRecord, float]]] = {}
    for rec in history:
        score = trusted_score(rec, objective)
        if rec.config is None or score is None:
            continue
        if start_point(rec)[0] == "unknown":
            continue  # an unnamed warm start cannot be paired with anything
        groups.setdefault(_key(rec), []).append((rec, score))
    return [g for g in groups.values() if len(g) >= 2]


def noise_band(history: list[RunRecord], objective: str, *, reference: float | None = None,
               policy: BandPolicy = BAND) -> NoiseBand:
    """Measured from seed repeats when the ledger has them; else the stated default."""
    groups = seed_groups(history, objective)
    if groups:
        # Pooled within-group variance: Σ (n_i - 1) s_i² / Σ (n_i - 1).
        dof = sum(len(g) - 1 for g in groups)
        ss = sum(statistics.variance([s for _, s in g]) * (len(g) - 1) for g in groups)
        sigma = math.sqrt(ss / dof)
        runs = sum(len(g) for g in groups)
        detail = (f"measured: max({policy.k_sigma:g} × pooled σ {sigma:.4g}, floor {policy.floor:g}) over "
                  f"{len(groups)} seed-repeat group(s), {runs} runs")
        return NoiseBand(value=max(policy.k_sigma * sigma, policy.floor), measured=True, groups=len(groups), runs=runs,
                         detail=detail)
    known = reference is not None and math.isfinite(reference)
    ref = abs(reference) if known else 0.0  # type: ignore[arg-type]
    value = max(policy.default_abs, policy.default_rel * ref)
    how = (f"max({policy.default_abs:g}, {policy.default_rel:.0%} of |best {fmt_num(round(ref, 4))}|)" if known
           else f"{policy.default_abs:g}, no trusted best yet")
    detail = f"assumed: {how}; not yet measured: no seed repeats (runs differing only in train.seed)"
    return NoiseBand(value=value, measured=False, detail=detail)


# -- trends ----------------------------------------------------------------------------------------
def _order(value: Any) -> Any:
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))


def _direction(means: dict[Any, float], best_value: Any, band: float) -> str:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in means)
    spread = max(means.values()) - min(means.values())
    if spread <= band:
        return "flat"
    if not numeric:
        return "mixed"
    values = sorted(means)
    scores = [means[v] for v in values]
    rising = all(b >= a - band for a, b in zip(scores, scores[1:], strict=False))
    falling = all(b <= a + band for a, b in zip(scores, scores[1:], strict=False))
    if best_value == values[-1] and rising:
        return "higher is better"
    if best_value == values[0] and falling:
        return "lower is better"
    return "mixed"


def _means(points: list[dict[str, Any]]) -> dict[Any, float]:
    by_value: dict[Any, list[float]] = {}
    for p in points:
        by_value.setdefault(p["value"], []).append(p["score"])
    return {v: statistics.fmean(s) for v, s in by_value.items()}


def knob_trends(history: list[RunRecord], space: SearchSpace, objective: str, *, anchor: RunRecord | None,
                band: float, policy: BandPolicy = BAND) -> list[KnobTrend]:
    """For each tunable knob that varied: the runs that differ from the anchor (the best run) mainly in
    it (≤ `max_confounders` other tunable knobs), the mean score per value, and the best-known value."""
    scored = [(r, s) for r in history if r.config is not None
              and (s := trusted_score(r, objective)) is not None]
    if anchor is None or anchor.config is None:
        anchor = scored[-1][0] if scored else None
    if anchor is None or len(scored) < 2:
        return []
    tunable = {k for k, s in space.items() if s.tunable}
    diffs = {r.run_id: material_diff(anchor.config, r.config) for r, _ in scored}  # type: ignore[arg-type]
    varied = sorted({k for d in diffs.values() for k in d if k in tunable})
    trends = []
    for key in varied:
        points = []
        for rec, score in scored:
            d = diffs[rec.run_id]
            confounders = [k for k in d if k in tunable and k != key]
            if len(confounders) > policy.max_confounders:
                continue
            value = flatten(rec.config.model_dump()).get(key)  # type: ignore[union-attr]
            also = {k: d[k][1] for k in d if k != key and k != SEED_KEY}
            points.append({"run_id": rec.run_id, "value": value, "score": score, "also": also})
        means = _means(points)
        if len(means) < 2:
            continue
        best_value = max(sorted(means, key=_order), key=lambda v: means[v])
        points.sort(key=lambda p: _order(p["value"]))
        records = {r.run_id: r for r, _ in scored}
        direction = (_direction(means, best_value, band) if _clean_pair(points, records, key, tunable)
                     else CONFOUNDED)
        trends.append(KnobTrend(key=key, points=points, best_value=best_value, best_score=means[best_value],
                                direction=direction))
    return trends


CONFOUNDED = "confounded"  # no two of its runs differ in this knob alone from one start: no direction claimed


def _clean_pair(points: list[dict[str, Any]], records: dict[str, RunRecord], key: str, tunable: set[str]) -> bool:
    """Whether two points with different values differ in no other tunable knob and began from the
    same point (see `comparable`): only such a pair is evidence about the knob."""
    for i, p in enumerate(points):
        for q in points[i + 1:]:
            a, b = records[p["run_id"]], records[q["run_id"]]
            if p["value"] != q["value"] and comparable(a, b):
                others = set(material_diff(a.config, b.config)) & tunable  # type: ignore[arg-type]
                if others == {key}:
                    return True
    return False


def _num(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10_000 else fmt_num(v)


def trend_line(trend: KnobTrend, band: float) -> str:
    """`train.ent_coef: 0.01 → 0.31 (run A), 0.12 → 0.12 (run B); best 0.01; lower is better (...)`."""
    pts = ", ".join(
        f"{fmt_num(p['value'])} → {fmt_num(round(p['score'], 4))} ({p['run_id']}"
        + ("; also " + ", ".join(f"{k.split('.')[-1]}={_num(v)}" for k, v in p["also"].items())
           if p["also"] else "") + ")"
        for p in trend.points)
    means = _means(trend.points)
    spread = max(means.values()) - min(means.values())
    if trend.direction == CONFOUNDED:
        why = ("no two of these runs differ in this knob alone from the same start point (fresh, or the same "
               "checkpoint), so no direction is claimed: along a warm-start chain later runs also trained longer")
    else:
        why = f"spread {spread:.3g} {'>' if spread > band else '≤'} band {band:.3g}"
    return (f"{trend.key}: {pts}; best {fmt_num(trend.best_value)} (mean {fmt_num(round(trend.best_score or 0, 4))}); "
            f"{trend.direction} ({why})")
