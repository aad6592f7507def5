"""After a run is collected and promoted: the one analysis call, then its records.

Writes, in this order (each atomic; the labbook append is guarded by a per-run marker so a redo after a
crash never appends twice): summary.json (finding codes), proposals/rejected/<run>.<advisor>.json for
each advisor the guard refused, proposals/next_config.json, runs/<id>/notes.md, journal/labbook.md.

The analysis is someone else's code running on damaged inputs: if it raises, the run still gets a
minimal note and labbook section (status, numbers, the loop's record) and no proposal.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.markup import escape

from autopilot.atomic import append_text, atomic_write_text
from autopilot.decide import analysis
from autopilot.decide.records import RunRecord
from autopilot.workspace.layout import (
    LABBOOK_HEADER,
    Warn,
    Workspace,
    list_run_dirs,
    read_json_tolerant,
    read_state,
)
from autopilot.workspace.ledger import read_ledger
from autopilot.workspace.pointers import write_loop_summary
from autopilot.workspace.proposals import record_rejection, stage

Say = Callable[..., None]


def labbook_marker(run_id: str) -> str:
    return f"<!-- autopilot:run {run_id} -->"


def repro_command(ws: Workspace, rec: RunRecord) -> str:
    """The exact trainer command of the run (as launched), else the built-in one."""
    argv = read_state(rec.run_dir).get("argv")
    if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
        return shlex.join(argv)
    return shlex.join([Path(sys.executable).name, "-m", "autopilot", "train", "--config",
                       str(rec.run_dir / "config.json"), "--run-dir", str(rec.run_dir)])


def analyse_run(ws: Workspace, run_dir: Path, *, advisor: str, say: Say, warn: Warn,
                remaining_runs: int | None = None, remaining_seconds: float | None = None,
                keep_pending: bool = False) -> Any:
    """Diagnose/advise/guard/notes for `run_dir`, judged against the ledger's runs up to it, and write the
    records.

    `keep_pending` (the loop): a proposal found staged now was put there during the run, by a person
    (`autopilot apply` or an editor) or by this same analysis before a crash; it is kept, not replaced.
    """
    ledger = read_ledger(ws, warn, upto=run_dir.name, with_curve=True)
    history = ledger.runs
    rec = history[-1]
    best, baseline = ledger.pointer_run or ledger.best, ledger.pinned_run
    sps = rec.trainer_summary.throughput.sps if rec.trainer_summary is not None else None
    decision = None
    try:
        from autopilot.config.load import config_space

        space = config_space(rec.config) if rec.config is not None else None
        state_dir = ws.root / "advisors"  # advisors' own state (an Optuna study), kept with the workspace
        state_dir.mkdir(exist_ok=True)
        decision = analysis.analyse_and_propose(
            history, advisor=advisor, space=space, sps=float(sps) if isinstance(sps, (int, float)) else None,
            remaining_runs=remaining_runs, remaining_seconds=remaining_seconds,
            repro_command=repro_command(ws, rec), best=best, baseline=baseline, seed=analysis.advisor_seed(history),
            state_dir=str(state_dir))
    except Exception as exc:  # analysis bugs must not lose the run's records; the note says what happened
        warn(f"analysis failed for run {rec.run_id} ({type(exc).__name__}: {str(exc)[:160]}); "
             f"writing a minimal note and no proposal")
        analysis_error = f"{type(exc).__name__}: {exc}"
    else:
        analysis_error = None

    findings = [f.code for f in decision.findings] if decision is not None else []
    if (run_dir / "summary.json").exists() and rec.loop_summary is not None:
        rec.loop_summary.findings = findings
        write_loop_summary(run_dir, rec.loop_summary)
    is_latest = list_run_dirs(ws)[-1].name == rec.run_id
    if decision is not None:
        for name, verdict in decision.rejected:
            record_rejection(ws, reasons=list(verdict.reasons), proposal=verdict.proposal.as_override(),
                             source=f"advisor {name} after run {rec.run_id}", name=f"{rec.run_id}.{name}")
        if decision.proposal is not None and is_latest:
            if keep_pending and ws.next_config.exists() and read_json_tolerant(ws.next_config, warn) != \
                    decision.proposal.as_override():
                warn(f"{ws.rel(ws.next_config)} was staged by hand during the run; kept (the advisor's "
                     f"proposal is in {ws.rel(run_dir / 'notes.md')})")
                is_latest = False
            else:
                stage(ws, decision.proposal.as_override())
    notes = (decision.notes_md if decision is not None and decision.notes_md else fallback_notes(rec, analysis_error))
    atomic_write_text(run_dir / "notes.md", notes.rstrip() + "\n\n" + loop_record(ws, rec) + "\n")
    section = decision.labbook_md if decision is not None and decision.labbook_md else notes
    append_labbook(ws, rec.run_id, section)
    _report(say, decision, ws, is_latest)
    return decision


def append_labbook(ws: Workspace, run_id: str, section: str) -> bool:
    marker = labbook_marker(run_id)
    try:
        existing = ws.labbook.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        existing = ""
        atomic_write_text(ws.labbook, LABBOOK_HEADER)
    if marker in existing:
        return False  # already appended before a crash: appending again would duplicate it
    append_text(ws.labbook, f"\n{marker}\n{section.strip()}\n")
    return True


def _report(say: Say, decision: Any, ws: Workspace, staged: bool) -> None:
    if decision is None:
        say("  analysis: unavailable (see the warning above)", "yellow")
        return
    if decision.findings:
        say("  findings: " + ", ".join(f"{f.code} ({f.severity})" for f in decision.findings))
    else:
        say("  findings: none")
    for name, verdict in decision.rejected:  # the reason a chosen advisor was passed over, logged
        say(f"  ! {name} refused: {escape((verdict.reasons or ['no reason given'])[0][:240])}", "yellow")
    if decision.proposal is not None:
        ch = decision.proposal.changes
        what = ", ".join(f"{k}={v}" for k, v in ch.items()) if ch else "no knob changes"
        where = ws.rel(ws.next_config) if staged else "not staged"
        say(f"  proposal ({decision.advisor_used}): {what}; resume {decision.proposal.resume_mode} from "
            f"{decision.proposal.resume_from} → {where}", "green")
    else:
        say("  proposal: none accepted by the guard; the next run repeats the last config", "yellow")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def fallback_notes(rec: RunRecord, analysis_error: str | None) -> str:
    """A minimal lab-notebook entry when the analysis could not run."""
    s = rec.loop_summary
    status = s.status if s else rec.status
    lines = [f"Run {rec.run_id} — {status}; analysis unavailable", ""]
    ts = rec.trainer_summary
    if ts is not None:
        lines.append("Key metrics")
        for k, v in list(ts.metrics.items())[:8]:
            lines.append(f"- {k}: {_fmt(v)}")
        if ts.throughput.sps is not None:
            lines.append(f"- SPS: {_fmt(ts.throughput.sps)}; agent_steps {ts.throughput.agent_steps}")
    if analysis_error:
        lines += ["", f"Analysis error: {analysis_error[:500]}"]
    return "\n".join(lines)


def loop_record(ws: Workspace, rec: RunRecord) -> str:
    """What the loop itself knows: status, attempts, resume, suspect reasons, the log tail of a failure."""
    s = rec.loop_summary
    if s is None:
        return "Loop record\n- no summary.json (an external run)"
    extra = s.model_extra or {}
    lines = ["Loop record", f"- status: {s.status} (attempts {s.attempts}"
             + (f", exit code {extra.get('exit_code')}" if extra.get("exit_code") is not None else "")
             + (f", wall {extra.get('wall_s')}s" if extra.get("wall_s") is not None else "") + ")"]
    score = f"{s.score:.4g}" if s.score is not None else "none"
    lines.append(f"- {s.objective}: {score}")
    for name, d in s.deltas.items():
        shown = ", ".join(f"{k} {v:+.4g}" for k, v in d.items() if v is not None)
        if shown:
            lines.append(f"- {name.replace('_', ' ')}: {shown}")
    r = s.resume or {}
    if r:
        src = f" from {r.get('from')} ({ws.rel(r['checkpoint'])})" if r.get("checkpoint") else ""
        lines.append(f"- resume: {r.get('mode')}{src}")
        lines += [f"  - {n}" for n in r.get("notes", []) or []]
    if s.suspect:
        lines.append("- SUSPECT (never promoted to best or latest): " + "; ".join(s.suspect_reasons))
    if s.changes:
        lines.append("- changes vs previous run: " + "; ".join(s.changes[:12]))
    if s.error:
        lines += ["- error / log tail:", "```text", s.error.strip()[-2000:], "```"]
    return "\n".join(lines)


__all__ = ["analyse_run", "append_labbook", "fallback_notes", "labbook_marker", "loop_record", "repro_command"]
