"""The lab-notebook entry (`runs/<run_id>/notes.md`) and its labbook section, in the seeds' shape.

Title, Config, Key metrics (vs previous and vs best), Context vs recent runs (noise band, recent runs,
suspect runs, trend per knob), Diagnosis / Theory, Action taken, Rationale, Checks, Next steps, Repro
notes. Numbers, not adjectives.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from autopilot.config.invariants import derive_batch, resolve_config
from autopilot.config.overrides import diff_configs, flatten
from autopilot.decide.records import RunRecord
from autopilot.decide.sanity import is_suspect, record_score, suspect_reasons, trusted_score
from autopilot.decide.trends import BOOKKEEPING, trend_line
from autopilot.space import fmt_num

if TYPE_CHECKING:
    from autopilot.decide.analysis import Decision

RECENT = 6  # runs listed under "Context vs recent runs"
TRAIN_KEYS = ("learning_rate", "ent_coef", "update_epochs", "clip_coef", "gamma", "gae_lambda", "vf_coef",
              "max_grad_norm", "total_timesteps")


def _n(x: float | int | None, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, float) and abs(x) >= 1000:
        return f"{x:,.0f}"
    if isinstance(x, int) and abs(x) >= 10000:
        return f"{x:,}"
    return fmt_num(round(x, digits) if isinstance(x, float) and abs(x) >= 1e-3 else x)


def _delta(new: float | None, old: float | None) -> str:
    if new is None or old is None or not (math.isfinite(new) and math.isfinite(old)):
        return "n/a"
    return f"{new - old:+.4g}"


def changes_of(rec: RunRecord, prev: RunRecord | None) -> list[str]:
    """`key: old -> new` for what this run changed (the runner's record, else diffed from the previous)."""
    if rec.loop_summary is not None and rec.loop_summary.changes:
        return list(rec.loop_summary.changes)
    if prev is None or prev.config is None or rec.config is None:
        return []
    return [f"{c.key}: {_n(c.old)} -> {_n(c.new)}" for c in diff_configs(prev.config, rec.config)
            if c.key not in BOOKKEEPING]


def _outcome(rec: RunRecord, best: RunRecord | None, objective: str, band: float) -> str:
    if is_suspect(rec):
        return f"SUSPECT ({suspect_reasons(rec)[0]})"
    if rec.status not in ("completed", "interrupted"):
        return f"{rec.status}"
    score = trusted_score(rec, objective)
    if score is None:
        return f"{objective} not reported"
    best_score = trusted_score(best, objective) if best is not None else None
    text = f"{objective} {_n(score)}"
    if best is None or best_score is None or best.run_id == rec.run_id:
        return text + " (best so far)"
    gap = score - best_score
    verdict = ("regressed beyond" if gap < -band else "above" if gap > band else "within")
    return f"{text} vs best {_n(best_score)} ({best.run_id}): {verdict} the noise band ±{band:.3g}"


def headline(rec: RunRecord, prev: RunRecord | None, best: RunRecord | None, objective: str, band: float) -> str:
    changes = []
    for c in changes_of(rec, prev):
        key, _, rest = c.partition(": ")
        if not key.startswith("autopilot."):
            changes.append(f"{key.split('.')[-1]} {rest.replace(' -> ', '→')}")
    what = "; ".join(changes[:3]) + (f" (+{len(changes) - 3} more)" if len(changes) > 3 else "")
    return (what + "; " if what else "") + _outcome(rec, best, objective, band)


# -- sections ---------------------------------------------------------------------------------------
def _config(rec: RunRecord, prev: RunRecord | None) -> list[str]:
    c = rec.config
    if c is None:
        return ["## Config", "- no config.json recorded for this run"]
    env = "×".join(str(f) for f in derive_batch(c).factors[:-2])  # agents per env object (backend's count)
    resolved = resolve_config(c)
    t = c.train
    prev_t = prev.config.train if prev is not None and prev.config is not None else None
    knobs = []
    for k in TRAIN_KEYS:
        v = getattr(t, k)
        pv = getattr(prev_t, k) if prev_t is not None else v
        knobs.append(f"{k} {_n(v)}" + (f" (prev {_n(pv)})" if pv != v else ""))
    resume = c.autopilot.resume_mode if c.autopilot.resume_mode == "fresh" else f"continue from {c.autopilot.resume_from}"
    ckpt = rec.trainer_summary.checkpoint.resumed_from if rec.trainer_summary is not None else None
    changes = changes_of(rec, prev)
    return [
        "## Config",
        f"- Device/topology: {t.device}; vec {c.vec.num_workers}/{c.vec.num_envs}, env {env}, bptt {t.bptt_horizon}"
        f" ({c.env_name}, backend {c.backend})",
        f"- Derived batch: {derive_batch(c)}; minibatch {int(resolved.train.minibatch_size):,} "
        f"(max_minibatch {t.max_minibatch_size:,})",
        f"- Train: {', '.join(knobs)}; seed {t.seed}",
        f"- Changed vs previous run{f' ({prev.run_id})' if prev else ''}: " + ("; ".join(changes) or "nothing"),
        f"- Resume: {resume}" + (f" ({ckpt})" if ckpt else "") + f"; save_strategy {c.autopilot.save_strategy}",
    ]


def _metrics(rec: RunRecord, prev: RunRecord | None, best: RunRecord | None, objective: str) -> list[str]:
    s = rec.trainer_summary
    out = ["## Key metrics (trainer_summary.json, tail window)"]
    if s is None:
        err = rec.loop_summary.error if rec.loop_summary else None
        return out + [f"- no trainer_summary.json: status {rec.status}" + (f"; error: {err}" if err else "")]
    ps = prev.trainer_summary if prev is not None else None
    prev_suspect = prev is not None and is_suspect(prev)
    bs = best.trainer_summary if best is not None and best.run_id != rec.run_id else None
    names = [objective] + [k for k in s.metrics if k != objective]
    for name in names:
        v = s.metric(name)
        parts = []
        if ps is not None:
            # A suspect previous run's numbers are shown, never used as a baseline for a delta.
            delta = "suspect run, no delta" if prev_suspect else _delta(v, ps.metric(name))
            parts.append(f"prev {_n(ps.metric(name))}, {delta}")
        if bs is not None:
            parts.append(f"best {best.run_id} {_n(bs.metric(name))}, {_delta(v, bs.metric(name))}")  # type: ignore[union-attr]
        tag = " (objective)" if name == objective else ""
        out.append(f"- {name}{tag}: {_n(v)}" + (f" ({'; '.join(parts)})" if parts else ""))
    th = s.throughput
    sps_prev = ps.throughput.sps if ps is not None else None
    change = f" ({(th.sps / sps_prev - 1):+.1%} vs prev {_n(float(sps_prev))})" if th.sps and sps_prev else ""
    out.append(f"- Throughput: SPS {_n(th.sps and float(th.sps))}{change}; agent_steps {_n(th.agent_steps)}; "
               f"epoch {_n(th.epoch)}; wall {_n(th.wall_s)}s")
    out.append("- Trainer stats (tail): " + "; ".join(f"{k} {_n(v, 5)}" for k, v in s.trainer.items()))
    u = s.utilisation
    out.append(f"- Utilisation: CPU {_pct(u.cpu_pct)}; GPU {_pct(u.gpu_pct)}; DRAM {_pct(u.dram_pct)}; "
               f"VRAM {_pct(u.vram_pct)}")
    if s.eval is not None:
        out.append(f"- Eval: {_n(s.eval.episodes)} episodes; success_rate {_n(s.eval.success_rate)}; "
                   f"mean_reward {_n(s.eval.mean_reward)}")
    return out


def _pct(v: float | int | None) -> str:
    return "n/a" if v is None else f"{v:.0f}%"


def _context(decision: Decision, history: list[RunRecord], best: RunRecord | None, objective: str) -> list[str]:
    noise = decision.noise
    out = ["## Context vs recent runs",
           f"- Noise band: {noise.text() if noise else 'n/a'}; a difference counts only beyond it"]
    tail = history[-RECENT:]
    start = len(history) - len(tail)
    for i, rec in enumerate(tail, start):
        prev = history[i - 1] if i > 0 else None
        score = record_score(rec, objective)
        marks = [m for m, on in (("best", best is not None and rec.run_id == best.run_id),
                                 ("suspect", is_suspect(rec)), ("this run", rec is history[-1])) if on]
        changes = "; ".join(changes_of(rec, prev)) or ("first run" if prev is None else "no knob changed")
        out.append(f"- {rec.run_id}: {rec.status}, {objective} {_n(score)}"
                   + (f" [{', '.join(marks)}]" if marks else "") + f" — {changes}")
    suspects = [r for r in history if is_suspect(r)]
    for rec in suspects:
        out.append(f"- Suspect, excluded from best, trends and the band: {rec.run_id}: "
                   + "; ".join(suspect_reasons(rec)))
    band = noise.value if noise else 0.0
    if decision.effect is not None:
        out.append(f"- Last change: {decision.effect.detail}")
    if decision.trends:
        out.append("- Trends (runs differing from the best mainly in one knob; value → score; a direction is "
                   "claimed only from runs that began from the same point):")
        out += [f"  - {trend_line(t, band)}" for t in decision.trends]
    else:
        out.append("- Trends: no tunable knob has taken two values across trusted runs yet")
    return out


def _diagnosis(decision: Decision) -> list[str]:
    out = ["## Diagnosis / Theory"]
    if not decision.findings:
        return out + ["- no finding fired: every statistic is inside the thresholds of diagnose.Thresholds"]
    for f in decision.findings:
        out.append(f"- [{f.severity}] {f.code}: {f.evidence_text()}")
        if f.theory:
            out.append(f"  - Theory: {f.theory}")
        for fact in f.assumed:
            out.append(f"  - Assumed (not in the ledger, so never a severe verdict): {fact}")
    return out


def _action(decision: Decision, base: RunRecord) -> list[str]:
    p = decision.proposal
    out = ["## Action taken (proposals/next_config.json)"]
    if p is None:
        why = ("every advisor's proposal was rejected (see Checks)" if decision.rejected
               else "no run in the ledger has a config to change")
        return out + [f"- no proposal: {why}; stage one by hand with `autopilot apply`"]
    cfg = decision.verdict.config if decision.verdict is not None else None
    out.append(f"- Advisor: {decision.advisor_used}" + (
        f" (after {', '.join(a for a, _ in decision.rejected)} was rejected)" if decision.rejected else ""))
    if cfg is not None and base.config is not None:
        changes = [str(c) for c in diff_configs(base.config, cfg)
                   if not c.key.startswith("autopilot.") and c.key not in ("train.batch_size", "train.minibatch_size")]
        out += [f"- {c}" for c in changes] or ["- no knob changed"]
        out.append(f"- Derived batch next run: {derive_batch(cfg)}; minibatch {int(cfg.train.minibatch_size):,}")
    else:
        out += [f"- {k}: {fmt_num(v)}" for k, v in p.changes.items()]
    src = "" if p.resume_mode == "fresh" else f" from {p.resume_from}"
    out.append(f"- Resume policy: {p.resume_mode}{src}; save_strategy {p.save_strategy}")
    if p.seed_repeat:
        out.append("- Seed repeat: deliberate; measures the noise band")
    if p.trust_region_override:
        out.append(f"- Trust region override: {p.trust_region_override}")
    return out


def _refused(decision: Decision, base: RunRecord) -> list[str]:
    """For each refused advisor: what it proposed (as given, before any repair), why it was refused, and
    what ran instead. An outside advisor's prose is already quoted as its own theory."""
    if not decision.rejected:
        return []
    flat = flatten(base.config.model_dump(exclude={"sweep"})) if base.config is not None else {}
    out = ["## Refused proposals (what was proposed, why it was refused, what ran instead)"]
    for name, verdict in decision.rejected:
        given = decision.proposed.get(name)
        if given is None:
            out.append(f"- {name}: no proposal; " + "; ".join(verdict.reasons))
            continue
        moves = [f"{k}: {fmt_num(flat.get(k))} -> {fmt_num(v)}" for k, v in given.changes.items()]
        src = "" if given.resume_mode == "fresh" else f" from {given.resume_from}"
        out.append(f"- {name} proposed: {'; '.join(moves) or 'no knob change'}; resume {given.resume_mode}{src}")
        if given.headline:
            out.append(f"  - headline: {given.headline}")
        out += [f"  - {r}" for r in given.rationale]
        out += [f"  - refused: {r}" for r in verdict.reasons]
    p = decision.proposal
    if p is None:
        out.append("- ran instead: nothing was accepted; the next run repeats the last config")
    else:
        moves = "; ".join(f"{k}: {fmt_num(flat.get(k))} -> {fmt_num(v)}" for k, v in p.changes.items())
        out.append(f"- ran instead: {decision.advisor_used}: {moves or 'no knob change'} (see Action taken)")
    return out + [""]


def refused_line(decision: Decision) -> str:
    """The labbook's one line: who was refused and why (first reason), what ran instead."""
    parts = [f"{name} ({(v.reasons or ['no reason'])[0][:160]})" for name, v in decision.rejected]
    return f"- Refused: {'; '.join(parts)}; ran {decision.advisor_used or 'nothing'} instead"


def _checks(decision: Decision) -> list[str]:
    out = ["## Checks"]
    v = decision.verdict
    if v is not None:
        out += [f"- {c.line()}" for c in v.checks]
        out += [f"- repaired: {r}" for r in v.repairs]
    for advisor, rej in decision.rejected:
        out.append(f"- ✗ rejected {advisor} proposal ({rej.proposal.headline or 'no headline'}):")
        out += [f"  - {r}" for r in rej.reasons]
    return out


def render_notes(decision: Decision, history: list[RunRecord], *, best: RunRecord | None,
                 baseline: RunRecord | None, repro_command: str, objective: str) -> str:
    rec = history[-1]
    prev = history[-2] if len(history) > 1 else None
    band = decision.noise.value if decision.noise else 0.0
    p = decision.proposal
    lines = [f"Run {rec.run_id} — {headline(rec, prev, best, objective, band)}", ""]
    if is_suspect(rec):
        lines += [f"SUSPECT: {'; '.join(suspect_reasons(rec))}. This run is never promoted to best, is left out "
                  "of trends and the noise band, and is never resumed from.", ""]
    lines += _config(rec, prev) + [""]
    lines += _metrics(rec, prev, best, objective)
    if baseline is not None and baseline.run_id not in (rec.run_id, getattr(best, "run_id", None)):
        b, s = record_score(baseline, objective), record_score(rec, objective)
        lines.append(f"- vs baseline {baseline.run_id}: {objective} {_n(b)} -> {_n(s)} ({_delta(s, b)})")
    lines += [""] + _context(decision, history, best, objective) + [""]
    base = next((r for r in reversed(history) if r.config is not None), rec)
    lines += _diagnosis(decision) + [""] + _action(decision, base) + [""] + _refused(decision, base)
    lines += ["## Rationale"] + ([f"- {r}" for r in p.rationale] + [f"- Expected effect: {p.expected_effect}"]
                                 if p is not None else ["- none: no proposal was accepted"])
    lines += [""] + _checks(decision) + [""]
    lines += ["## Next steps (if this stalls)"] + ([f"- {s}" for s in p.next_steps] if p and p.next_steps
                                                   else ["- repeat the best config with another seed"])
    lines += ["", "## Repro notes", f"- Command: {repro_command or 'n/a'}",
              f"- Config: {rec.run_dir / 'config.json'}; train.seed {rec.config.train.seed if rec.config else 'n/a'}"]
    if p is not None:
        lines.append(f"- Staged override: {json.dumps(p.as_override(), sort_keys=True)}")
    return "\n".join(lines) + "\n"


def render_labbook(decision: Decision, history: list[RunRecord], *, best: RunRecord | None, objective: str) -> str:
    rec = history[-1]
    prev = history[-2] if len(history) > 1 else None
    band = decision.noise.value if decision.noise else 0.0
    p = decision.proposal
    action = (", ".join(f"{k}: {fmt_num(v)}" for k, v in p.changes.items()) or "no knob change") if p else "none"
    resume = (f"{p.resume_mode}" + ("" if p.resume_mode == "fresh" else f" from {p.resume_from}")) if p else "n/a"
    return "\n".join([
        f"## Run {rec.run_id} — {headline(rec, prev, best, objective, band)}",
        f"- Findings: {', '.join(f.code for f in decision.findings) or 'none'}",
        f"- Noise band: {decision.noise.text() if decision.noise else 'n/a'}",
        f"- Next ({decision.advisor_used or 'no advisor'}): {action}; resume {resume}",
        *([refused_line(decision)] if decision.rejected else []),
        f"- Notes: {rec.run_dir / 'notes.md'}",
    ]) + "\n\n"
