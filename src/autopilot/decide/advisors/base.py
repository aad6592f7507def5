"""The advisor interface and the helpers every advisor shares: sized steps inside the trust region, the
resume policy (never from a suspect or broken run), the runtime budget and seed repeats."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

from autopilot.config.invariants import derive_batch, run_budget, steps_that_fit
from autopilot.config.overrides import flatten
from autopilot.decide.guard import BROKEN_STATUSES, TRUST, TrustRegion, on_value
from autopilot.decide.records import AdvisorContext, Proposal, RunRecord
from autopilot.decide.sanity import is_suspect, trusted_score
from autopilot.decide.trends import SEED_KEY, material_config
from autopilot.space import ParamSpec, fmt_num


class Advisor(ABC):
    """`propose(context) -> Proposal`. Changes are dotted keys applied to `context.base_config` (the
    latest run's config); the guard checks them afterwards, so an advisor may be bold but not blind."""

    name: str = ""

    @abstractmethod
    def propose(self, ctx: AdvisorContext) -> Proposal: ...

    def propose_many(self, ctx: AdvisorContext, k: int) -> list[Proposal]:
        """K candidates for one generation (`--parallel K`). The default: this advisor's proposal, then
        seed repeats of it (each also measures the noise band). Advisors with a better idea of their
        next-best alternatives (a sampler's K asks) override this."""
        first = self.propose(ctx)
        out = [first]
        seeds = [r.config.train.seed for r in ctx.history if r.config is not None]
        seed = max(seeds + [int(first.changes.get(SEED_KEY, ctx.base_config.train.seed))])
        for i in range(1, k):
            changes = dict(first.changes)
            changes[SEED_KEY] = seed + i
            out.append(first.model_copy(update={
                "changes": changes, "seed_repeat": True,
                "headline": f"{first.headline} (seed {seed + i})",
                "rationale": [*first.rationale, f"candidate {i + 1} of {k}: the same move with train.seed "
                                                f"{seed + i}, so the generation also measures the noise band"]}))
        return out


# -- values ------------------------------------------------------------------------------------------
def current(ctx: AdvisorContext, key: str) -> Any:
    return flatten(ctx.base_config.model_dump(exclude={"sweep"})).get(key)


def tunable(ctx: AdvisorContext) -> dict[str, ParamSpec]:
    return {k: s for k, s in ctx.space.items() if s.tunable}


def _tidy(spec: ParamSpec, value: float, span: tuple[float, float]) -> Any:
    """4 significant digits when that stays inside the span; integers for integer scales."""
    value = spec.clamp(min(max(value, span[0]), span[1]))
    if spec.scale in ("int", "intlog", "pow2"):
        return value
    short = float(f"{value:.4g}")
    return short if span[0] <= short <= span[1] else value


def step(spec: ParamSpec, old: Any, direction: str, *, factor: float | None = None, fraction: float = 1.0,
         trust: TrustRegion = TRUST) -> Any:
    """One move of `old` up or down: by `factor` (×) when given and meaningful, else `fraction` of a
    trust-region step on the knob's own scale; always inside the trust region and the range. A `log0`
    knob goes from off to its standard value and below its smallest value to off. Returns `old` if it
    cannot move."""
    if spec.scale == "bool":
        return not old
    if spec.scale == "choice":
        choices = list(spec.choices or ())
        i = choices.index(old) if old in choices else 0
        return choices[(i + (1 if direction == "up" else -1)) % len(choices)]
    span = trust.interval(spec, old)
    if span is None:
        return old
    up = direction == "up"
    if spec.is_off(old):
        return on_value(spec) if up else old
    if spec.multiplicative:
        c = spec.coord(old)
        size = math.log(factor if factor and factor > 0 else trust.log_factor ** fraction)
        new = spec.from_coord(c + (abs(size) if up else -abs(size)))
        if spec.scale == "log0" and not up and new < float(spec.low):  # type: ignore[arg-type]
            return 0.0 if span[0] == 0 else _tidy(spec, float(spec.low), span)  # type: ignore[arg-type]
    elif factor is not None and old not in (0, None) and factor > 0:
        f = factor if (factor >= 1) == up else 1 / factor
        new = old * f
    else:
        w = (span[1] if up else span[0]) - old
        new = old + fraction * w
    new = _tidy(spec, new, span)
    if spec.scale in ("int", "intlog") and new == old:  # an integer knob moves at least by one when it can
        new = _tidy(spec, old + (1 if up else -1), span)
    return new


def toward(spec: ParamSpec, old: Any, target: Any, trust: TrustRegion = TRUST) -> tuple[Any, bool]:
    """Move toward `target`: all the way when the trust region allows, else to the region's edge."""
    if trust.allows(spec, old, target) or not spec.numeric:
        return target, True
    lo, hi = trust.interval(spec, old)  # type: ignore[misc]
    return _tidy(spec, hi if target > old else lo, (lo, hi)), False


# -- runs ---------------------------------------------------------------------------------------------
def trusted_best(ctx: AdvisorContext) -> RunRecord | None:
    best = ctx.best
    if best is None or best.config is None or trusted_score(best, ctx.objective) is None:
        return None
    return best


def choose_resume(ctx: AdvisorContext, *, prefer_best: bool = False, fresh: bool = False) -> tuple[str, str, str]:
    """(resume_mode, resume_from, why). Never a suspect or broken run's checkpoint."""
    latest = ctx.history[-1]
    best = trusted_best(ctx)
    latest_ok = not is_suspect(latest) and latest.status not in BROKEN_STATUSES and latest.trainer_summary is not None
    if fresh:
        return "fresh", "latest", "fresh start, so the run is comparable with the one it repeats"
    if best is not None and (prefer_best or not latest_ok) and best.run_id != latest.run_id and ctx.best_resumable:
        score = fmt_num(round(trusted_score(best, ctx.objective) or 0.0, 4))
        why = "" if latest_ok else f"; latest {latest.run_id} is {'suspect' if is_suspect(latest) else latest.status}"
        return "continue", "best", f"warm-start from best {best.run_id} ({ctx.objective} {score}){why}"
    if latest_ok:
        why = "" if ctx.best_resumable or not prefer_best else " (the best pointer is suspect or missing)"
        return "continue", "latest", f"continue from latest {latest.run_id}{why}"
    state = "suspect" if is_suspect(latest) else latest.status
    return "fresh", "latest", f"fresh start: latest {latest.run_id} is {state} and no trusted best exists"


def save_strategy(ctx: AdvisorContext) -> str:
    """`best` once some run has a trusted score to rank by; `latest` until then."""
    return "best" if any(trusted_score(r, ctx.objective) is not None for r in ctx.history) else "latest"


def budget_steps(ctx: AdvisorContext) -> int | None:
    """The largest total_timesteps (whole batches) that fits min(max_run_seconds, remaining seconds)."""
    if not ctx.sps or ctx.sps <= 0:
        return None
    budget, _ = run_budget(ctx.base_config, ctx.remaining_seconds)
    return steps_that_fit(ctx.sps, budget, derive_batch(ctx.base_config).batch)


def seed_repeat(ctx: AdvisorContext, target: RunRecord) -> tuple[dict[str, Any], str]:
    """Changes (relative to the base config) that repeat `target`'s config with an unused train.seed."""
    assert target.config is not None
    seeds = [r.config.train.seed for r in ctx.history if r.config is not None]
    new_seed = max(seeds) + 1
    base = material_config(ctx.base_config)
    wanted = material_config(target.config)
    changes = {k: v for k, v in wanted.items() if not k.startswith("autopilot.") and base.get(k) != v}
    changes[SEED_KEY] = new_seed
    why = (f"repeat run {target.run_id}'s config with train.seed {target.config.train.seed} -> {new_seed} "
           f"to measure the noise band")
    return changes, why
