"""After a run: diagnose → trends → advise → guard (with fallback) → notes. The runner's one call.

Proposals change `history[-1].config` (the latest run's full config); `Decision.verdict.config` is the
full resolved config the accepted proposal produces. When the chosen advisor's proposal is rejected
the `rules` advisor is asked; if that is rejected too, a conservative seed repeat of the best (else
latest) config; if even that fails, `proposal` is None and the notes say so. A proposal from an outside
advisor (`untrusted`: llm, command) is screened first (`advisors.external.screen`); every proposal as
given is kept in `Decision.proposed`, so the notes can show what was refused and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autopilot.config.invariants import Check
from autopilot.decide.advisors import get_advisor
from autopilot.decide.advisors.base import choose_resume, save_strategy, seed_repeat
from autopilot.decide.advisors.external import screen
from autopilot.decide.attribution import change_effect
from autopilot.decide.diagnose import diagnose
from autopilot.decide.guard import guard
from autopilot.decide.notes import render_labbook, render_notes
from autopilot.decide.records import (
    AdvisorContext,
    ChangeEffect,
    Finding,
    GuardVerdict,
    KnobTrend,
    NoiseBand,
    Proposal,
    RunRecord,
)
from autopilot.decide.sanity import best_of, is_suspect, objective_of, record_score, trusted_best
from autopilot.decide.trends import knob_trends, noise_band
from autopilot.errors import AutopilotError
from autopilot.space import SearchSpace


@dataclass
class Decision:
    findings: list[Finding]
    trends: list[KnobTrend]
    noise_band: float | None  # the measured band (from seed repeats); None while not yet measured
    proposal: Proposal | None  # the accepted (repaired) proposal; None if every advisor was rejected
    verdict: GuardVerdict | None  # the guard's verdict on `proposal` (its checks feed the notes)
    advisor_used: str | None
    rejected: list[tuple[str, GuardVerdict]] = field(default_factory=list)  # (advisor, verdict) refused on the way
    notes_md: str = ""  # runs/<run_id>/notes.md
    labbook_md: str = ""  # the section appended to journal/labbook.md
    noise: NoiseBand | None = None  # the band in force (measured or assumed) and how it was obtained
    effect: ChangeEffect | None = None  # what the latest run's change did, and against which comparison
    proposed: dict[str, Proposal] = field(default_factory=dict)  # advisor -> its proposal as given, before repairs


def _base_record(history: list[RunRecord]) -> RunRecord | None:
    """The run whose config a proposal changes: the latest, or the latest that has a config."""
    return next((r for r in reversed(history) if r.config is not None), None)


def _fallback(ctx: AdvisorContext, base: RunRecord) -> Proposal:
    """A seed repeat of the best (else the latest) config, fresh: the most conservative informative run."""
    target = ctx.best if ctx.best is not None and ctx.best.config is not None else base
    changes, why = seed_repeat(ctx, target)
    mode, src, _ = choose_resume(ctx, fresh=True)
    return Proposal(advisor="fallback", changes=changes, resume_mode=mode, resume_from=src,  # type: ignore[arg-type]
                    save_strategy=save_strategy(ctx), seed_repeat=True,  # type: ignore[arg-type]
                    trust_region_override=f"seed repeat of run {target.run_id}" if len(changes) > 1 else "",
                    headline=f"seed repeat of {target.run_id}", rationale=[why, "every advisor's proposal was rejected"],
                    expected_effect="a second sample of a known config: measures the noise band",
                    next_steps=["review the rejected proposals' reasons in Checks"])


def advisor_seed(history: list[RunRecord]) -> int:
    """The seed an advisor samples with: the ledger's first train.seed, so that independent workspaces (a
    user's parallel sessions, a benchmark's seeds) explore independently, and the run count, so that each
    decision of one ledger draws afresh while a re-analysis of the same ledger draws the same."""
    first = next((r.config.train.seed for r in history if r.config is not None), 0)
    return (int(first) * 1_000_003 + len(history)) % 2**31


def analyse_and_propose(
    history: list[RunRecord],
    *,
    advisor: str = "rules",
    space: SearchSpace | None = None,
    sps: float | None = None,
    remaining_runs: int | None = None,
    remaining_seconds: float | None = None,
    repro_command: str = "",
    best: RunRecord | None = None,
    baseline: RunRecord | None = None,
    seed: int = 0,
    state_dir: str | None = None,
) -> Decision:
    """`history` is every run of the ledger, oldest first; the run to analyse is `history[-1]`.
    `state_dir`: an existing folder where advisors may keep state between calls (AdvisorContext.state_dir)."""
    if not history:
        raise ValueError("analyse_and_propose needs at least one run in the history")
    get_advisor(advisor)  # an unknown name is a ConfigError now, not a silent fallback later
    base = _base_record(history)
    objective = objective_of(history)
    # `best` is the runner's pointer (runs/best.json, models/best.pt); None means "derive it from the
    # ledger". A suspect pointer (a glitched score promoted by an older loop) is never compared with
    # nor resumed from; the trusted best of the ledger stands in for comparisons.
    pointer = best if best is not None else best_of(history, objective)
    trusted = trusted_best(history, objective, pointer)
    noise = noise_band(history, objective, reference=record_score(trusted, objective) if trusted else None)
    findings = diagnose(history, best=trusted, noise=noise, objective=objective)
    if space is None and base is not None:
        from autopilot.config.load import config_space

        space = config_space(base.config)  # type: ignore[arg-type]
    trends = knob_trends(history, space or {}, objective, anchor=trusted, band=noise.value)
    effect = change_effect(history, objective, noise.value, space or {})
    decision = Decision(findings=findings, trends=trends, noise_band=noise.value if noise.measured else None,
                        proposal=None, verdict=None, advisor_used=None, noise=noise, effect=effect)
    if base is not None:
        ctx = AdvisorContext(history=history, findings=findings, trends=trends, space=space or {},
                             base_config=base.config, best=trusted,
                             best_resumable=pointer is not None and not is_suspect(pointer), noise_band=noise.value, noise=noise,
                             objective=objective, sps=sps, remaining_runs=remaining_runs,
                             remaining_seconds=remaining_seconds, seed=seed, effect=effect, state_dir=state_dir)
        _advise(decision, ctx, advisor, history, pointer)
    decision.notes_md = render_notes(decision, history, best=trusted, baseline=baseline,
                                     repro_command=repro_command, objective=objective)
    decision.labbook_md = render_labbook(decision, history, best=trusted, objective=objective)
    return decision


def _advise(decision: Decision, ctx: AdvisorContext, advisor: str, history: list[RunRecord],
            best_pointer: RunRecord | None) -> None:
    """Ask `advisor`, then `rules`, then `constant`, then the fallback; the first the guard accepts wins."""
    # `constant` (keep the config, continue) is the null hypothesis: when every advisor is refused, more
    # training of what runs is a better use of the run than a fresh seed repeat (the last resort).
    names = [advisor] + [n for n in ("rules", "constant") if n != advisor]
    attempts: list[tuple[str, Proposal | None, str]] = []
    for name in names:
        chosen = None
        try:
            chosen = get_advisor(name)
            attempts.append((name, chosen.propose(ctx.model_copy()), ""))
        except AutopilotError as exc:
            attempts.append((name, None, f"advisor {name} failed: {exc}"))
        if _screened(decision, attempts[-1], chosen, ctx.space):
            continue
        if _judge(decision, ctx, attempts[-1], history, best_pointer):
            return
    _judge(decision, ctx, ("fallback", _fallback(ctx, _base_record(history)), ""),  # type: ignore[arg-type]
           history, best_pointer)


def _screened(decision: Decision, attempt: tuple[str, Proposal | None, str], chosen: object,
              space: SearchSpace) -> bool:
    """Keep what an advisor proposed, before any repair (the notes show it); refuse what an outside
    (untrusted) advisor may never do before the guard even looks. True when refused here."""
    name, proposal, _ = attempt
    if proposal is None:
        return False
    decision.proposed[name] = proposal.model_copy(deep=True)
    reasons = screen(proposal, space) if getattr(chosen, "untrusted", False) else []
    if reasons:
        decision.rejected.append((name, GuardVerdict(accepted=False, proposal=proposal, reasons=reasons,
                                                     checks=[Check("outside advisor", "fail", reasons[0], reasons)])))
    return bool(reasons)


def _judge(decision: Decision, ctx: AdvisorContext, attempt: tuple[str, Proposal | None, str],
           history: list[RunRecord], best_pointer: RunRecord | None) -> bool:
    name, proposal, error = attempt
    if proposal is None:
        decision.rejected.append((name, GuardVerdict(accepted=False, proposal=Proposal(advisor=name),
                                                     reasons=[error])))
        return False
    # The resume check sees the pointer the runner would follow, so a suspect best is refused there.
    verdict = guard(proposal, base=ctx.base_config, history=history, space=ctx.space, sps=ctx.sps,
                    remaining_seconds=ctx.remaining_seconds, best=best_pointer)
    if not verdict.accepted:
        decision.rejected.append((name, verdict))
        return False
    decision.proposal, decision.verdict, decision.advisor_used = verdict.proposal, verdict, name
    return True
