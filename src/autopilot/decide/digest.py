"""The digest an outside advisor (a language model, an agent command) reads: compact and size-bounded.

It holds what a careful person would look at before proposing the next config, and nothing else: the
ledger (one line per run, configs as diffs against the previous run, the objective, suspect runs
marked with why), the noise band and how it was obtained, the latest run's trainer statistics, the
findings with their evidence and suggested moves, the trends per knob, the tunable keys with their
ranges and this step's trust region, the invariants, and the answer's JSON schema.

Pure: it reads an `AdvisorContext`, never a file. Every number in it comes from the ledger. A long
ledger keeps its first run, its best run and the most recent ones; the rest are counted, not listed,
so the text stays under `max_chars` whatever the ledger's length.
"""

from __future__ import annotations

import json
from typing import Any

from autopilot.config.invariants import derive_batch
from autopilot.config.overrides import flatten
from autopilot.decide.guard import TRUST
from autopilot.decide.notes import changes_of
from autopilot.decide.records import AdvisorContext, Proposal, RunRecord
from autopilot.decide.sanity import is_suspect, record_score, suspect_reasons
from autopilot.decide.trends import trend_line
from autopilot.space import fmt_num

MAX_CHARS = 8_000  # the whole digest; a 50-run ledger stays under it (tests/decide/test_digest.py)
RECENT_RUNS = 12  # ledger lines before shrinking to fit
MIN_RECENT_RUNS = 3
TEXT_LIMIT = 240  # characters of one theory or change list

# The answer's fields: everything a Proposal carries except `advisor`, which the loop sets itself.
ANSWER_FIELDS = ("changes", "resume_mode", "resume_from", "save_strategy", "headline", "rationale",
                 "expected_effect", "next_steps", "seed_repeat", "trust_region_override")

INVARIANTS = (
    "vec.num_envs % vec.num_workers == 0",
    "batch_size = agents × bptt_horizon (derived: leave train.batch_size and train.minibatch_size at \"auto\")",
    "minibatch_size ≤ batch_size, batch_size % minibatch_size == 0, minibatch_size % bptt_horizon == 0",
    "total_timesteps ≥ batch_size; every value inside its range below; unknown keys are errors",
    "estimated wall time (total_timesteps / SPS) fits autopilot.max_run_seconds",
    "resume only from latest or best, never from a suspect or broken run; no accidental exact repeat of a config",
)


def answer_schema() -> dict[str, Any]:
    """The JSON schema of the answer (the Proposal model without `advisor`), for structured output."""
    schema = Proposal.model_json_schema()
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k in ANSWER_FIELDS}
    schema["properties"]["changes"]["description"] = "dotted key -> new value, e.g. {\"train.ent_coef\": 0.02}"
    schema["properties"]["resume_from"] = {"type": "string", "enum": ["latest", "best"], "default": "latest"}
    schema["required"] = ["changes", "headline", "rationale"]
    schema.pop("title", None)
    return schema


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ledger_rows(ctx: AdvisorContext) -> list[int]:
    """Indices of the runs listed: the first, the best, and the most recent ones."""
    n = len(ctx.history)
    keep = set(range(max(0, n - RECENT_RUNS), n)) | {0}
    if ctx.best is not None:
        keep |= {i for i, r in enumerate(ctx.history) if r.run_id == ctx.best.run_id}
    return sorted(keep)


def _run_line(ctx: AdvisorContext, i: int) -> str:
    rec = ctx.history[i]
    prev = ctx.history[i - 1] if i > 0 else None
    score = record_score(rec, ctx.objective)
    marks = []
    if ctx.best is not None and rec.run_id == ctx.best.run_id:
        marks.append("BEST")
    if is_suspect(rec):
        marks.append("SUSPECT: " + _clip("; ".join(suspect_reasons(rec)), 120))
    if i == len(ctx.history) - 1:
        marks.append("LATEST")
    if prev is None:
        changes = "first run listed"
    else:
        changes = _clip("; ".join(c for c in changes_of(rec, prev) if not c.startswith("autopilot.advisor."))
                        or "no knob changed")
    return (f"{i + 1}. {rec.run_id} {rec.status} {ctx.objective}={fmt_num(_round(score))}"
            + (f" [{', '.join(marks)}]" if marks else "") + f" | {changes}")


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _ledger(ctx: AdvisorContext, rows: list[int]) -> list[str]:
    n = len(ctx.history)
    out = [f"## Ledger ({n} run(s), oldest first; changes are against the previous run)"]
    last = -1
    for i in rows:
        if i > last + 1:
            out.append(f"… {i - last - 1} run(s) not listed …")
        out.append(_run_line(ctx, i))
        last = i
    band = ctx.noise.text() if ctx.noise is not None else (
        f"±{ctx.noise_band:.4g}" if ctx.noise_band is not None else "unknown")
    out.append(f"Noise band: {band}; a score difference counts only beyond it.")
    return out


