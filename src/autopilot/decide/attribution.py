"""What a run's change did, judged against the comparison the ledger actually supports.

Two runs are a controlled comparison only when they began from the same point (`trends.comparable`).
Along a warm-start chain each run continues the previous one, so "run 4 scored higher than run 3"
mixes the knob's effect with 4M more steps of training. Here a chained run is judged against what
*continuing* the previous run unchanged would have given: the previous run's final score plus its
own learning-curve slope carried over the new run's steps (the optimistic end) and the final score
itself (the pessimistic end, a curve that has flattened). A change helped when the run beat the
optimistic end by more than the noise band, hurt when it fell below the pessimistic end by more than
the band, and is inconclusive in between. Pure: reads records, does no I/O.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from autopilot.decide.records import ChangeEffect, RunRecord
from autopilot.decide.sanity import trusted_score
from autopilot.decide.trends import SEED_KEY, comparable, knobs_of, start_point
from autopilot.space import SearchSpace

RATES = ("_rate",)  # objectives ending so are bounded by 1: an extrapolation is capped there


@dataclass(frozen=True)
class Rise:
    """The objective along one run's curve: mean of the last quarter, of the quarter before, and the
    slope per agent-step between their midpoints."""

    last: float
    before: float
    slope_per_step: float | None
    points: int

    @property
    def gain(self) -> float:
        return self.last - self.before


def curve_values(rec: RunRecord, key: str) -> list[tuple[float | None, float]]:
    """(agent_steps or None, value) for every finite value of `key` in the run's metrics.jsonl rows."""
    out = []
    for row in rec.curve:
        v = row.get(key, (row.get("metrics") or {}).get(key))
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            steps = row.get("agent_steps")
            out.append((float(steps) if isinstance(steps, (int, float)) else None, float(v)))
    return out


def rise(rec: RunRecord, objective: str) -> Rise | None:
    """The run's own late trend for the objective, from ≥ 8 curve points; None with fewer."""
    pts = curve_values(rec, objective)
    q = len(pts) // 4
    if q < 2:
        return None
    last, before = pts[-q:], pts[-2 * q:-q]
    m_last, m_before = statistics.fmean(v for _, v in last), statistics.fmean(v for _, v in before)
    slope = None
    s_last = [s for s, _ in last if s is not None]
    s_before = [s for s, _ in before if s is not None]
    if len(s_last) == len(last) and len(s_before) == len(before):
        dx = statistics.fmean(s_last) - statistics.fmean(s_before)
        slope = (m_last - m_before) / dx if dx > 0 else None
    return Rise(last=m_last, before=m_before, slope_per_step=slope, points=len(pts))


def steps_of(rec: RunRecord) -> int | None:
    ts = rec.trainer_summary
    if ts is not None and ts.throughput.agent_steps:
        return int(ts.throughput.agent_steps)
    return rec.config.train.total_timesteps if rec.config is not None else None


def trained_steps(rec: RunRecord, prev: RunRecord) -> int | None:
    """The steps `rec` trained on top of `prev`'s checkpoint: a warm start keeps the step counter, so a
    summary's agent_steps is cumulative; the run's own total_timesteps when the difference is unknown."""
    now, before = steps_of(rec), steps_of(prev)
    if now is not None and before is not None and now > before:
        return now - before
    return rec.config.train.total_timesteps if rec.config is not None else None


def _cap(objective: str, value: float) -> float:
    return min(value, 1.0) if objective.endswith(RATES) else value


def _previous(history: list[RunRecord], rec: RunRecord) -> RunRecord | None:
    idx = next((i for i, r in enumerate(history) if r.run_id == rec.run_id), len(history))
    return next((r for r in reversed(history[:idx]) if r.config is not None), None)


def change_effect(history: list[RunRecord], objective: str, band: float, space: SearchSpace) -> ChangeEffect | None:
    """The effect of what changed between the latest run and the run before it."""
    if not history or history[-1].config is None:
        return None
    rec = history[-1]
    prev = _previous(history, rec)
    if prev is None:
        return None
    tunable = {k for k, s in space.items() if s.tunable}
    a, b = knobs_of(prev.config), knobs_of(rec.config)  # type: ignore[arg-type]
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and (k in tunable or k == SEED_KEY))
    score, prev_score = trusted_score(rec, objective), trusted_score(prev, objective)
    effect = ChangeEffect(run_id=rec.run_id, previous_run_id=prev.run_id, changed=changed, score=score)
    if score is None or prev_score is None:
        effect.detail = "no comparison: one of the two runs has no trusted score"
        return effect
    source = start_point(rec)
    if comparable(rec, prev):
        effect.comparison = "controlled"
        effect.expected_low = effect.expected_high = prev_score
        how = f"controlled: both began from {'scratch' if source[0] == 'fresh' else 'run ' + source[1]}"
    elif source == ("run", prev.run_id):
        r, steps = rise(prev, objective), trained_steps(rec, prev)
        gain = (r.slope_per_step * steps) if r is not None and r.slope_per_step is not None and steps else 0.0
        effect.comparison = "continuation"
        effect.expected_low = prev_score
        effect.expected_high = _cap(objective, prev_score + max(gain, 0.0))
        how = (f"vs continuing run {prev.run_id} unchanged: its final {prev_score:.4g}"
               + (f" + its late slope carried over {steps:,} steps = up to {effect.expected_high:.4g}" if gain > 0
                  else " (its curve had flattened)"))
    else:
        effect.detail = (f"no comparison: run {rec.run_id} did not start from scratch like {prev.run_id} nor from "
                         f"its checkpoint, so their scores also differ in training history")
        return effect
    lo, hi = effect.expected_low, effect.expected_high
    if score > hi + band:  # type: ignore[operator]
        effect.verdict = "helped"
    elif score < lo - band:  # type: ignore[operator]
        effect.verdict = "hurt"
    elif not [k for k in changed if k != SEED_KEY]:
        effect.verdict = "unchanged"
    else:
        effect.verdict = "inconclusive"
    what = ", ".join(changed) or "nothing"
    effect.detail = (f"{how}; expected [{lo:.4g}, {hi:.4g}], got {score:.4g}, band ±{band:.3g}: changed {what} "
                     f"→ {effect.verdict}")
    return effect
