"""After a run: diagnose → trends → advise → guard (with fallback) → notes. The runner's one call.

(Contract stub: the implementation fills `analyse_and_propose`; the signature and `Decision` are fixed.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autopilot.loop.records import Finding, GuardVerdict, KnobTrend, Proposal, RunRecord
from autopilot.space import SearchSpace


@dataclass
class Decision:
    findings: list[Finding]
    trends: list[KnobTrend]
    noise_band: float | None
    proposal: Proposal | None  # the accepted (repaired) proposal; None if every advisor was rejected
    verdict: GuardVerdict | None  # the guard's verdict on `proposal` (its checks feed the notes)
    advisor_used: str | None
    rejected: list[tuple[str, GuardVerdict]] = field(default_factory=list)  # (advisor, verdict) refused on the way
    notes_md: str = ""  # runs/<run_id>/notes.md
    labbook_md: str = ""  # the section appended to journal/labbook.md


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
) -> Decision:
    """`history` is every run of the ledger, oldest first; the run to analyse is `history[-1]`."""
    raise NotImplementedError
