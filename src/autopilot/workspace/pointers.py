"""The ledger's derived files (their one writer): each run's `summary.json`, and the pointers `runs/best.json`,
`models/best.pt`, `models/latest.pt` (+ `models/latest.json`, which run it came from).

Rules (the README's "Driving your own trainer" and "The workspace"):
- a run whose metrics break their own definitions is suspect: never best, never latest;
- a diverged run is never promoted (the next run rolls back to best);
- a checkpoint is promoted only if it loads (`torch.load` gives a dict);
- every promotion copies the checkpoint first and writes the pointer last, so a crash in between
  leaves the old pointer valid and the step can simply be redone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopilot.atomic import atomic_copy, atomic_write_json
from autopilot.config.overrides import diff_configs
from autopilot.decide.records import LoopSummary, RunRecord
from autopilot.decide.sanity import DEFAULT_OBJECTIVE, sanity_reasons, score_of
from autopilot.summary import TrainerSummary, is_finite_number
from autopilot.workspace.layout import Warn, Workspace, _log_warn, iso_now, read_json_tolerant

# Statuses whose checkpoint is healthy enough to continue from. A crashed, stalled or failed run keeps its
# checkpoints in its folder (a retry continues from them) but models/latest.pt stays at the last healthy
# run, so `resume_from=latest` never means "from a broken run" (the guard's rule too).
LATEST_OK = ("completed", "interrupted")
DELTA_METRICS = ("mean_reward", "collision_rate", "oob_rate", "episode_length", "sps")

_load_cache: dict[tuple[str, int, int], tuple[bool, str]] = {}


def checkpoint_loads(path: Path | None) -> tuple[bool, str]:
    """(ok, why-not). Loadable = `torch.load(..., weights_only=False)` returns a dict."""
    if path is None:
        return False, "no checkpoint"
    try:
        st = path.stat()
    except OSError:
        return False, f"{path} does not exist"
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _load_cache:
        return _load_cache[key]
    try:
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=False)
        result = (True, "") if isinstance(obj, dict) else (False, f"{path} holds a {type(obj).__name__}, not a dict")
    except Exception as exc:  # any unpickling failure means "does not load"; the reason is kept
        result = (False, f"{path} does not load ({type(exc).__name__}: {str(exc)[:80]})")
    _load_cache[key] = result
    return result


# --------------------------------------------------------------------------------------------------
def run_checkpoint(ws: Workspace, rec: RunRecord, which: str) -> Path | None:
    """The run's `latest` or `best` checkpoint, from its summary, else the conventional paths."""
    candidates: list[Path] = []
    ts = rec.trainer_summary
    if ts is not None:
        extra = ts.checkpoint.model_extra or {}
        named = extra.get("best_path") if which == "best" else ts.checkpoint.path
        if isinstance(named, str) and named:
            p = Path(named)
            candidates += [p] if p.is_absolute() else [rec.run_dir / p, ws.root / p, Path.cwd() / p]
    candidates += [rec.run_dir / "checkpoints" / f"{which}.pt"]
    if which == "best":
        candidates.append(run_checkpoint(ws, rec, "latest") or rec.run_dir / "checkpoints" / "latest.pt")
    for p in candidates:
        if p.is_file():
            return p
    return None


def build_loop_summary(rec: RunRecord, *, status: str, objective: str, previous: RunRecord | None,
                       baseline: RunRecord | None, **fields: Any) -> LoopSummary:
    """summary.json for a run: status, score, suspect flag with reasons, deltas, config changes."""
    ts = rec.trainer_summary
    reasons = sanity_reasons(ts) if ts is not None else []
    score = score_of(ts, objective)  # kept even when suspect (the note shows it); `suspect` bars it from best
    deltas: dict[str, dict[str, float | None]] = {}
    if previous is not None:
        deltas["vs_previous"] = metric_deltas(ts, previous.trainer_summary, objective)
    if baseline is not None and baseline.run_id != rec.run_id:
        deltas["vs_baseline"] = metric_deltas(ts, baseline.trainer_summary, objective)
    changes = []
    if previous is not None and previous.raw_config and rec.raw_config:
        changes = [str(c) for c in diff_configs(previous.raw_config, rec.raw_config)]
    return LoopSummary(
        run_id=rec.run_id, status=status, objective=objective, score=score, suspect=bool(reasons),
        suspect_reasons=reasons, deltas=deltas, changes=changes,
        previous_run_id=previous.run_id if previous else None,
        baseline_run_id=baseline.run_id if baseline else None, **fields,
    )


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def metric_deltas(ts: TrainerSummary | None, other: TrainerSummary | None, objective: str) -> dict[str, float | None]:
    if ts is None or other is None:
        return {}
    out: dict[str, float | None] = {}
    for name in (objective, *DELTA_METRICS):
        a, b = _finite(ts.metric(name)), _finite(other.metric(name))
        if a is not None and b is not None:
            out[name] = a - b
    return out


