"""One run's training: which checkpoint it starts from, the child under the watchdog (with retries
after a crash), how the ending is classified, and the run's `summary.json`.
"""

from __future__ import annotations

import shlex
import signal
from pathlib import Path
from typing import Any

from autopilot.backends import get_backend
from autopilot.config import Config
from autopilot.decide.records import RunRecord
from autopilot.loop import launch
from autopilot.loop.session import Loop
from autopilot.workspace.layout import (
    Workspace,
    iso_now,
    load_history,
    load_run,
    read_json_tolerant,
    read_state,
    write_state,
)
from autopilot.workspace.ledger import read_ledger
from autopilot.workspace.pointers import build_loop_summary, checkpoint_loads, write_loop_summary

RETRYABLE = ("crashed", "failed")


def resume_for(loop: Loop, cfg: Config, previous: RunRecord | None) -> dict[str, Any]:
    """Which checkpoint the child gets. After a diverged or suspect run: best, never latest."""
    ws = loop.ws
    if cfg.autopilot.resume_mode == "fresh":
        return {"mode": "fresh", "from": None, "checkpoint": None}
    want = cfg.autopilot.resume_from
    notes = []
    prev = previous.loop_summary if previous is not None else None
    rollback = prev is not None and (prev.status == "diverged" or prev.suspect)
    if rollback and want != "best":
        why = "diverged" if prev.status == "diverged" else "had suspect metrics"  # type: ignore[union-attr]
        notes.append(f"rollback: run {previous.run_id} {why}; resuming from best, not {want}")  # type: ignore[union-attr]
        want = "best"
    if want == "latest":
        candidates = [ws.latest_model, ws.best_model]
    elif want == "best":
        candidates = [ws.best_model] + ([] if rollback else [ws.latest_model])
    else:
        candidates = [ws.resolve(want)]
    for path in candidates:
        ok, why = checkpoint_loads(path)
        if ok:
            if path != candidates[0]:
                notes.append(f"{ws.rel(candidates[0])} unusable; fell back to {ws.rel(path)}")
            # Which run's weights this run starts from: the start point is part of what makes two runs
            # the same experiment (a warm start from a newer checkpoint is not a repeat).
            return {"mode": "continue", "from": want, "checkpoint": str(path), "notes": notes,
                    "source_run": _checkpoint_run(ws, path)}
        if path.exists():
            notes.append(why)
    notes.append("no loadable checkpoint to continue from; starting fresh")
    return {"mode": "fresh", "from": want, "checkpoint": None, "notes": notes}


def _checkpoint_run(ws: Workspace, path: Path) -> str | None:
    """The run a workspace checkpoint came from (models/latest.json, runs/best.json); None if unknown."""
    pointer = {ws.latest_model: ws.latest_json, ws.best_model: ws.best_json}.get(path)
    data = read_json_tolerant(pointer, lambda m: None) if pointer is not None else None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    return run_id if isinstance(run_id, str) else None


def train_run(loop: Loop, run_dir: Path) -> None:
    """Launch the child (with retries after a crash) under the watchdog, then record the outcome (summary.json)."""
    ws = loop.ws
    rec = load_run(run_dir, loop.warn, with_curve=False)
    cfg = rec.config
    if cfg is None:
        record_outcome(loop, run_dir, status="failed", error="config.json does not validate", result=None, attempts=0)
        return
    history = load_history(ws, lambda m: None, upto=run_dir.name, with_curve=False)
    previous = history[-2] if len(history) > 1 else None
    resume = resume_for(loop, cfg, previous)
    for note in resume.get("notes", []):
        loop.warn(note)
    loop.say(f"  resume: {resume['mode']}" + (f" from {resume['from']} ({ws.rel(resume['checkpoint'])})"
                                              if resume["checkpoint"] else ""))
    ap = cfg.autopilot
    wall = ap.max_run_seconds
    remaining = loop.remaining_s()
    if remaining is not None:
        wall = max(1.0, min(wall, remaining))
    grace = launch.grace_seconds(wall)
    checkpoint = Path(resume["checkpoint"]) if resume["checkpoint"] else None
    attempt, result = 0, None
    status: str | None = None
    error: str | None = None
    while True:
        attempt += 1
        if loop.stop.requested:
            if attempt == 1:
                return  # never launched: the run stays `prepared`
            break
        argv = launch.trainer_argv(get_backend(cfg.backend).argv_template(cfg), config=run_dir / "config.json",
                                   run_dir=run_dir, resume=checkpoint)
        loop.say(f"  launching (attempt {attempt}): {shlex.join(argv)[:200]}", "dim")
        _set_aside(run_dir, attempt - 1)  # a summary left by an earlier attempt must not be read as this one's
        try:
            proc = launch.spawn(argv, run_dir, attempt=attempt, cwd=ws.root)
        except OSError as exc:
            loop.fatal = (f"cannot start the trainer {argv[0]!r} ({exc.strerror or exc}); "
                          f"check autopilot.trainer_command in {ws.rel(ws.profile_path(loop.mode))}")
            status, error = "failed", loop.fatal
            break
        write_state(run_dir, phase="training", attempt=attempt, pid=proc.pid,
                    pid_create_time=launch.process_create_time(proc.pid), launched_at=iso_now(),
                    resume=resume, argv=argv)
        result = launch.supervise(proc, run_dir, stall_seconds=ap.stall_seconds, wall_seconds=wall, grace=grace,
                                  stop=loop.stop, on_progress=lambda row: loop.say(_progress_line(row), "dim"))
        status, error = _classify(run_dir, result)
        loop.say(f"  trainer ended: {status} after {result.wall_s:.1f}s (exit {result.returncode})"
                 + (f" — {result.detail}" if result.detail else ""), "green" if status == "completed" else "yellow")
        if status not in RETRYABLE or attempt > ap.max_retries or loop.stop.requested:
            break
        own = run_dir / "checkpoints" / "latest.pt"
        if checkpoint_loads(own)[0]:
            checkpoint = own
        loop.warn(f"retrying ({attempt}/{ap.max_retries}) from {ws.rel(checkpoint) if checkpoint else 'scratch'}")
    record_outcome(loop, run_dir, status=status, error=error, result=result, attempts=attempt, resume=resume,
             resumed_checkpoint=str(checkpoint) if checkpoint else None)


