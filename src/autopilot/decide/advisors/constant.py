"""The `constant` advisor: change nothing and keep training. The null hypothesis every other advisor must
beat: a loop that cannot do better than continuing the same config has not earned its decisions.

It continues from the latest checkpoint; when the latest run is broken or suspect it uses the shared
resume policy (`choose_resume`): warm-start from the trusted best, else a fresh start. Because the config
itself never changes, every run after the first is a continuation, not a repeat: the guard's no-repeat
rule is satisfied by moving `train.seed` on (the only key it changes), which also keeps the rollouts of
a continuation from replaying the previous run's random stream.
"""

from __future__ import annotations

from autopilot.decide.advisors import register_advisor
from autopilot.decide.advisors.base import Advisor, choose_resume, save_strategy
from autopilot.decide.records import AdvisorContext, Proposal
from autopilot.decide.trends import SEED_KEY


def _next_seeds(ctx: AdvisorContext, k: int) -> list[int]:
    """`k` train.seed values no run of the ledger has used (each above the highest so far)."""
    used = [r.config.train.seed for r in ctx.history if r.config is not None]
    top = max(used + [ctx.base_config.train.seed])
    return [top + i for i in range(1, k + 1)]


@register_advisor("constant")
class ConstantAdvisor(Advisor):
    def propose(self, ctx: AdvisorContext) -> Proposal:
        return self.propose_many(ctx, 1)[0]

    def propose_many(self, ctx: AdvisorContext, k: int) -> list[Proposal]:
        """K copies of the same config that differ only in train.seed (K continuations of one config)."""
        if k < 1:
            raise ValueError(f"propose_many needs k >= 1, got {k}")
        mode, src, why = choose_resume(ctx)
        out = []
        for i, seed in enumerate(_next_seeds(ctx, k)):
            rationale = [
                "no knob changes: the null hypothesis (keep training the same config) that every other advisor "
                "must beat",
                f"{SEED_KEY} {ctx.base_config.train.seed} -> {seed}: a fresh random stream for the "
                f"continuation (the only key that changes)",
                f"resume: {why}",
            ]
            if k > 1:
                rationale.append(f"candidate {i + 1} of {k}: the same config with another seed")
            out.append(Proposal(
                advisor=self.name or "constant", changes={SEED_KEY: seed}, resume_mode=mode,  # type: ignore[arg-type]
                resume_from=src, save_strategy=save_strategy(ctx),  # type: ignore[arg-type]
                headline=f"keep the config, {'continue from ' + src if mode == 'continue' else 'start fresh'}",
                rationale=rationale,
                expected_effect="whatever more training of the same config gives: the baseline to beat",
                next_steps=["compare other advisors' best-so-far per run with this baseline's"]))
        return out