def _latest(ctx: AdvisorContext) -> list[str]:
    rec: RunRecord = ctx.history[-1]
    s = rec.trainer_summary
    out = [f"## Latest run {rec.run_id}"]
    if s is None:
        return out + [f"- no trainer summary: status {rec.status}"]
    out.append("- metrics: " + ", ".join(f"{k}={fmt_num(_round(v) if isinstance(v, float) else v)}"
                                         for k, v in s.metrics.items()))
    out.append("- trainer: " + ", ".join(f"{k}={fmt_num(v)}" for k, v in s.trainer.items()))
    if s.throughput.sps:
        out.append(f"- throughput: {fmt_num(round(float(s.throughput.sps)))} SPS, "
                   f"{fmt_num(s.throughput.agent_steps)} agent steps")
    return out


def _findings(ctx: AdvisorContext) -> list[str]:
    out = ["## Findings on the latest run (from the rules; evidence is measured)"]
    if not ctx.findings:
        return out + ["- none: every statistic is inside its threshold"]
    for f in ctx.findings:
        out.append(f"- [{f.severity}] {f.code}: {_clip(f.evidence_text())}")
        if f.theory:
            out.append(f"  theory: {_clip(f.theory)}")
        if f.moves:
            out.append("  moves: " + "; ".join(
                f"{m.key} {m.direction}" + (f" ×{fmt_num(m.factor)}" if m.factor else "")
                + (f" → {fmt_num(m.value)}" if m.value is not None else "") for m in f.moves))
    return out


def _trends(ctx: AdvisorContext) -> list[str]:
    band = ctx.noise_band or 0.0
    lines = [f"- {_clip(trend_line(t, band), 400)}" for t in ctx.trends]
    return ["## Trends (value → score)"] + (lines or ["- no tunable knob has taken two values yet"])


def _space(ctx: AdvisorContext) -> list[str]:
    flat = flatten(ctx.base_config.model_dump(exclude={"sweep"}))
    out = ["## Tunable keys (range; current value; this step's trust region; prior: standard [typical range])"]
    for key, spec in sorted(ctx.space.items()):
        if not spec.tunable:
            continue
        now = flat.get(key)
        span = TRUST.interval(spec, now)
        region = f"; step within [{fmt_num(spec.clamp(span[0]))}, {fmt_num(spec.clamp(span[1]))}]" if span else ""
        prior = (f"; prior {fmt_num(spec.prior.center)} [{fmt_num(spec.prior.low)}, {fmt_num(spec.prior.high)}]"
                 if spec.prior is not None else "")
        out.append(f"- {key}: {spec.describe()}; now {fmt_num(now)}{region}{prior}")
    out.append(f"- also allowed: train.seed (now {ctx.base_config.train.seed}; for seed repeats), "
               f"train.total_timesteps (now {fmt_num(ctx.base_config.train.total_timesteps)})")
    out.append("- anything else (autopilot.*, topology, paths, the trainer command) is refused")
    return out


def _invariants(ctx: AdvisorContext) -> list[str]:
    cfg = ctx.base_config
    budget = cfg.autopilot.max_run_seconds
    sps = f"{fmt_num(round(ctx.sps))} SPS" if ctx.sps else "unknown SPS"
    out = ["## Invariants (checked by the guard; a violation is refused)"] + [f"- {r}" for r in INVARIANTS]
    out.append(f"- now: batch {derive_batch(cfg)}; max_run_seconds {fmt_num(budget)} at {sps}"
               + (f"; {fmt_num(round(ctx.remaining_seconds))}s left in the session"
                  if ctx.remaining_seconds is not None else "")
               + (f"; {ctx.remaining_runs} run(s) left" if ctx.remaining_runs is not None else ""))
    return out


def _answer() -> list[str]:
    return ["## Answer",
            "Reply with one JSON object only, matching this schema (changes apply to the latest run's config):",
            json.dumps(answer_schema(), separators=(",", ":"), sort_keys=True)]


def render_digest(ctx: AdvisorContext, *, max_chars: int = MAX_CHARS) -> str:
    """The digest as text, under `max_chars` (fewer recent runs listed until it fits)."""
    head = [f"# autopilot digest: objective {ctx.objective} (higher is better)"]
    middle = ([""] + _latest(ctx) + [""] + _findings(ctx) + [""] + _trends(ctx) + [""] + _space(ctx) + [""]
              + _invariants(ctx) + [""])
    answer = "\n".join(_answer()) + "\n"
    rows = _ledger_rows(ctx)
    while True:
        body = "\n".join(head + [""] + _ledger(ctx, rows) + middle) + "\n"
        recent = [i for i in rows if i != 0 and (ctx.best is None or ctx.history[i].run_id != ctx.best.run_id)]
        if len(body) + len(answer) <= max_chars or len(recent) <= MIN_RECENT_RUNS:
            break
        rows.remove(recent[0])
    room = max_chars - len(answer)
    if len(body) > room:  # still too long (huge findings): cut the middle, never the answer's schema
        body = body[: max(0, room - 2)] + "…\n"
    return body + answer


__all__ = ["ANSWER_FIELDS", "MAX_CHARS", "answer_schema", "render_digest"]
