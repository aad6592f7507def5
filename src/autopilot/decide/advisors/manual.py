"""`--advisor manual`: a person decides. The advisor itself proposes what the default advisor (`rules`)
would, so there is always a guarded proposal to approve; the loop stages it and waits for a person to
approve it (`autopilot approve`), replace it (`autopilot apply FILE`, or an edit of
`proposals/next_config.json`) or veto it (`autopilot approve --veto`). The waiting is the loop's
(`autopilot.workspace.approval`); this module does no I/O.
"""

from __future__ import annotations

from autopilot.decide.advisors import get_advisor, register_advisor
from autopilot.decide.advisors.base import Advisor
from autopilot.decide.records import AdvisorContext, Proposal

DEFAULT_ADVISOR = "rules"


@register_advisor("manual")
class ManualAdvisor(Advisor):
    def propose(self, ctx: AdvisorContext) -> Proposal:
        draft = get_advisor(DEFAULT_ADVISOR).propose(ctx)
        return draft.model_copy(update={
            "advisor": self.name or "manual",
            "headline": f"for a person to approve: {draft.headline}" if draft.headline else "for a person to approve",
            "rationale": [*draft.rationale, f"drafted by the {DEFAULT_ADVISOR} advisor; the loop waits for a person "
                                            f"to approve, edit or veto it"]})


__all__ = ["DEFAULT_ADVISOR", "ManualAdvisor"]
