"""The `rules` advisor (the default): findings → moves on the knob most likely at fault.

Order of business:
1. A broken run (diverged, crashed, stalled) or a regression — beyond the noise band below the best run,
   or below what continuing the previous run would have given (`decide/attribution.py`): revert the knobs
   that differ from the best run to its values and warm-start from its checkpoint. A knob a
   still-firing finding asks to keep moved is not reverted. With nothing trusted to go back to: a
   diverged run halves its step and starts fresh; a crash or stall retries with another seed.
2. Findings with moves: each is answered on the knob most likely at fault (`moves.candidates`: the
   change just before the problem, else the knob farthest outside its prior's typical range, which
   moves into it in one step, else the knob this finding already moved — a bolder step, since the
   finding persisted). When the curve still rises and no knob is outside its typical range, warnings
   other than the update-size ones are watched, not acted on: nothing a prior can name is at fault and
   the run is learning.
3. Nothing to fix and the curve still rises (or the last run beat its predecessor beyond the band):
   keep the config and continue from latest; extend the budget when the rise is clear and it fits.
4. A measured plateau (flat curve, runs within the band): explore from the best checkpoint — the knob
   farthest from its prior moves toward it, else a controlled trend is extrapolated, else the
   least-explored knob moves half a trust-region step toward its prior's standard value.
Controlled trends (runs from the same start point) still size and veto moves; a trend along a
warm-start chain is no evidence about a knob and is never used.
"""

from __future__ import annotations

import random
from typing import Any