def write_loop_summary(run_dir: Path, summary: LoopSummary) -> Path:
    """The one writer of runs/<id>/summary.json (collect writes it, the analysis adds the finding codes)."""
    return atomic_write_json(run_dir / "summary.json", summary.model_dump(mode="json"))


def summary_in_memory(rec: RunRecord, history: list[RunRecord], objective: str) -> LoopSummary:
    """A loop summary for a run that has none (an external trainer's ledger, or a damaged file)."""
    idx = next((i for i, r in enumerate(history) if r.run_id == rec.run_id), len(history))
    previous = history[idx - 1] if idx > 0 else None
    status = rec.trainer_summary.status if rec.trainer_summary is not None else "crashed"
    return build_loop_summary(rec, status=status, objective=objective, previous=previous, baseline=None)


def ensure_summaries(history: list[RunRecord], objective: str) -> None:
    for rec in history:
        if rec.loop_summary is None:
            rec.loop_summary = summary_in_memory(rec, history, objective)


# --------------------------------------------------------------------------------------------------
@dataclass
class BestPointer:
    run_id: str
    score: float
    checkpoint: str  # workspace-relative path of the run's own checkpoint
    objective: str = DEFAULT_OBJECTIVE


def read_best(ws: Workspace, warn: Warn | None = None) -> BestPointer | None:
    """runs/best.json if it is well formed and points at a run and a checkpoint that exist."""
    warn = warn or _log_warn
    data = read_json_tolerant(ws.best_json, warn)
    if data is None:
        return None
    run_id, score, ckpt = (data.get(k) for k in ("run_id", "score", "checkpoint")) if isinstance(data, dict) else (None,) * 3
    if not (isinstance(run_id, str) and _plain_name(run_id) and isinstance(ckpt, str) and 0 < len(ckpt) < 4096
            and is_finite_number(score)):
        warn(f"{ws.best_json} lacks a valid run_id/score/checkpoint; it will be rebuilt from the ledger")
        return None
    objective = data.get("objective")
    ptr = BestPointer(run_id, float(score), ckpt, objective if isinstance(objective, str) else DEFAULT_OBJECTIVE)
    try:
        run_exists, ckpt_exists = (ws.runs / run_id).is_dir(), ws.resolve(ckpt).is_file()
    except (OSError, ValueError):  # a name the filesystem refuses (too long, NUL byte)
        run_exists = ckpt_exists = False
    if not run_exists:
        warn(f"{ws.best_json} points at run {run_id}, which does not exist; it will be rebuilt from the ledger")
        return None
    if not ckpt_exists:
        warn(f"{ws.best_json} points at {ckpt}, which does not exist; it will be rebuilt from the ledger")
        return None
    return ptr


def _plain_name(name: str) -> bool:
    """A run id names a folder directly under runs/: no separators, no '..', a sane length."""
    return 0 < len(name) <= 255 and "/" not in name and "\\" not in name and name not in (".", "..") and "\0" not in name


def best_eligible(ws: Workspace, rec: RunRecord) -> tuple[Path | None, str]:
    """The checkpoint that would make this run best, or why it cannot be best."""
    s = rec.loop_summary
    if s is None or s.score is None:
        return None, "no score"
    if s.suspect:
        return None, "suspect metrics"
    if s.status == "diverged":
        return None, "diverged"
    ckpt = run_checkpoint(ws, rec, "best")
    ok, why = checkpoint_loads(ckpt)
    return (ckpt, "") if ok else (None, why)


def set_best(ws: Workspace, rec: RunRecord, ckpt: Path) -> BestPointer:
    assert rec.loop_summary is not None and rec.loop_summary.score is not None
    atomic_copy(ckpt, ws.best_model)
    ptr = BestPointer(rec.run_id, float(rec.loop_summary.score), ws.rel(ckpt), rec.loop_summary.objective)
    atomic_write_json(ws.best_json, {"run_id": ptr.run_id, "score": ptr.score, "objective": ptr.objective,
                                     "checkpoint": ptr.checkpoint, "model": ws.rel(ws.best_model),
                                     "updated_at": iso_now()})
    return ptr


