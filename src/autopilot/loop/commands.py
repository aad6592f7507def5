"""`autopilot diagnose | propose | apply | status`: thin commands over the ledger.

`propose` and `diagnose` work on any ledger, including one written by an external trainer (run
folders holding only config.json and trainer_summary.json): loop summaries are computed in memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from autopilot.config import flatten
from autopilot.config.load import read_json_file
from autopilot.decide.records import RunRecord
from autopilot.decide.sanity import best_of, objective_of
from autopilot.errors import ConfigError, WorkspaceError
from autopilot.space import fmt_num
from autopilot.workspace.layout import (
    Workspace,
    WorkspaceLock,
    load_history,
    load_run,
    open_workspace,
    read_json_tolerant,
    read_lock_info,
    read_state,
)
from autopilot.workspace.ledger import changed_knobs, read_ledger
from autopilot.workspace.pointers import ensure_summaries
from autopilot.workspace.proposals import current_base, stage, validate_override
from autopilot.workspace.recording import analyse_run


def _say(console: Console):
    def say(msg: str, style: str = "") -> None:
        console.print(f"[{style}]{msg}[/]" if style else msg, highlight=False, soft_wrap=True)

    return say


# --------------------------------------------------------------------------------------------------
def diagnose_command(run_dir: Path, *, as_json: bool = False, console: Console | None = None) -> list[Any]:
    from autopilot.decide.diagnose import diagnose

    console = console or Console()
    run_dir = Path(run_dir).absolute()
    if not run_dir.is_dir():
        raise WorkspaceError(f"run folder {run_dir} does not exist; pass a folder like WORKDIR/runs/<run_id>")
    quiet = (lambda m: None) if as_json else (lambda m: console.print(f"[yellow]! {m}[/]", highlight=False))
    if run_dir.parent.name == "runs":  # inside a ledger: judge the run against the runs before it
        history = load_history(Workspace(run_dir.parent.parent), quiet, upto=run_dir.name)
        if not history or history[-1].run_id != run_dir.name:
            history = [*history, load_run(run_dir, quiet)]
    else:
        history = [load_run(run_dir, quiet)]
    rec = history[-1]
    if rec.trainer_summary is None and rec.config is None and rec.loop_summary is None:
        raise WorkspaceError(f"{run_dir} holds no config.json, trainer_summary.json or summary.json to diagnose")
    objective = objective_of(history)
    ensure_summaries(history, objective)
    findings = diagnose(history, best=best_of(history[:-1], objective), objective=objective)
    if as_json:
        console.out(json.dumps([f.model_dump(mode="json") for f in findings], indent=2), highlight=False)
        return findings
    table = Table(title=f"run {rec.run_id}: {rec.status}", show_lines=True)
    for col in ("code", "severity", "evidence", "theory", "moves"):
        table.add_column(col, overflow="fold")
    for f in findings:
        moves = "; ".join(f"{m.key} {m.direction}" + (f" ×{m.factor:g}" if m.factor else "")
                          + (f" → {fmt_num(m.value)}" if m.value is not None else "") for m in f.moves)
        style = {"error": "red", "warn": "yellow"}.get(f.severity, "")
        table.add_row(f"[{style}]{f.code}[/]" if style else f.code, f.severity, f.evidence_text(), f.theory, moves)
    if findings:
        console.print(table)
    else:
        console.print(f"run {rec.run_id}: no findings (healthy by every rule)")
    return findings


# --------------------------------------------------------------------------------------------------
def propose_command(workdir: Path, *, advisor: str = "rules", console: Console | None = None) -> Any:
    from autopilot.decide.advisors import get_advisor

    console = console or Console()
    say = _say(console)
    get_advisor(advisor)  # an unknown advisor is a one-line error before anything is written
    ws = open_workspace(workdir)
    with WorkspaceLock(ws, command="autopilot propose", warn=lambda m: say(f"! {m}", "yellow")):
        history = load_history(ws, lambda m: say(f"! {m}", "yellow"), with_curve=False)
        if not history:
            raise WorkspaceError(f"{ws.runs} holds no runs to analyse; train some with `autopilot run` or point "
                                 f"--workdir at a ledger")
        latest = history[-1]
        if read_state(latest.run_dir).get("phase") not in (None, "done"):
            raise WorkspaceError(f"run {latest.run_id} is not finished; rerun `autopilot run` on this workspace "
                                 f"to complete it first")
        say(f"analysing run {latest.run_id} ({latest.status}) against {len(history) - 1} earlier run(s)")
        decision = analyse_run(ws, latest.run_dir, advisor=advisor, say=say, warn=lambda m: say(f"! {m}", "yellow"))
        say(f"notes: {ws.rel(latest.run_dir / 'notes.md')}; labbook: {ws.rel(ws.labbook)}")
    return decision


# --------------------------------------------------------------------------------------------------
def apply_command(proposal_path: Path, workdir: Path, *, console: Console | None = None) -> dict[str, Any]:
    """Validate a hand-written proposal against the current base config and stage it."""
    console = console or Console()
    ws = open_workspace(workdir)
    data = read_json_file(Path(proposal_path), "proposal")
    ledger = read_ledger(ws, lambda m: None)
    base, source = current_base(ws, ledger.mode or ws.default_mode(), ledger.runs)
    try:
        validate_override(data, base, sps=ledger.recent_sps)
    except ConfigError as exc:
        raise ConfigError(f"proposal {proposal_path} rejected (nothing staged): {exc}") from None
    flat = flatten(data)
    # No lock: staging is one atomic rename, so a person may stage the next run's proposal while a
    # session runs; the loop consumes only the proposal it read and never overwrites a staged one.
    stage(ws, flat)
    base_flat = flatten(base.model_dump())
    console.print(f"staged {ws.rel(ws.next_config)} ({len(flat)} keys, against {source}):", highlight=False)
    for key, value in flat.items():
        console.print(f"  {key}: {fmt_num(base_flat.get(key))} -> {fmt_num(value)}", highlight=False)
    return flat


# --------------------------------------------------------------------------------------------------
def status_command(workdir: Path, *, console: Console | None = None) -> list[RunRecord]:
    console = console or Console()
    ws = open_workspace(workdir, create_missing_dirs=False)
    warnings: list[str] = []
    ledger = read_ledger(ws, warnings.append)
    history, objective = ledger.runs, ledger.objective
    best_id = getattr(ledger.best, "run_id", None)
    table = Table(title=f"{ws.root} — {len(history)} run(s)")
    # A run id is what a reader copies into the next command: never cut, the changes column folds instead.
    for col, kw in (("#", {"justify": "right"}), ("run", {"no_wrap": True, "min_width": max((len(r.run_id) for r in history), default=3)}),
                    ("status", {}), ("changed vs previous", {"overflow": "fold"}),
                    (objective, {"justify": "right"}), ("best", {"justify": "center"})):
        table.add_column(col, **kw)
    prev = None
    for i, rec in enumerate(history, 1):
        s = rec.loop_summary
        status = ledger.shown_status(rec)
        if s is not None and s.suspect:
            status += " (suspect)"
        style = "red" if ("suspect" in status or rec.status in ("crashed", "diverged", "failed")) else (
            "yellow" if rec.status in ("stalled", "interrupted") else "green")
        changes = changed_knobs(prev, rec)
        score = f"{s.score:.4g}" if s is not None and s.score is not None else "–"
        table.add_row(str(i), rec.run_id, f"[{style}]{status}[/]", changes, score, "★" if rec.run_id == best_id else "")
        prev = rec
    console.print(table)
    pending = read_json_tolerant(ws.next_config, warnings.append)
    if isinstance(pending, dict):
        shown = ", ".join(f"{k}={fmt_num(v)}" for k, v in list(pending.items())[:6])
        console.print(f"pending proposal: {shown}", highlight=False)
    holder = read_lock_info(ws.lock_path)
    if holder.get("pid"):
        console.print(f"lock: {holder.get('command', 'autopilot')} (pid {holder['pid']} on {holder.get('host')})",
                      highlight=False)
    for w in warnings:
        console.print(f"[yellow]! {w}[/]", highlight=False)
    return history

