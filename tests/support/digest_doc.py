"""Writes docs/llm_digest.md: the digest an outside advisor receives for the seeds' two situations,
built from the same ledger fixtures the tests use (tests/support/ledgers.py).

    python tests/support/digest_doc.py            # rewrite docs/llm_digest.md
    python tests/support/digest_doc.py --check    # exit 1 if the file is stale

tests/decide/test_digest.py runs the check, so the page cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ledgers import ent_coef_ledger, seeds_ledger  # noqa: E402

from autopilot.decide.advisors import Advisor, get_advisor, register_advisor  # noqa: E402
from autopilot.decide.analysis import analyse_and_propose  # noqa: E402
from autopilot.decide.digest import MAX_CHARS, render_digest  # noqa: E402
from autopilot.decide.records import AdvisorContext  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "llm_digest.md"
SPS = 125_000.0  # the seeds' measured throughput, so the runtime line is filled in


class CaptureAdvisor(Advisor):
    """Keeps the context the analysis hands an advisor (what an outside advisor's digest is made of)
    and answers like `rules`."""

    seen: list[AdvisorContext] = []

    def propose(self, ctx):
        CaptureAdvisor.seen.append(ctx)
        return get_advisor("rules").propose(ctx)


register_advisor("digest-capture", CaptureAdvisor)


def context_of(history, sps: float | None = SPS) -> AdvisorContext:
    CaptureAdvisor.seen.clear()
    analyse_and_propose(history, advisor="digest-capture", sps=sps)
    return CaptureAdvisor.seen[-1]


SITUATIONS = (
    ("Timid updates with a diffuse policy",
     "The seeds' first note: approx_kl and clipfrac near zero, entropy 32.7 over 4 action dimensions, "
     "success_rate 0, and two earlier runs whose \"success_rate\" (1.26e3, 9.38) breaks its own definition.",
     seeds_ledger),
    ("An ent_coef ledger whose best is 0.01",
     "The seeds' second note: ent_coef 0.01 → 0.31, 0.12 → 0.12, 0.06 → 0.00 (latest).",
     ent_coef_ledger),
)


def render_doc() -> str:
    out = ["# What the model sees: the digest",
           "",
           "`--advisor llm` sends this text as the user message (after a short system prompt), and "
           "`--advisor command` writes it to the command's stdin (and to the file named by `{digest}`). "
           f"It is built by `autopilot.decide.digest.render_digest` from the ledger alone and stays under "
           f"{MAX_CHARS:,} characters whatever the ledger's length (a long ledger lists its first run, its best "
           "run and the most recent ones). The two digests below are generated from the test fixtures "
           "that reproduce the seeds' situations (`python tests/support/digest_doc.py`).",
           ""]
    for title, what, ledger in SITUATIONS:
        text = render_digest(context_of(ledger()))
        out += [f"## {title}", "", what, "", f"{len(text):,} characters:", "", "````text", text.rstrip(), "````", ""]
    return "\n".join(out)


if __name__ == "__main__":
    doc = render_doc()
    if "--check" in sys.argv:
        stale = not DOC.exists() or DOC.read_text("utf-8") != doc
        print(f"{DOC.name} is {'stale: run python tests/support/digest_doc.py' if stale else 'current'}")
        sys.exit(1 if stale else 0)
    DOC.write_text(doc, "utf-8")
    print(f"wrote {DOC}")
