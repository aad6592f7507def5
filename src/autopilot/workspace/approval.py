"""A person in the loop (`--advisor manual`): after a run's analysis has staged the default advisor's
proposal, the loop waits for a person to decide, then records who decided what.

    proposals/awaiting.json   written while the loop waits: the run, the staged override, the deadline
    proposals/approval.json   written by `autopilot approve [--veto]`: the decision and who made it

A person can, while the loop waits:
- approve the staged proposal: `autopilot approve`;
- replace it: `autopilot apply FILE`, or edit `proposals/next_config.json` (the edit is validated here
  as soon as it is saved; an invalid one is reported and the loop keeps waiting);
- veto it: `autopilot approve --veto` (or delete the file): it moves to proposals/rejected/ and the
  session stops after this run, so nothing a person refused is trained.
No answer within `autopilot.advisor.approval_timeout_s`: the staged proposal runs as drafted, and the
note says nobody reviewed it. The decision goes into the run's .state (`person`), a "Decision by a
person" section of its notes.md, and a line of the labbook.
"""

from __future__ import annotations

import getpass
import socket
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from autopilot.atomic import append_text, atomic_write_json, atomic_write_text
from autopilot.config import flatten
from autopilot.errors import AutopilotError, WorkspaceError
from autopilot.space import fmt_num
from autopilot.workspace.layout import (
    Workspace,
    iso_now,
    load_history,
    open_workspace,
    read_json_tolerant,
    write_state,
)
from autopilot.workspace.proposals import current_base, record_rejection, validate_override

POLL_S = 0.2


def awaiting_path(ws: Workspace) -> Path:
    return ws.proposals / "awaiting.json"


def approval_path(ws: Workspace) -> Path:
    return ws.proposals / "approval.json"


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _show(override: Any) -> str:
    if not isinstance(override, dict) or not override:
        return "nothing staged (the next run repeats the last config)"
    return ", ".join(f"{k}={fmt_num(v)}" for k, v in override.items() if not k.startswith("autopilot.")) or \
        "no knob change (resume policy only)"


# -- the loop's side --------------------------------------------------------------------------------
def await_person(ws: Workspace, run_dir: Path, *, mode: str, timeout_s: float, console: Console,
                 stopped: Any = lambda: False, poll_s: float = POLL_S) -> dict[str, Any] | None:
    """Wait for a person's decision on the staged proposal; record it. None when the loop is stopped
    meanwhile (the rerun waits again)."""
    staged = read_json_tolerant(ws.next_config, lambda m: None)
    approval_path(ws).unlink(missing_ok=True)  # an answer to an earlier wait is not an answer to this one
    deadline = time.time() + timeout_s
    atomic_write_json(awaiting_path(ws), {"run_id": run_dir.name, "staged": staged, "since": iso_now(),
                                          "deadline_unix": deadline})
    console.print(Panel(
        f"[bold]Proposal after run {run_dir.name}[/]: {escape(_show(staged))}\n\n"
        f"  approve:  [cyan]autopilot approve --workdir {escape(str(ws.root))}[/]\n"
        f"  replace:  [cyan]autopilot apply FILE --workdir {escape(str(ws.root))}[/]  or edit {ws.rel(ws.next_config)}\n"
        f"  veto:     [cyan]autopilot approve --veto --workdir {escape(str(ws.root))}[/]  (the session stops after this run)\n\n"
        f"No answer in {timeout_s:g}s: the staged proposal runs as drafted.",
        title="waiting for a person", border_style="yellow"), highlight=False)
    last_invalid: str | None = None
    checked: tuple[Any, str | None] | None = None
    try:
        while True:
            if stopped():
                return None
            answer = read_json_tolerant(approval_path(ws), lambda m: None)
            current = read_json_tolerant(ws.next_config, lambda m: None) if ws.next_config.exists() else None
            if isinstance(answer, dict) and answer.get("decision") in ("approved", "vetoed"):
                decision = _decided(answer, staged, current)
                break
            if not ws.next_config.exists() and staged is not None:
                decision = {"decision": "vetoed", "by": "a person (deleted the staged proposal)", "via": "delete",
                            "override": staged}
                break
            if ws.next_config.exists() and current != staged:
                if checked is None or checked[0] != current:  # validate each saved version once
                    checked = (current, _invalid(ws, mode, current))
                problem = checked[1]
                if problem is None:
                    decision = {"decision": "replaced", "by": "a person (autopilot apply or an edit)",
                                "via": ws.rel(ws.next_config), "override": current, "drafted": staged}
                    break
                if problem != last_invalid:
                    console.print(f"[red]{ws.rel(ws.next_config)} as edited is not valid: {escape(problem)}; still "
                                  f"waiting (fix it, or approve/veto)[/]", highlight=False, soft_wrap=True)
                    last_invalid = problem
            if time.time() >= deadline:
                decision = {"decision": "timeout", "by": "nobody", "via": f"no answer within {timeout_s:g}s",
                            "override": staged}
                break
            time.sleep(poll_s)
    finally:
        awaiting_path(ws).unlink(missing_ok=True)
    approval_path(ws).unlink(missing_ok=True)
    decision["at"] = iso_now()
    _act(ws, run_dir, decision)
    console.print(f"[bold]{escape(decision_line(decision))}[/]", highlight=False, soft_wrap=True)
    return decision


