"""The `random` advisor: the honest baseline. It samples 1-2 tunable knobs uniformly (on each knob's own
scale) inside the trust region around the latest config, and uses the same resume rules as everyone."""

from __future__ import annotations

import json
import random

from autopilot.decide.advisors import register_advisor
from autopilot.decide.advisors.base import Advisor, choose_resume, current, save_strategy, tunable
from autopilot.decide.guard import TRUST
from autopilot.decide.records import AdvisorContext, Proposal
from autopilot.space import fmt_num


@register_advisor("random")
class RandomAdvisor(Advisor):
    max_knobs = 2

    def propose(self, ctx: AdvisorContext) -> Proposal:
        rng = random.Random(ctx.seed * 100_003 + len(ctx.history))
        specs = tunable(ctx)
        keys = sorted(k for k, s in specs.items() if s.numeric or s.choices or s.scale == "bool")
        chosen = rng.sample(keys, k=min(len(keys), rng.randint(1, self.max_knobs)))
        changes, rationale = {}, []
        for key in sorted(chosen):
            spec, old = specs[key], current(ctx, key)
            span = TRUST.interval(spec, old)
            if span is None:  # bool / choice: any other value
                options = [True, False] if spec.scale == "bool" else list(spec.choices or ())
                options = [o for o in options if o != old] or options
                new = rng.choice(options)
                region = "any value"
            else:
                lo, hi = spec.to_unit(spec.clamp(span[0])), spec.to_unit(spec.clamp(span[1]))
                new = spec.from_unit(rng.uniform(lo, hi))
                if spec.scale in ("log", "linear"):
                    short = float(f"{new:.4g}")
                    new = short if TRUST.allows(spec, old, short) and spec.contains(short) else new
                region = f"[{fmt_num(spec.clamp(span[0]))}, {fmt_num(spec.clamp(span[1]))}]"
            if new == old:
                continue
            changes[key] = new
            rationale.append(f"{key}: {fmt_num(old)} -> {fmt_num(new)} — uniform sample on its {spec.scale} scale "
                             f"within the trust region {region}")
        mode, src, why = choose_resume(ctx)
        head = ", ".join(f"{k.split('.')[-1]} {fmt_num(current(ctx, k))}→{fmt_num(v)}" for k, v in changes.items())
        return Proposal(advisor=self.name or "random", changes=changes, resume_mode=mode,  # type: ignore[arg-type]
                        resume_from=src, save_strategy=save_strategy(ctx),  # type: ignore[arg-type]
                        headline=f"random sample: {head or 'no change'}",
                        rationale=rationale + [f"resume: {why}"],
                        expected_effect="unknown: the random baseline that other advisors must beat",
                        next_steps=["compare the rules advisor's gains per run with this baseline's"])

    def propose_many(self, ctx: AdvisorContext, k: int) -> list[Proposal]:
        """K independent samples: the first is `propose(ctx)`, the others come from their own streams
        (a sample equal to an earlier one is drawn again, a bounded number of times)."""
        out: list[Proposal] = []
        seen: set[str] = set()
        stream = 0
        while len(out) < k and stream < 10 * k:
            p = self.propose(ctx if stream == 0 else ctx.model_copy(update={"seed": ctx.seed + 7_919 * stream}))
            stream += 1
            key = json.dumps(p.changes, sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
            if k > 1:
                p.headline = f"{p.headline} (sample {len(out) + 1} of {k})"
            out.append(p)
        return out