from autopilot.config.overrides import flatten
from autopilot.decide.advisors import register_advisor
from autopilot.decide.advisors.base import (
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
from autopilot.decide.advisors.moves import Candidate, candidates, describe_outside, escalated, into_prior
from autopilot.decide.attribution import curve_values, rise
from autopilot.decide.diagnose import THRESHOLDS, policy_std
from autopilot.decide.guard import BUDGET_KEY, TRUST
from autopilot.decide.records import AdvisorContext, Finding, KnobTrend, Proposal, RunRecord
from autopilot.decide.sanity import trusted_score
from autopilot.decide.trends import CONFOUNDED, material_diff
from autopilot.space import fmt_num

BROKEN = ("diverged", "crashed", "stalled")
NOT_MOVES = ("regression_vs_best", "plateau")  # ledger-level findings answered by revert / explore
# The update-size findings say the optimizer's step is off whatever the curve does (a timid learning rate
# still rises, slowly): they are answered even while the run is learning; softer warnings are watched.
ACT_WHILE_RISING = ("updates_too_small", "updates_too_large")

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
        self.keep = ""  # why the config is kept as it is (the run is still learning)
        self.watched: list[str] = []  # warnings noted but not acted on while the curve rises
        self.exploring = False
        self.fresh = False  # a diverged run with nothing trusted to go back to starts over
        self.fresh_why = ""

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
        broken = next((codes[c] for c in BROKEN if c in codes), None)
        hurt = ctx.effect is not None and ctx.effect.verdict == "hurt"
        if best is not None and best.run_id != latest.run_id and ("regression_vs_best" in codes or broken or hurt):
            self._revert(plan, best)
            if hurt and "regression_vs_best" not in codes:
                plan.rationale.append(f"the last change hurt: {ctx.effect.detail}")  # type: ignore[union-attr]
            if not plan.reverted:
                # Nothing to revert (the best run's knobs equal these, or a still-firing finding asks to
                # keep each difference): the findings decide, from the better checkpoint.
                kept = "; ".join(f"{key} {why}" for key, why in plan.skipped.items())
                plan = _Plan(ctx)
                plan.revert_to = best
                what = broken.code if broken is not None else "regression"
                plan.rationale.append(f"{what}: no revert — {kept}" if kept else
                                      f"{what}: the best run's knobs equal these; warm-start from its checkpoint")
                self._follow(plan, rising=False)
        elif broken is not None and broken.code == "diverged":
            self._follow(plan, rising=False)
            plan.fresh = True
        elif broken is not None and latest.config is not None:
            changes, _ = seed_repeat(ctx, latest)
            plan.seed_repeat = True
            plan.set("train.seed", changes["train.seed"], f"{broken.code} with no trusted best to go back to: "
                     "retry the same config with another seed, fresh")
        else:
            rising = self._rising(plan)
            self._follow(plan, rising=rising is not None)
            if not plan.changes:
                if rising is not None:
                    plan.keep = rising
                elif self._plateau(ctx, codes):
                    self._explore(plan)
                else:
                    plan.keep = "no finding asks for a move and the curve is not flat beyond doubt: keep training"
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

    # -- 2. findings -------------------------------------------------------------------------------
    def _follow(self, plan: _Plan, *, rising: bool) -> None:
        ctx = plan.ctx
        specs = tunable(ctx)
        findings = [f for f in ctx.findings if f.moves and f.code not in NOT_MOVES]
        ranked = candidates(ctx, findings, specs, {k: current(ctx, k) for k in specs})
        # Findings that pull one knob both ways are no evidence about it, unless the prior breaks the tie
        # (a move back into the typical range); without this the knob swings between runs.
        pulled: dict[str, set[str]] = {}
        for c in ranked:
            if c.direction in ("up", "down"):
                pulled.setdefault(c.move.key, set()).add(c.direction)
        conflicted = {k for k, dirs in pulled.items() if len(dirs) > 1}
        answered: set[str] = set()
        for f in findings:
            for m in f.moves:
                if m.key not in specs:
                    plan.skip(m.key, f"{f.code} suggests {m.direction} but the key is not tunable here")
        for c in ranked:
            if len(plan.changes) >= self.max_knobs:
                break
            if c.move.key in plan.changes or c.move.key in plan.skipped:
                continue
            if c.finding.code in answered and c.outside <= 0:
                continue  # one suspect per finding, unless another of its knobs is also outside its prior
            if c.move.key in conflicted and c.outside <= 0 and c.finding.severity != "error":
                codes = sorted({x.finding.code for x in ranked if x.move.key == c.move.key})
                plan.skip(c.move.key, f"left as it is: {', '.join(codes)} pull it in opposite directions")
                continue
            severe = c.finding.severity == "error"
            if (rising and not severe and c.undo is None and c.outside <= 0
                    and c.finding.code not in ACT_WHILE_RISING):
                plan.watched.append(f"{c.finding.code} ({c.finding.evidence.get('rule') or c.finding.evidence_text()})")
                answered.add(c.finding.code)
                continue
            if self._apply(plan, c) and not severe:  # a severe finding may take all its moves
                answered.add(c.finding.code)

    def _apply(self, plan: _Plan, c: Candidate) -> bool:
        ctx, f, m, spec, old = plan.ctx, c.finding, c.move, c.spec, c.old
        cause = f"{f.code} ({f.evidence.get('rule') or f.evidence_text()})"
        trend = next((t for t in ctx.trends if t.key == m.key and t.direction != CONFOUNDED), None)
        direction = c.direction
        if direction is None:
            return False
        hurt = ctx.effect is not None and ctx.effect.verdict == "hurt" and m.key in ctx.effect.changed
        if hurt and c.undo is None and f.severity != "error":
            # The last run moved this knob this way and scored worse than continuing would have: the
            # finding is answered on another knob this time.
            plan.skip(m.key, f"{cause} suggests {direction} again, but the last move of {m.key} hurt "
                             f"({ctx.effect.detail})")  # type: ignore[union-attr]
            return False
        overruled = ""
        if trend is not None:
            better = {"lower is better": "down", "higher is better": "up"}.get(trend.direction)
            if better is not None and better != direction:
                if f.severity != "error":
                    plan.skip(m.key, f"{cause} suggests {direction}, but the controlled trend says {_trend_text(trend)}")
                    return False
                # A severe finding (e.g. a policy that is pure noise) makes those runs' scores no evidence
                # about this knob; the diagnosis wins and the overruled trend is recorded.
                overruled = (f"; the trend ({_trend_text(trend)}) is overruled: a severe {f.code} makes those "
                             f"scores no evidence about {m.key}")
                trend = None
        ahead = (trend is not None and spec.numeric and trend.direction != "flat" and trend.best_value is not None
                 and (trend.best_value > old if direction == "up" else trend.best_value < old))
        if m.direction in ("set", "revert"):
            new, reached = toward(spec, old, m.value)
            sizing = f"set to {fmt_num(m.value)}" if reached else f"toward {fmt_num(m.value)}, capped by the trust region"
        elif c.undo is not None:
            new, sizing = c.undo, "undo: the previous run moved it the other way just before this appeared"
            plan.override = plan.override or f"undo the previous run's change of {m.key}"
        elif ahead:
            new = trend.best_value  # type: ignore[union-attr]
            sizing = f"to the best-known {fmt_num(new)} of the controlled trend {_trend_text(trend)}"  # type: ignore[arg-type]
            plan.override = plan.override or f"the best-known {m.key} of a controlled trend"
        elif c.outside > 0:
            new = into_prior(spec, old, direction)
            sizing = f"{describe_outside(spec, old)}: moved into it"
            plan.override = plan.override or f"prior: {m.key} outside its typical range"
        else:
            factor = m.factor or 2.0
            persisted = c.persisted
            new = escalated(spec, old, direction, factor, persisted)
            if persisted:
                sizing = (f"{f.code} persisted after {persisted} move(s) of {m.key} this way: a bolder step "
                          f"(×{factor:g}^{min(persisted + 1, 3)}, at most to the edge of its typical range)")
                plan.override = plan.override or f"{f.code} persisted after {persisted} step(s): expanding step"
            else:
                edge = f", at the best-known edge {fmt_num(trend.best_value)}" if trend is not None else ""  # type: ignore[union-attr]
                where = ("inside its typical range" if spec.prior_distance(old) == 0 else
                         "outside its typical range, and no other knob the finding names is a better suspect")
                sizing = f"one ×{factor:g} step; {m.key} is {where}{edge}"
        if new == old:
            plan.skip(m.key, f"{cause} suggests {direction}, but {fmt_num(old)} is at its range limit")
            return False
        if not TRUST.allows(spec, old, new):
            plan.override = plan.override or f"{f.code}: the finding's own ×{m.factor or 2:g} move on {m.key}"
        plan.set(m.key, new, f"{cause}: {m.why}; {sizing}{overruled}")
        plan.causes.append(f.code)
        return True

    # -- 3./4. healthy: keep, or explore a measured plateau --------------------------------------------
    def _rising(self, plan: _Plan) -> str | None:
        """Why the run is still learning (a reason to keep the config), or None."""
        ctx = plan.ctx
        latest = ctx.history[-1]
        band = ctx.noise_band or 0.0
        r = rise(latest, ctx.objective) if trusted_score(latest, ctx.objective) is not None else None
        if r is not None and r.gain > band / 2:
            return (f"the curve still rises: {ctx.objective} last quarter {r.last:.4g} vs the quarter before "
                    f"{r.before:.4g} (+{r.gain:.3g} > half the band {band / 2:.3g})")
        if ctx.effect is not None and ctx.effect.verdict == "helped" and ctx.effect.comparison == "continuation":
            # A warm start that beat even the optimistic continuation is still climbing. (A controlled
            # comparison that "helped" is evidence about the knob instead: the trends use it.)
            return f"the last run beat continuing its predecessor: {ctx.effect.detail}"
        return None

    @staticmethod
    def _plateau(ctx: AdvisorContext, codes: dict[str, Finding]) -> bool:
        if "plateau" in codes:
            return True
        latest = ctx.history[-1]
        r = rise(latest, ctx.objective) if trusted_score(latest, ctx.objective) is not None else None
        band = ctx.noise_band or 0.0
        flat = r is not None and abs(r.gain) <= band / 4
        no_gain = ctx.effect is not None and ctx.effect.verdict in ("inconclusive", "unchanged", "hurt")
        return flat and (no_gain or len(ctx.history) == 1)

    def _explore(self, plan: _Plan) -> None:
        ctx = plan.ctx
        specs = tunable(ctx)
        latest_fresh = ctx.history[-1].config is not None and ctx.history[-1].config.autopilot.resume_mode == "fresh"
        if latest_fresh and not (ctx.noise and ctx.noise.measured) and (ctx.remaining_runs or 2) >= 2:
            # Runs that start from scratch lose nothing by a repeat: spend one on measuring the band.
            target = self._repeat_target(ctx)
            if target is not None:
                changes, why = seed_repeat(ctx, target)
                plan.seed_repeat = True
                if any(k != "train.seed" for k in changes):
                    plan.override = f"seed repeat of run {target.run_id}"
                for key, value in changes.items():
                    plan.set(key, value, why if key == "train.seed" else f"as in run {target.run_id}")
                return
        plan.revert_to = trusted_best(ctx)  # explore from the best checkpoint
        plan.exploring = True
        far = sorted(((abs(s.prior_distance(current(ctx, k))), k) for k, s in specs.items()
                      if s.numeric and s.prior_distance(current(ctx, k)) != 0), reverse=True)
        if far:
            key = far[0][1]
            spec, old = specs[key], current(ctx, key)
            d = "up" if spec.prior_distance(old) < 0 else "down"
            plan.set(key, into_prior(spec, old, d), f"plateau: explore the knob farthest from its prior: "
                                                    f"{describe_outside(spec, old)}")
            plan.override = f"prior: {key} outside its typical range"
            return
        for t in ctx.trends:
            if (t.key in specs and specs[t.key].numeric and t.best_value == current(ctx, t.key)
                    and t.direction in ("lower is better", "higher is better")):
                d = "down" if t.direction == "lower is better" else "up"
                new = step(specs[t.key], t.best_value, d, fraction=self.explore_fraction)
                if new != t.best_value:
                    plan.set(t.key, new, f"plateau: extrapolate the controlled trend {_trend_text(t)}; "
                                         f"{self.explore_fraction:g} of a trust-region step")
                    return
        key = self._least_explored(ctx, specs)
        if key is None:
            return
        spec, old = specs[key], current(ctx, key)
        if spec.prior is not None and spec.numeric and old != spec.prior.center:
            d, how = ("up" if old < spec.prior.center else "down"), f"toward its standard {fmt_num(spec.prior.center)}"
        else:
            d = random.Random(ctx.seed * 100_003 + len(ctx.history)).choice(("up", "down"))
            how = "seeded direction"
        new = step(spec, old, d, fraction=self.explore_fraction)
        if new == old:
            d = "up" if d == "down" else "down"
            new = step(spec, old, d, fraction=self.explore_fraction)
        plan.set(key, new, f"plateau: explore the least-varied knob ({d}, {how}, {self.explore_fraction:g} of a "
                           f"trust-region step)")

    @staticmethod
    def _repeat_target(ctx: AdvisorContext) -> RunRecord | None:
        """The best (else latest) trusted run that started fresh, so the repeat is comparable with it."""
        trusted = [r for r in ctx.history if r.config is not None and trusted_score(r, ctx.objective) is not None]
        fresh = [r for r in trusted if r.config.autopilot.resume_mode == "fresh"]  # type: ignore[union-attr]
        best = trusted_best(ctx)
        if best is not None and best in fresh:
            return best
        return fresh[-1] if fresh else None

    @staticmethod
    def _least_explored(ctx: AdvisorContext, specs: dict) -> str | None:
        # Knobs with a prior first (the standard PPO knobs), in their declaration order.
        keys = [k for k, s in specs.items() if s.prior is not None] + sorted(
            k for k, s in specs.items() if s.prior is None and (s.numeric or s.scale in ("bool", "choice")))
        if not keys:
            return None
        flats = [flatten(r.config.model_dump()) for r in ctx.history if r.config is not None]
        return min(keys, key=lambda k: len({repr(f.get(k)) for f in flats}))

    # -- budget ----------------------------------------------------------------------------------------
    def _timesteps(self, plan: _Plan) -> None:
        ctx = plan.ctx
        tt, fit = current(ctx, BUDGET_KEY), budget_steps(ctx)
        if fit is None:
            return
        latest = ctx.history[-1]
        r = rise(latest, ctx.objective) if trusted_score(latest, ctx.objective) is not None else None
        band = ctx.noise_band or 0.0
        if plan.keep and r is not None and r.gain > band and fit >= 2 * tt:
            plan.set(BUDGET_KEY, 2 * tt, f"the curve was still rising: {ctx.objective} mean of the last quarter "
                                         f"{r.last:.4g} vs the quarter before {r.before:.4g} (+{r.gain:.3g} > "
                                         f"band {band:.3g}); {2 * tt:,} fits the budget ({fit:,} max at "
                                         f"{ctx.sps:,.0f} SPS)")
        elif tt > fit and fit > 0:
            plan.set(BUDGET_KEY, fit, f"{tt:,} / {ctx.sps:,.0f} SPS = {tt / ctx.sps:,.0f}s is over the runtime "
                                      f"budget; {fit:,} is the most that fits")

    # -- the proposal ----------------------------------------------------------------------------------
    def _proposal(self, plan: _Plan) -> Proposal:
        ctx = plan.ctx
        mode, src, why = choose_resume(ctx, prefer_best=plan.revert_to is not None, fresh=plan.seed_repeat or plan.fresh)
        if plan.fresh and not plan.seed_repeat:
            why = plan.fresh_why or "fresh start: the run diverged and there is no trusted checkpoint to go back to"
        mode, why = _refuse_noise_checkpoint(ctx, mode, src, why)
        mode, why = _refuse_stuck_checkpoint(plan, mode, why)
        codes = [f.code for f in ctx.findings]
        causes = list(dict.fromkeys(plan.causes))
        parts = [f"{k.split('.')[-1]} {fmt_num(current(ctx, k))}→{fmt_num(v)}" for k, v in plan.changes.items()
                 if k != "train.seed"]
        if plan.seed_repeat:
            head = f"seed repeat (train.seed {fmt_num(current(ctx, 'train.seed'))}→{plan.changes['train.seed']})"
        elif plan.revert_to is not None and plan.reverted:
            head = f"revert to best {plan.revert_to.run_id}: " + ", ".join(parts)
        elif plan.keep and not [k for k in plan.changes if k != BUDGET_KEY]:
            head = "keep the config" + (f", {', '.join(parts)}" if parts else "")
        else:
            head = ", ".join(parts) or "no change"
        expected = "; ".join(EXPECT[c].format(objective=ctx.objective) for c in causes if c in EXPECT)
        if plan.seed_repeat:
            expected = "a second sample of a config already run: the spread between seeds is the noise band"
        elif plan.keep and not causes:
            expected = (f"{ctx.objective} keeps rising: more training of a config that is learning beats changing "
                        f"a knob nothing points at")
        rationale = list(plan.rationale)
        if plan.keep:
            rationale.insert(0, f"keep: {plan.keep}")
        if plan.watched:
            rationale.append("watched, not acted on while the curve rises and every knob they name is inside its "
                             "typical range: " + "; ".join(plan.watched))
        if ctx.effect is not None and ctx.effect.detail and not any(ctx.effect.detail in r for r in rationale):
            rationale.append(f"last change: {ctx.effect.detail}")
        next_steps = [NEXT[c] for c in codes if c in NEXT] + [f"{k}: {w}" for k, w in plan.skipped.items()]
        return Proposal(
            advisor=self.name or "rules", changes=plan.changes, resume_mode=mode, resume_from=src,  # type: ignore[arg-type]
            save_strategy=save_strategy(ctx),  # type: ignore[arg-type]
            headline=f"{head}; {why.split(' (')[0].split(';')[0]}",
            rationale=rationale + [f"resume: {why}"],
            expected_effect=expected or f"{ctx.objective} above the noise band of the current best",
            next_steps=next_steps, seed_repeat=plan.seed_repeat, trust_region_override=plan.override)


# Findings about how the weights were trained (not about the score): a checkpoint that learned nothing
# under them may be damaged (saturated units, a collapsed policy) rather than merely untrained.
DAMAGING = ("updates_too_large", "entropy_collapsed")


def _refuse_stuck_checkpoint(plan: _Plan, mode: str, why: str) -> tuple[str, str]:
    """A checkpoint is no head start when every trusted run of a warm-start chain stayed at the first
    run's score (within the band) and either the weights were trained under a damaging finding while no
    run's own curve ever rose, or the updates were violent (approx_kl far above its limit), or the
    plateau sits where the ledger began: what those weights learned is what keeps the score there."""
    ctx = plan.ctx
    if mode != "continue" or plan.seed_repeat:
        return mode, why
    scores = [s for r in ctx.history if (s := trusted_score(r, ctx.objective)) is not None]
    band = ctx.noise_band or 0.0
    if len(scores) < 1 or max(scores) > scores[0] + band:
        return mode, why
    latest = ctx.history[-1].trainer_summary
    kl = latest.metric("approx_kl") if latest is not None else None
    violent = kl is not None and kl == kl and kl > 10 * THRESHOLDS.kl_large and "updates_too_large" in plan.causes
    stuck = plan.exploring and len(scores) >= THRESHOLDS.plateau_runs
    if violent:
        return "fresh", (f"fresh start: the checkpoint was trained with violent updates (approx_kl {kl:.3g} > "
                         f"10 × {THRESHOLDS.kl_large:g}) and no run has risen above the first's "
                         f"{ctx.objective} {scores[0]:.4g}; its weights are no head start")
    damaged = next((f for f in ctx.findings if f.code in DAMAGING and not f.assumed), None)
    if damaged is not None and not _ever_rose(ctx, band):
        return "fresh", (f"fresh start: the checkpoint was trained under {damaged.code} "
                         f"({damaged.evidence.get('rule') or damaged.evidence_text()}) and no run's curve has risen "
                         f"(the first's {ctx.objective} {scores[0]:.4g} is still the best): weights that learned "
                         "nothing under violent or collapsing updates are no head start")
    if stuck:
        return "fresh", (f"fresh start: {len(scores)} runs have stayed within the band {band:.3g} of the first run's "
                         f"{ctx.objective} {scores[0]:.4g}; the warm-started weights are stuck there")
    return mode, why


def _ever_rose(ctx: AdvisorContext, band: float) -> bool:
    """Whether any run's own learning curve climbed (its last quarter's mean above its first quarter's by
    more than the band): a policy that converged, and may rightly be near-deterministic, rather than one
    that collapsed before it learned."""
    for rec in ctx.history:
        pts = [v for _, v in curve_values(rec, ctx.objective)]
        q = len(pts) // 4
        if q >= 1 and sum(pts[-q:]) / q > sum(pts[:q]) / q + band:
            return True
    return False


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


