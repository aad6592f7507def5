"""What the outside advisors (`llm`, `command`) share: reading an untrusted answer into a `Proposal`,
quoting its prose as the source's own words, and the screen every untrusted proposal passes before the
guard.

An answer is untrusted text. Only the Proposal's fields are taken from it (`advisor` is set here, any
other key is dropped and counted); the prose (headline, rationale, expected effect, next steps) is
flattened to one line per item, clipped, and quoted as the source's theory, so a note never states the
model's numbers as its own and a model cannot forge a section of the note. Numbers in the notes come
from the ledger.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from autopilot.config.overrides import flatten
from autopilot.decide.advisors.base import Advisor
from autopilot.decide.digest import ANSWER_FIELDS
from autopilot.decide.records import Proposal
from autopilot.errors import AdvisorError
from autopilot.space import SearchSpace, fmt_num

QUOTE_LIMIT = 300  # characters kept of one quoted line
MAX_ITEMS = 6  # rationale / next-step lines kept
RESUME_SOURCES = ("latest", "best")
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n\s*```\s*$", re.S)


class ExternalAdvisor(Advisor):
    """An advisor whose proposals come from outside the project: the analysis screens them
    (`screen`) before the guard sees them, and the notes quote them."""

    untrusted = True


def _quote(text: Any, limit: int = QUOTE_LIMIT) -> str:
    line = " ".join(str(text).split()).replace("“", '"').replace("”", '"')
    return line if len(line) <= limit else line[: limit - 1] + "…"


def extract_json(text: str) -> Any:
    """The JSON object in an answer: the whole text, a fenced block, or the outermost {...} span."""
    stripped = text.strip()
    m = _FENCE.match(stripped)
    candidates = [stripped] + ([m.group(1)] if m else [])
    start, end = stripped.find("{"), stripped.rfind("}")
    if 0 <= start < end:
        candidates.append(stripped[start: end + 1])
    error = "no JSON object in the answer"
    for c in candidates:
        try:
            return json.loads(c)
        except (ValueError, RecursionError) as exc:
            error = f"{type(exc).__name__}: {str(exc)[:120]}"
    raise AdvisorError(f"the answer is not JSON ({error}); it starts {_quote(stripped, 120)!r}")


def parse_answer(text: str, *, advisor: str, source: str) -> Proposal:
    """Validate an answer against the Proposal model; the prose is quoted as `source`'s words."""
    data = extract_json(text)
    if not isinstance(data, dict):
        raise AdvisorError(f"the answer is JSON {type(data).__name__}, not an object with the Proposal's fields "
                           f"({', '.join(ANSWER_FIELDS)})")
    fields = {k: data[k] for k in ANSWER_FIELDS if k in data}
    ignored = sorted(str(k) for k in data if k not in ANSWER_FIELDS)
    changes = fields.get("changes", {})
    if isinstance(changes, dict):
        fields["changes"] = flatten(changes)  # {"train": {"ent_coef": 0.02}} means train.ent_coef
    for key in ("rationale", "next_steps"):
        if isinstance(fields.get(key), str):
            fields[key] = [fields[key]]
    try:
        proposal = Proposal.model_validate({**fields, "advisor": advisor})
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:4])
        raise AdvisorError(f"the answer does not fit the Proposal schema ({bad})") from None
    theory = [f"{source}'s theory (quoted, not checked): “{_quote(r)}”" for r in proposal.rationale[:MAX_ITEMS]]
    if ignored:
        theory.append(f"ignored field(s) of the answer: {_quote(', '.join(ignored), 120)}")
    if proposal.trust_region_override:  # a reason is text anyone can write: no wider steps on its say-so
        theory.append(f"its trust_region_override (“{_quote(proposal.trust_region_override, 120)}”) was dropped: "
                      f"an outside advisor moves each knob within the trust region")
    return proposal.model_copy(update={
        "headline": f"{source}: “{_quote(proposal.headline, 120)}”" if proposal.headline else f"{source} proposal",
        "rationale": theory or [f"{source} gave no rationale"],
        "expected_effect": f"{source} expects: “{_quote(proposal.expected_effect)}”" if proposal.expected_effect else "",
        "next_steps": [f"{source} suggests: “{_quote(s)}”" for s in proposal.next_steps[:MAX_ITEMS]],
        "trust_region_override": "",
    })


def screen(proposal: Proposal, space: SearchSpace) -> list[str]:
    """What an untrusted source may never do, whatever the guard would repair: name a file to resume
    from, set any autopilot.* key other than the resume policy, or give a value outside its range (the
    guard clamps a trusted advisor's slip; an outside advisor's value is refused, not rewritten into
    something it did not propose). One reason per violation."""
    reasons = []
    for key, value in proposal.changes.items():
        spec = space.get(key)
        if spec is not None and not spec.contains(value) and value != "auto":
            reasons.append(f"{key}={_quote(fmt_num(value), 60)} is outside its range {spec.describe()} (rule: an outside "
                           f"advisor's values must lie inside their ranges; they are not clamped); use a value in "
                           f"{spec.describe()}")
    sources = [("resume_from", proposal.resume_from)]
    if "autopilot.resume_from" in proposal.changes:
        sources.append(("autopilot.resume_from", proposal.changes["autopilot.resume_from"]))
    for key, value in sources:
        if value not in RESUME_SOURCES:
            reasons.append(f"{key}={_quote(value, 120)!r} names a path (rule: an outside advisor resumes only from "
                           f"{' or '.join(RESUME_SOURCES)}, never from a file it names); use latest or best")
    allowed = ("autopilot.resume_mode", "autopilot.resume_from", "autopilot.save_strategy")
    for key in proposal.changes:
        if key.startswith("autopilot.") and key not in allowed:
            reasons.append(f"{key}={_quote(proposal.changes[key], 120)} may not be set by an outside advisor (rule: "
                           f"autopilot.* keys choose programs, servers and budgets, not training); propose "
                           f"train.*/env.* knobs")
    return reasons


__all__ = ["ExternalAdvisor", "extract_json", "parse_answer", "screen"]