def _set_aside(run_dir: Path, attempt: int) -> None:
    """Keep an earlier attempt's summary under another name, so the next attempt's is the one collected."""
    ts = run_dir / "trainer_summary.json"
    if ts.exists():
        ts.replace(run_dir / f"trainer_summary.attempt{attempt}.json")


def _progress_line(row: dict[str, Any]) -> str:
    parts = []
    for key, label in (("epoch", "epoch"), ("agent_steps", "steps"), ("sps", "SPS"), ("success_rate", "success"),
                       ("mean_reward", "reward")):
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{label} {v:,.0f}" if key in ("agent_steps", "sps", "epoch") else f"{label} {v:.3g}")
    return "    " + "  ".join(parts) if parts else "    (metrics line)"


def _classify(run_dir: Path, result: launch.LaunchResult) -> tuple[str, str | None]:
    """The run's status from how the child ended and what it wrote."""
    from autopilot.summary import SummaryError, read_summary

    ts, ts_error = None, None
    if (run_dir / "trainer_summary.json").exists():
        try:
            ts = read_summary(run_dir / "trainer_summary.json")
        except SummaryError as exc:
            ts_error = str(exc)
    tail = launch.log_tail(run_dir)
    if result.reason == "stalled":
        return "stalled", f"{result.detail}; killed with {'+'.join(result.killed_with)}"
    if result.reason in ("timeout", "stopped"):
        return "interrupted", result.detail
    if result.returncode == 0:
        if ts is not None:
            return ts.status, ts.error
        return "failed", f"the trainer exited 0 without a readable summary ({ts_error or 'no trainer_summary.json'})"
    if ts is not None and ts.status != "completed":
        return ts.status, ts.error or f"exit code {result.returncode}\n{tail}"
    sig = result.died_by_signal
    how = f"killed by {signal.Signals(sig).name}" if sig else f"exit code {result.returncode}"
    return "crashed", f"the trainer died ({how}){'; ' + ts_error if ts_error else ''}\n{tail}".strip()


def record_outcome(loop: Loop, run_dir: Path, *, status: str | None, error: str | None,
                   result: launch.LaunchResult | None, attempts: int, default_status: str = "crashed",
                   resume: dict[str, Any] | None = None, resumed_checkpoint: str | None = None) -> None:
    """Write summary.json (status, score, suspect, deltas) and move the run to `collected`."""
    ledger = read_ledger(loop.ws, loop.warn, upto=run_dir.name)
    history = ledger.runs
    rec = history[-1]
    if status is None:
        status = rec.trainer_summary.status if rec.trainer_summary is not None else default_status
    previous = history[-2] if len(history) > 1 else None
    st = read_state(run_dir)
    summary = build_loop_summary(
        rec, status=status, objective=ledger.objective, previous=previous, baseline=ledger.baseline,
        attempts=max(attempts, 1),
        resume=resume or st.get("resume") or {}, started_at=st.get("launched_at") or st.get("created_at"),
        ended_at=iso_now(), error=(error or "")[-3000:] or None, mode=st.get("mode"), base_digest=st.get("base_digest"),
        session=st.get("session"),
        exit_code=result.returncode if result else None, wall_s=round(result.wall_s, 2) if result else None,
        resumed_checkpoint=resumed_checkpoint,
    )
    write_loop_summary(run_dir, summary)
    write_state(run_dir, phase="collected")
    score = f"{summary.score:.4g}" if summary.score is not None else "–"
    d = summary.deltas.get("vs_previous", {}).get(summary.objective)
    loop.say(f"  summary: {status}, {summary.objective} {score}" + (f" (Δprev {d:+.4g})" if d is not None else "")
             + (f" — SUSPECT: {'; '.join(summary.suspect_reasons)[:200]}" if summary.suspect else ""),
             "red" if summary.suspect or status in ("crashed", "diverged", "failed") else "")