def rebuild_best(ws: Workspace, history: list[RunRecord], warn: Warn | None = None) -> BestPointer | None:
    """Recompute best from every run's summary (used when best.json is missing, corrupt or dangling)."""
    warn = warn or _log_warn
    ranked = sorted((r for r in history if r.loop_summary is not None and r.loop_summary.score is not None),
                    key=lambda r: r.loop_summary.score, reverse=True)  # type: ignore[union-attr]
    for rec in ranked:
        ckpt, _ = best_eligible(ws, rec)
        if ckpt is not None:
            ptr = set_best(ws, rec, ckpt)
            warn(f"rebuilt {ws.rel(ws.best_json)}: best is run {rec.run_id} (score {ptr.score:.4g})")
            return ptr
    if ws.best_json.exists():
        ws.best_json.unlink()
        warn(f"removed {ws.rel(ws.best_json)}: no run in the ledger qualifies as best")
    return None


def check_pointers(ws: Workspace, history: list[RunRecord], warn: Warn | None = None) -> BestPointer | None:
    """Repair best.json / models/best.pt at session start; returns the valid best pointer."""
    warn = warn or _log_warn
    best = read_best(ws, warn)
    if best is None:
        if ws.best_json.exists() or any(r.loop_summary and r.loop_summary.score is not None for r in history):
            return rebuild_best(ws, history, warn)
        return None
    ok, why = checkpoint_loads(ws.best_model)
    if not ok:
        src = ws.resolve(best.checkpoint)
        if checkpoint_loads(src)[0]:
            atomic_copy(src, ws.best_model)
            warn(f"{ws.rel(ws.best_model)} was unusable ({why}); restored it from {best.checkpoint}")
        else:
            warn(f"best checkpoint {best.checkpoint} does not load; rebuilding best from the ledger")
            return rebuild_best(ws, [r for r in history if r.run_id != best.run_id], warn)
    return best


@dataclass
class Promotion:
    latest: bool = False
    best: bool = False
    notes: tuple[str, ...] = ()


def promote(ws: Workspace, rec: RunRecord, warn: Warn | None = None) -> Promotion:
    """Update models/latest.pt and best (pointer last). Idempotent: redoing it gives the same result."""
    warn = warn or _log_warn
    s = rec.loop_summary
    assert s is not None
    notes: list[str] = []
    latest = False
    if s.suspect:
        notes.append("latest not updated: suspect metrics")
    elif s.status not in LATEST_OK:
        notes.append(f"latest not updated: status {s.status}")
    else:
        ckpt = run_checkpoint(ws, rec, "latest")
        ok, why = checkpoint_loads(ckpt)
        if ok and ckpt is not None:
            atomic_copy(ckpt, ws.latest_model)
            atomic_write_json(ws.latest_json, {"run_id": rec.run_id, "checkpoint": ws.rel(ckpt), "updated_at": iso_now()})
            latest = True
        else:
            notes.append(f"latest not updated: {why}")
    best = False
    current = read_best(ws, warn)
    ckpt, why = best_eligible(ws, rec)
    if ckpt is None:
        notes.append(f"not best: {why}")
    elif current is not None and current.run_id == rec.run_id:
        best = True  # a redo after a crash: the pointer is already ours; refresh the copy
        atomic_copy(ckpt, ws.best_model)
    elif current is None or s.score >= current.score:  # type: ignore[operator]
        set_best(ws, rec, ckpt)
        best = True
    return Promotion(latest=latest, best=best, notes=tuple(notes))


def pinned_baseline(ws: Workspace, warn: Warn | None = None) -> str | None:
    data = read_json_tolerant(ws.baseline_json, warn)
    if data is None:
        return None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    try:
        exists = isinstance(run_id, str) and _plain_name(run_id) and (ws.runs / run_id).is_dir()
    except (OSError, ValueError):
        exists = False
    if not exists:
        (warn or _log_warn)(f"{ws.rel(ws.baseline_json)} does not name an existing run ({run_id!r}); "
                            f"deltas are taken against best instead")
        return None
    return run_id
