"""A generation of `--parallel K`: which run it grows from, its K candidates, and its note. Pure: no I/O.

In the manner of population-based training, each generation exploits the previous one's best trusted
run (its config is the base every candidate changes, its checkpoint the warm start) and explores with K
candidates: the analysis' accepted proposal for that run first, then the advisor's `propose_many`
alternatives, then seed repeats to fill up (which also measure the noise band). Every candidate passes
the guard against the ledger *plus the candidates chosen before it*, so two members are never the same
config, and a seed repeat of a sibling counts as a deliberate repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autopilot.config import Config, config_from_dict
from autopilot.config.overrides import apply_overrides
from autopilot.decide.advisors import get_advisor
from autopilot.decide.analysis import Decision, analyse_and_propose
from autopilot.decide.guard import guard
from autopilot.decide.records import AdvisorContext, GuardVerdict, NoiseBand, Proposal, RunRecord
from autopilot.decide.sanity import best_of, record_score, trusted_score
from autopilot.decide.trends import SEED_KEY, noise_band
from autopilot.errors import AutopilotError
from autopilot.space import SearchSpace, fmt_num


@dataclass
class GenerationPlan:
    parent: RunRecord  # the run the candidates grow from (the previous generation's best trusted run)
    proposals: list[Proposal]  # accepted by the guard, pairwise distinct, at most k
    rejected: list[tuple[str, GuardVerdict]] = field(default_factory=list)
    decision: Decision | None = None


def generation_parent(members: list[RunRecord], objective: str) -> RunRecord | None:
    """The member with the best trusted score; else the latest member that has a config."""
    return best_of(members, objective) or next((r for r in reversed(members) if r.config is not None), None)


def _candidate_record(i: int, proposal: Proposal, base: Config) -> RunRecord:
    """An accepted candidate as a ledger entry, its config built as the guard builds one (base + override,
    batch sizes as the base has them), so the guard's repeat rules see siblings like earlier runs."""
    cfg = config_from_dict(apply_overrides(base.model_dump(), proposal.as_override()))
    return RunRecord(run_id=f"candidate-{i + 1}", run_dir=Path(f"candidate-{i + 1}"), config=cfg)


def _seed_repeat_of(first: Proposal, seed: int, k: int, i: int) -> Proposal:
    changes = {**first.changes, SEED_KEY: seed}
    return first.model_copy(update={
        "changes": changes, "seed_repeat": True, "headline": f"{first.headline or 'same config'} (seed {seed})",
        "rationale": [*first.rationale, f"candidate {i + 1} of {k}: the same config with train.seed {seed}, so "
                                        f"the generation also measures the noise band"]})


def plan_generation(history: list[RunRecord], parent: RunRecord, *, advisor: str, k: int,
                    space: SearchSpace | None = None, sps: float | None = None, remaining_runs: int | None = None,
                    remaining_seconds: float | None = None, repro_command: str = "", seed: int = 0) -> GenerationPlan:
    """K candidates that change `parent.config`; `history` is the whole ledger (oldest first)."""
    if parent.config is None:
        raise ValueError("the parent run of a generation needs a config")
    if k < 1:
        raise ValueError("a generation has at least one candidate")
    # The analysis reads history[-1] as "the run to analyse": put the parent there.
    ordered = [r for r in history if r.run_id != parent.run_id] + [parent]
    objective = parent.config.autopilot.objective
    if space is None:
        from autopilot.config.load import config_space

        space = config_space(parent.config)
    decision = analyse_and_propose(ordered, advisor=advisor, space=space, sps=sps, remaining_runs=remaining_runs,
                                   remaining_seconds=remaining_seconds, repro_command=repro_command, seed=seed)
    trusted = best_of(ordered, objective)
    noise = decision.noise or noise_band(ordered, objective)
    ctx = AdvisorContext(history=ordered, findings=decision.findings, trends=decision.trends, space=space,
                         base_config=parent.config, best=trusted, best_resumable=trusted is not None,
                         noise_band=noise.value, noise=noise, objective=objective, sps=sps,
                         remaining_runs=remaining_runs, remaining_seconds=remaining_seconds, seed=seed)
    plan = GenerationPlan(parent=parent, proposals=[], rejected=list(decision.rejected), decision=decision)
    chosen: list[GuardVerdict] = []

    def consider(name: str, proposal: Proposal) -> None:
        siblings = [_candidate_record(i, p, parent.config) for i, p in enumerate(plan.proposals)]
        verdict = guard(proposal, base=parent.config, history=siblings + ordered, space=space, sps=sps,
                        remaining_seconds=remaining_seconds, best=trusted)
        if verdict.accepted:
            chosen.append(verdict)
            plan.proposals.append(verdict.proposal)
        else:
            plan.rejected.append((name, verdict))

    if decision.proposal is not None:
        consider(decision.advisor_used or advisor, decision.proposal)
    name = decision.advisor_used if decision.advisor_used in (advisor, "rules") else advisor
    try:
        alternatives = get_advisor(name).propose_many(ctx.model_copy(), k)
    except AutopilotError as exc:
        alternatives = []
        plan.rejected.append((name, GuardVerdict(accepted=False, proposal=Proposal(advisor=name),
                                                 reasons=[f"advisor {name} failed: {exc}"])))
    for proposal in alternatives:
        if len(plan.proposals) >= k:
            break
        if plan.proposals and proposal.as_override() == plan.proposals[0].as_override():
            continue  # the analysis' own proposal, already in
        consider(name, proposal)
    # Fill up with seed repeats of the first candidate (or of the parent when nothing was accepted).
    first = plan.proposals[0] if plan.proposals else Proposal(
        advisor="generation", resume_mode="continue", resume_from="latest", headline=f"repeat of {parent.run_id}",
        rationale=[f"no advisor proposal was accepted; the generation repeats run {parent.run_id}'s config"])
    seeds = {r.config.train.seed for r in ordered if r.config is not None}
    seeds |= {v.config.train.seed for v in chosen if v.config is not None}
    next_seed = max(seeds) + 1
    tries = 0
    while len(plan.proposals) < k and tries < 3 * k:
        tries += 1
        consider("seed repeat", _seed_repeat_of(first, next_seed, k, len(plan.proposals)))
        next_seed += 1
    return plan


