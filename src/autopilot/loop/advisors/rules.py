"""The `rules` advisor: findings → moves, sized by the trend evidence.

Order of business:
1. After a regression beyond the noise band (or a broken run) with a trusted best: revert the knobs
   that differ from the best run to its values and warm-start from its checkpoint.
2. A crash or stall with nothing to go back to: retry the same config with another seed, fresh.
3. Otherwise follow the findings' moves, primary move of each finding first, at most `max_knobs`
   knobs. Each move is sized by the knob's trend: toward the best-known value when it lies in the
   move's direction, one step (the move's factor) beyond it when the best is the current value at the
   edge of what was tried, skipped when the trend contradicts it; one step when there is no evidence.
4. Nothing to fix: on a plateau with no measured noise band, spend a run on a seed repeat; else
   extrapolate a trend whose best is the current edge; else step the least-explored knob by half a
   trust region (direction from the seeded RNG).
Then total_timesteps: doubled when the learning curve was still rising beyond the band and it fits
the runtime budget; shrunk when it does not fit. Resume: best after a revert, latest when it is
trustworthy, never a suspect or broken run.
"""

from __future__ import annotations

import random
import statistics
from typing import Any

from autopilot.config.overrides import flatten
from autopilot.loop.advisors import register_advisor
from autopilot.loop.advisors.base import (
    Advisor,
    budget_steps,
    choose_resume,
    current,
    save_strategy,
    seed_repeat,
    step,
    toward,
    trusted_best,
    tunable,
)
from autopilot.loop.diagnose import THRESHOLDS, policy_std
from autopilot.loop.records import AdvisorContext, Finding, KnobTrend, Move, Proposal, RunRecord
from autopilot.loop.sanity import trusted_score
from autopilot.loop.trends import material_diff
from autopilot.space import fmt_num

BUDGET_KEY = "train.total_timesteps"
EXPLORE_ORDER = ("train.learning_rate", "train.ent_coef", "train.update_epochs", "train.gamma",
                 "train.gae_lambda", "train.clip_coef", "train.vf_coef", "train.max_grad_norm")

EXPECT = {
    "updates_too_small": "approx_kl up toward 0.005-0.02 and clipfrac above 0.01",
    "updates_too_large": "approx_kl below 0.05 and clipfrac below 0.3",
    "entropy_too_high": "entropy per action dim down toward a unit Gaussian's 1.42 nats",
    "entropy_collapsed": "entropy per action dim back above the collapse line",
    "value_fit_poor": "explained_var above 0.2",
    "regression_vs_best": "{objective} back within the noise band of the best run",
    "high_oob": "oob_rate down",
    "high_collisions": "collision_rate down",
    "diverged": "a finite loss to the end of the run",
}
NEXT = {
    "updates_too_small": "if clipfrac stays < 0.01: raise train.clip_coef by 0.05 or train.learning_rate ×2",
    "updates_too_large": "if approx_kl stays > 0.05: lower train.clip_coef by 0.05 or halve train.update_epochs",
    "entropy_too_high": "if entropy per dim stays above 1.42 nats with ent_coef near 0: the policy's log-std "
                        "init or action scaling is the cause, not the bonus",
    "entropy_collapsed": "if it collapses again: raise train.ent_coef ×2 once more or anneal the learning rate",
    "value_fit_poor": "if explained_var stays < 0.2: raise train.gae_lambda toward 0.98 or train.gamma",
    "regression_vs_best": "if the best's config does not reproduce its score: spend a run on a seed repeat to "
                          "measure the noise band",
    "plateau": "if the next 2 runs stay inside the band: take a full trust-region step on the least-explored "
               "knob, or stop (plateau)",
    "high_oob": "if oob_rate stays high: raise train.gamma toward 0.997, or lower train.vf_coef",
    "crashed": "if it crashes again with another seed: read train.log; the config or the env is at fault",
    "stalled": "if it stalls again: lower vec.num_workers or raise autopilot.stall_seconds",
    "throughput_drop": "if SPS stays low: run `autopilot probe` to re-measure the topology",
    "metric_glitch": "fix the metric's aggregation (a rate must be a per-episode mean); until then the run "
                     "is excluded from best and trends",
}


def _trend_text(t: KnobTrend) -> str:
    pts = ", ".join(f"{fmt_num(p['value'])} → {fmt_num(round(p['score'], 4))}" for p in t.points)
    return f"{t.direction} ({pts}; best {fmt_num(t.best_value)})"