def _decided(answer: dict[str, Any], staged: Any, current: Any) -> dict[str, Any]:
    out = {"decision": answer["decision"], "by": str(answer.get("by", "a person")), "via": "autopilot approve",
           "override": current if answer["decision"] == "approved" else staged}
    if answer.get("note"):
        out["note"] = str(answer["note"])[:500]
    if answer["decision"] == "approved" and current != staged:
        out["drafted"] = staged  # approved after an edit: the edit is what runs
    return out


def _invalid(ws: Workspace, mode: str, data: Any) -> str | None:
    try:
        base, _ = current_base(ws, mode, load_history(ws, lambda m: None, with_curve=False))
        validate_override(data, base)
    except AutopilotError as exc:
        return str(exc)[:300]
    return None


def _act(ws: Workspace, run_dir: Path, decision: dict[str, Any]) -> None:
    if decision["decision"] == "vetoed":
        staged = decision.get("override")
        if staged is not None:
            path = record_rejection(ws, reasons=[f"vetoed by {decision['by']}"], proposal=staged,
                                    source=f"manual review after run {run_dir.name}", name=f"{run_dir.name}.vetoed")
            decision["kept_as"] = ws.rel(path)
        ws.next_config.unlink(missing_ok=True)
    write_state(run_dir, person=decision)
    notes = run_dir / "notes.md"
    text = notes.read_text("utf-8") if notes.exists() else ""
    if "## Decision by a person" not in text:
        atomic_write_text(notes, text.rstrip() + "\n\n" + "\n".join(decision_section(decision)) + "\n")
    marker = f"<!-- autopilot:decision {run_dir.name} -->"
    book = ws.labbook.read_text("utf-8") if ws.labbook.exists() else ""
    if marker not in book:
        append_text(ws.labbook, f"{marker}\n{decision_line(decision)}\n")


def decision_line(d: dict[str, Any]) -> str:
    what = {"approved": f"approved {_show(d.get('override'))}",
            "replaced": f"replaced the draft with {_show(d.get('override'))}",
            "vetoed": "vetoed the proposal; the session stops after this run",
            "timeout": f"no decision ({d.get('via')}); the draft runs unreviewed: {_show(d.get('override'))}"}
    return f"- Person: {d.get('by')} {what[d['decision']]}"


def decision_section(d: dict[str, Any]) -> list[str]:
    out = ["## Decision by a person", decision_line(d), f"- how: {d.get('via')}; at {d.get('at')}"]
    if "drafted" in d:
        out.append(f"- drafted by the advisor: {_show(d['drafted'])}")
    if d.get("kept_as"):
        out.append(f"- the vetoed proposal is kept as {d['kept_as']}")
    if d.get("note"):
        out.append(f"- note: {d['note']}")
    return out


# -- the person's side: `autopilot approve` --------------------------------------------------------
def approve_command(workdir: Path, *, veto: bool = False, note: str | None = None,
                    console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    ws = open_workspace(workdir, create_missing_dirs=False)
    waiting = read_json_tolerant(awaiting_path(ws), lambda m: None)
    if not isinstance(waiting, dict):
        raise WorkspaceError(f"no proposal is waiting for approval in {ws.root} ({ws.rel(awaiting_path(ws))} "
                             f"is missing); `autopilot run --advisor manual` waits for one after each run")
    answer = {"decision": "vetoed" if veto else "approved", "by": who(), "at": iso_now(),
              "run_id": waiting.get("run_id")}
    if note:
        answer["note"] = note
    atomic_write_json(approval_path(ws), answer)
    staged = read_json_tolerant(ws.next_config, lambda m: None)
    flat = flatten(staged) if isinstance(staged, dict) else None
    console.print(f"{answer['decision']} the proposal after run {waiting.get('run_id')}: {escape(_show(flat))}",
                  highlight=False)
    return answer


__all__ = ["approve_command", "await_person", "decision_line", "decision_section"]