# -- the generation's note ----------------------------------------------------------------------------
def _changed(rec: RunRecord, parent: RunRecord | None) -> str:
    if rec.config is None or parent is None or parent.config is None:
        return "–"
    from autopilot.config.overrides import flatten

    mine, theirs = flatten(rec.config.model_dump(exclude={"sweep"})), flatten(parent.config.model_dump(exclude={"sweep"}))
    diffs = [f"{k.split('.', 1)[-1]}={fmt_num(v)}" for k, v in mine.items()
             if theirs.get(k) != v and not k.startswith("autopilot.")]
    return ", ".join(diffs) or "same config"


def render_generation_note(number: int, members: list[RunRecord], *, parent: RunRecord | None, objective: str,
                           noise: NoiseBand, timings: dict[str, tuple[str, str]] | None = None) -> str:
    """Markdown: the members side by side, each judged against the generation's best and the noise band."""
    band = noise.value
    best = best_of(members, objective)
    best_score = trusted_score(best, objective) if best is not None else None
    how = "measured from seed repeats" if noise.measured else "assumed (not yet measured)"
    lines = [f"## Generation {number} — {len(members)} candidates"
             + (f", grown from run {parent.run_id}" if parent is not None else ""), "",
             f"Noise band: ±{band:.3g} {objective} ({how}). A member counts as worse than the generation's best "
             f"only when it trails it by more than the band.", "",
             f"| run | changes vs {'parent' if parent is not None else 'first member'} | status | {objective} | vs best | verdict | trained |",
             "|---|---|---|---|---|---|---|"]
    reference = parent or (members[0] if members else None)  # the first generation: vs its first member
    for rec in members:
        score = record_score(rec, objective)
        trusted = trusted_score(rec, objective)
        if rec is best:
            verdict, delta = "best ★", "–"
        elif trusted is None or best_score is None:
            verdict, delta = ("suspect" if score is not None else rec.status), "–"
        else:
            gap = trusted - best_score
            delta = f"{gap:+.3g}"
            verdict = "within the band" if abs(gap) <= band else "worse (beyond the band)"
        when = (timings or {}).get(rec.run_id)
        trained = f"{when[0]} → {when[1]}" if when else "–"
        changed = "(reference)" if rec is reference and parent is None else _changed(rec, reference)
        lines.append(f"| {rec.run_id} | {changed} | {rec.status} | "
                     f"{fmt_num(round(score, 4)) if score is not None else '–'} | {delta} | {verdict} | {trained} |")
    lines.append("")
    if best is None:
        lines.append("No member has a trusted score: the next generation grows from the latest config, fresh.")
    else:
        ties = [r.run_id for r in members if r is not best and trusted_score(r, objective) is not None
                and abs(trusted_score(r, objective) - best_score) <= band]  # type: ignore[operator]
        lines.append(f"Next generation warm-starts from run {best.run_id} ({objective} {best_score:.4g})"
                     + (f"; {', '.join(ties)} within the band of it, so the ranking between them is not yet "
                        f"meaningful." if ties else "; every other member trails it by more than the band."))
    return "\n".join(lines)


__all__ = ["GenerationPlan", "generation_parent", "plan_generation", "render_generation_note"]