class _Plan:
    def __init__(self, ctx: AdvisorContext):
        self.ctx = ctx
        self.changes: dict[str, Any] = {}
        self.rationale: list[str] = []
        self.skipped: dict[str, str] = {}
        self.seed_repeat = False
        self.revert_to: RunRecord | None = None
        self.reverted = False  # some knob went back to the best run's value
        self.causes: list[str] = []  # finding codes the changes answer (for the expected effect)
        self.override = ""

    def set(self, key: str, new: Any, why: str) -> None:
        old = current(self.ctx, key)
        self.changes[key] = new
        self.rationale.append(f"{key}: {fmt_num(old)} -> {fmt_num(new)} — {why}")

    def skip(self, key: str, why: str) -> None:
        self.skipped[key] = why
        self.rationale.append(f"{key}: unchanged — {why}")


@register_advisor("rules")
class RulesAdvisor(Advisor):
    max_knobs = 2  # tunable knobs changed per step, so each run's effect stays attributable
    explore_fraction = 0.5  # of a trust-region step, when exploring without evidence

    def propose(self, ctx: AdvisorContext) -> Proposal:
        plan = _Plan(ctx)
        codes = {f.code: f for f in ctx.findings}
        best, latest = trusted_best(ctx), ctx.history[-1]
        broken = next((codes[c] for c in ("diverged", "crashed", "stalled") if c in codes), None)
        if best is not None and best.run_id != latest.run_id and ("regression_vs_best" in codes or broken):
            self._revert(plan, best)
            if not plan.reverted and broken is None:
                # Every differing knob is still asked for by a firing finding: the findings decide.
                kept = "; ".join(f"{key} {why}" for key, why in plan.skipped.items())
                plan = _Plan(ctx)
                plan.rationale.append(f"regression_vs_best: no revert — {kept}")
                self._follow(plan)
        elif broken is not None and broken.code != "diverged" and latest.config is not None:
            changes, _ = seed_repeat(ctx, latest)
            plan.seed_repeat = True
            plan.set("train.seed", changes["train.seed"], f"{broken.code} with no trusted best to go back to: "
                     "retry the same config with another seed, fresh")
        else:
            self._follow(plan)
        if not plan.changes:
            self._explore(plan, codes)
        self._timesteps(plan)
        return self._proposal(plan)

    # -- 1. revert ---------------------------------------------------------------------------------
    def _revert(self, plan: _Plan, best: RunRecord) -> None:
        ctx, specs = plan.ctx, tunable(plan.ctx)
        trends = {t.key: t for t in ctx.trends}
        plan.revert_to = best
        score = fmt_num(round(trusted_score(best, ctx.objective) or 0.0, 4))
        asked = {(m.key, m.direction): f for f in ctx.findings for m in f.moves if f.code != "regression_vs_best"}
        for key, (old, value) in material_diff(ctx.base_config, best.config).items():  # type: ignore[arg-type]
            if key not in specs:
                continue
            against = asked.get((key, "down" if value > old else "up")) if specs[key].numeric else None
            if against is not None:
                # The latest run's own diagnosis outranks a score comparison: undoing a move that a
                # still-firing finding asks for repeats the mistake the finding is about.
                plan.skip(key, f"not reverted to best's {fmt_num(value)}: {against.code} still fires "
                               f"({against.evidence.get('rule') or against.evidence_text()})")
                continue
            new, reached = toward(specs[key], old, value)
            if not reached:  # a known-good point is a reason to leave the trust region
                new = value
                plan.override = f"revert to the best-known config of run {best.run_id} ({ctx.objective} {score})"
            ev = f"; trend {_trend_text(trends[key])}" if key in trends else ""
            plan.set(key, new, f"back to best run {best.run_id}'s value ({ctx.objective} {score}){ev}")
            plan.reverted = True
        plan.causes += [f.code for f in ctx.findings if f.code in ("regression_vs_best", "diverged")]

    # -- 3. findings -------------------------------------------------------------------------------
    def _follow(self, plan: _Plan) -> None:
        findings = [f for f in plan.ctx.findings if f.moves and f.code != "regression_vs_best"]
        ordered = [(f, f.moves[0]) for f in findings] + [(f, m) for f in findings for m in f.moves[1:]]
        specs = tunable(plan.ctx)
        for finding, move in ordered:
            if len(plan.changes) >= self.max_knobs:
                break
            if move.key in plan.changes or move.key in plan.skipped:
                continue
            if move.key not in specs:
                plan.skip(move.key, f"{finding.code} suggests {move.direction} but the key is not tunable here")
                continue
            self._apply(plan, finding, move)

    def _apply(self, plan: _Plan, f: Finding, m: Move) -> None:
        ctx = plan.ctx
        spec, old = ctx.space[m.key], current(ctx, m.key)
        trend = next((t for t in ctx.trends if t.key == m.key), None)
        cause = f"{f.code} ({f.evidence.get('rule') or f.evidence_text()})"
        factor = f"×{m.factor:g}" if m.factor else "one trust-region step"
        if m.direction in ("set", "revert"):
            new, reached = toward(spec, old, m.value)
            sizing = f"set to {fmt_num(m.value)}" if reached else f"toward {fmt_num(m.value)}, capped by the trust region"
        elif trend is not None and trend.direction in ("lower is better", "higher is better", "mixed"):
            better = {"lower is better": "down", "higher is better": "up"}.get(trend.direction)
            bv = trend.best_value
            ahead = spec.numeric and bv is not None and (bv < old if m.direction == "down" else bv > old)
            if better is not None and better != m.direction and f.severity == "error":
                # A severe finding (e.g. a policy that is pure noise) makes the runs' scores incomparable
                # evidence about this knob; the diagnosis wins and the overruled trend is recorded.
                new = step(spec, old, m.direction, factor=m.factor)
                plan.set(m.key, new, f"{cause}: {m.why}; {factor} step; the trend ({_trend_text(trend)}) is "
                                     f"overruled: a severe {f.code} makes those scores no evidence about {m.key}")
                plan.causes.append(f.code)
                return
            if better is not None and better != m.direction:
                plan.skip(m.key, f"{cause} suggests {m.direction}, but the trend says {_trend_text(trend)}")
                return
            if ahead:
                new, reached = toward(spec, old, bv)
                sizing = (f"toward the best-known {fmt_num(bv)}, trend {_trend_text(trend)}"
                          + ("" if reached else "; capped by the trust region"))
            elif better is None and bv != old:
                plan.skip(m.key, f"{cause} suggests {m.direction}, but the best-known {fmt_num(bv)} lies the "
                                 f"other way: {_trend_text(trend)}")
                return
            else:
                new = step(spec, old, m.direction, factor=m.factor)
                sizing = f"{factor} past the best-known edge {fmt_num(bv)}, trend {_trend_text(trend)}"
        else:
            new = step(spec, old, m.direction, factor=m.factor)
            seen = f"trend {_trend_text(trend)}, no usable direction; " if trend is not None else ""
            sizing = f"{seen}no trend evidence yet: one {factor} step"
        if new == old:
            plan.skip(m.key, f"{cause} suggests {m.direction}, but {fmt_num(old)} is at its range limit")
            return
        plan.set(m.key, new, f"{cause}: {m.why}; {sizing}")
        plan.causes.append(f.code)

    # -- 4. explore ----------------------------------------------------------------------------------
    def _explore(self, plan: _Plan, codes: dict[str, Finding]) -> None:
        ctx = plan.ctx
        if "plateau" in codes and not (ctx.noise and ctx.noise.measured) and (ctx.remaining_runs or 2) >= 2:
            target = self._repeat_target(ctx)
            if target is not None:
                changes, why = seed_repeat(ctx, target)
                plan.seed_repeat = True
                if any(k != "train.seed" for k in changes):
                    plan.override = f"seed repeat of run {target.run_id}"
                for key, value in changes.items():
                    plan.set(key, value, why if key == "train.seed" else f"as in run {target.run_id}")
                return
        specs = tunable(ctx)
        for t in ctx.trends:
            if (t.key in specs and specs[t.key].numeric and t.best_value == current(ctx, t.key)
                    and t.direction in ("lower is better", "higher is better")):
                d = "down" if t.direction == "lower is better" else "up"
                new = step(specs[t.key], t.best_value, d, fraction=self.explore_fraction)
                if new != t.best_value:
                    plan.set(t.key, new, f"healthy; extrapolate: the current value is the best-known edge, trend "
                                         f"{_trend_text(t)}; {self.explore_fraction:g} of a trust-region step")
                    return
        key = self._least_explored(ctx, specs)
        if key is None:
            return
        rng = random.Random(ctx.seed * 100_003 + len(ctx.history))
        d = rng.choice(("up", "down"))
        old = current(ctx, key)
        new = step(specs[key], old, d, fraction=self.explore_fraction)
        if new == old:
            d = "up" if d == "down" else "down"
            new = step(specs[key], old, d, fraction=self.explore_fraction)
        plan.set(key, new, f"no finding asks for a move; explore the least-varied knob ({d}, "
                           f"{self.explore_fraction:g} of a trust-region step, seeded direction)")

    @staticmethod
    def _repeat_target(ctx: AdvisorContext) -> RunRecord | None:
        """The run to repeat: the best or latest trusted run that started fresh (so the repeat is
        comparable), else the best, else the latest."""
        trusted = [r for r in ctx.history if r.config is not None and trusted_score(r, ctx.objective) is not None]
        best = trusted_best(ctx)
        fresh = [r for r in trusted if r.config.autopilot.resume_mode == "fresh"]  # type: ignore[union-attr]
        for pool in (fresh, trusted):
            if best is not None and best in pool:
                return best
            if pool:
                return pool[-1]
        return None

    @staticmethod
    def _least_explored(ctx: AdvisorContext, specs: dict) -> str | None:
        numeric = [k for k in EXPLORE_ORDER if k in specs] + sorted(
            k for k, s in specs.items() if k not in EXPLORE_ORDER and (s.numeric or s.scale in ("bool", "choice")))
        if not numeric:
            return None
        flats = [flatten(r.config.model_dump()) for r in ctx.history if r.config is not None]
        return min(numeric, key=lambda k: len({repr(f.get(k)) for f in flats}))

    # -- budget ----------------------------------------------------------------------------------------
    def _timesteps(self, plan: _Plan) -> None:
        ctx = plan.ctx
        tt, fit = current(ctx, BUDGET_KEY), budget_steps(ctx)
        if fit is None:
            return
        latest = ctx.history[-1]
        rise = _rise(latest, ctx.objective) if trusted_score(latest, ctx.objective) is not None else None
        band = ctx.noise_band or 0.0
        if (not plan.seed_repeat and plan.revert_to is None and rise is not None and rise[0] - rise[1] > band
                and fit >= 2 * tt):
            plan.set(BUDGET_KEY, 2 * tt, f"the curve was still rising: {ctx.objective} mean of the last quarter "
                                         f"{rise[0]:.4g} vs the quarter before {rise[1]:.4g} (+{rise[0] - rise[1]:.3g} > "
                                         f"band {band:.3g}); {2 * tt:,} fits the budget ({fit:,} max at "
                                         f"{ctx.sps:,.0f} SPS)")
        elif tt > fit and fit > 0:
            plan.set(BUDGET_KEY, fit, f"{tt:,} / {ctx.sps:,.0f} SPS = {tt / ctx.sps:,.0f}s is over the runtime "
                                      f"budget; {fit:,} is the most that fits")

    # -- the proposal ----------------------------------------------------------------------------------
    def _proposal(self, plan: _Plan) -> Proposal:
        ctx = plan.ctx
        mode, src, why = choose_resume(ctx, prefer_best=plan.revert_to is not None, fresh=plan.seed_repeat)
        mode, why = _refuse_noise_checkpoint(ctx, mode, src, why)
        codes = [f.code for f in ctx.findings]
        causes = list(dict.fromkeys(plan.causes))
        parts = [f"{k.split('.')[-1]} {fmt_num(current(ctx, k))}→{fmt_num(v)}" for k, v in plan.changes.items()
                 if k != "train.seed"]
        if plan.seed_repeat:
            head = f"seed repeat (train.seed {fmt_num(current(ctx, 'train.seed'))}→{plan.changes['train.seed']})"
        elif plan.revert_to is not None and plan.reverted:
            head = f"revert to best {plan.revert_to.run_id}: " + ", ".join(parts)
        else:
            head = ", ".join(parts) or "no change"
        expected = "; ".join(EXPECT[c].format(objective=ctx.objective) for c in causes if c in EXPECT)
        if plan.seed_repeat:
            expected = "a second sample of a config already run: the spread between seeds is the noise band"
        next_steps = [NEXT[c] for c in codes if c in NEXT] + [f"{k}: {w}" for k, w in plan.skipped.items()]
        return Proposal(
            advisor=self.name or "rules", changes=plan.changes, resume_mode=mode, resume_from=src,  # type: ignore[arg-type]
            save_strategy=save_strategy(ctx),  # type: ignore[arg-type]
            headline=f"{head}; {why.split(' (')[0].split(';')[0]}",
            rationale=plan.rationale + [f"resume: {why}"],
            expected_effect=expected or f"{ctx.objective} above the noise band of the current best",
            next_steps=next_steps, seed_repeat=plan.seed_repeat, trust_region_override=plan.override)


def _refuse_noise_checkpoint(ctx: AdvisorContext, mode: str, src: str, why: str) -> tuple[str, str]:
    """A checkpoint whose policy is noise (equivalent σ above `degenerate_std`) is no head start:
    its log-std would have to be unlearned first, so the next run starts fresh instead."""
    if mode != "continue":
        return mode, why
    rec = trusted_best(ctx) if src == "best" else ctx.history[-1]
    std = policy_std(rec.trainer_summary) if rec is not None else None
    limit = THRESHOLDS.degenerate_std
    if std is None or std <= limit:
        return mode, why
    return "fresh", (f"fresh start: {src} {rec.run_id}'s policy is noise (equivalent σ {std:.3g} > {limit:g} on "
                     f"actions in [-1, 1]); warm-starting it would inherit that width")


def _rise(rec: RunRecord, objective: str) -> tuple[float, float] | None:
    """(mean of the curve's last quarter, mean of the quarter before) for the objective, if ≥ 8 points."""
    values = []
    for row in rec.curve:
        v = row.get(objective, (row.get("metrics") or {}).get(objective))
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
            values.append(float(v))
    q = len(values) // 4
    if q < 2:
        return None
    return statistics.fmean(values[-q:]), statistics.fmean(values[-2 * q:-q])
