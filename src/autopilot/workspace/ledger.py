"""The read side of the ledger: one call that every reader of a workspace uses.

`read_ledger(ws)` loads every run (tolerantly: a damaged file is a warning, never an error), fills in
the loop summary of runs that have none (an external trainer's ledger, a damaged file) and answers the
questions the status table, the report, the loop and the analysis (hence the advisors' context) ask:

- `runs`: the history, oldest first; `objective`: the ledger's objective (`sanity.objective_of`);
- `best`: the trusted best run (`sanity.trusted_best`: the runs/best.json pointer unless suspect, else
  the highest trusted score); `pointer_run`: the run runs/best.json names, even a suspect one;
- `baseline`: the run deltas are taken against (runs/baseline.json, else best);
- `recent_sps`: the latest measured throughput (the runtime budget's input);
- `shown_status(rec)`: a run's status, or its phase while the loop is still working on it;
- `mode`: the base profile the latest run started from.

Nothing here writes: each workspace file has one writing module (see the README's map of the code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from autopilot.config import diff_configs
from autopilot.decide.records import RunRecord
from autopilot.decide.sanity import objective_of, trusted_best
from autopilot.workspace.layout import Warn, Workspace, _log_warn, load_history, read_state
from autopilot.workspace.pointers import BestPointer, ensure_summaries, pinned_baseline, read_best


@dataclass
class Ledger:
    ws: Workspace
    runs: list[RunRecord]
    objective: str
    pointer: BestPointer | None
    pinned_baseline: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def latest(self) -> RunRecord | None:
        return self.runs[-1] if self.runs else None

    @property
    def pointer_run(self) -> RunRecord | None:
        """The run runs/best.json names (checkpoints resume from it), suspect or not."""
        ptr = self.pointer
        return next((r for r in self.runs if ptr is not None and r.run_id == ptr.run_id), None)

    @property
    def best(self) -> RunRecord | None:
        return trusted_best(self.runs, self.objective, self.pointer_run)

    @property
    def baseline(self) -> RunRecord | None:
        """Deltas are taken against the pinned baseline, else the best pointer's run."""
        run_id = self.pinned_baseline or (self.pointer.run_id if self.pointer else None)
        return next((r for r in self.runs if r.run_id == run_id), None)

    @property
    def pinned_run(self) -> RunRecord | None:
        return next((r for r in self.runs if r.run_id == self.pinned_baseline), None)

    @property
    def recent_sps(self) -> float | None:
        return recent_sps(self.runs)

    @property
    def mode(self) -> str | None:
        return next((m for r in reversed(self.runs) if (m := run_mode(r))), None)

    def shown_status(self, rec: RunRecord) -> str:
        phase = read_state(rec.run_dir).get("phase")
        return rec.status if phase in (None, "done") else f"{phase}…"


def read_ledger(ws: Workspace, warn: Warn | None = None, *, upto: str | None = None,
                with_curve: bool = False) -> Ledger:
    """The ledger up to (and including) run `upto`, or all of it. Warnings go to `warn` and are kept."""
    warnings: list[str] = []

    def note(msg: str) -> None:
        warnings.append(msg)
        (warn or _log_warn)(msg)

    runs = load_history(ws, note, upto=upto, with_curve=with_curve)
    objective = objective_of(runs)
    ensure_summaries(runs, objective)  # external ledgers and damaged summaries: computed in memory
    pointer = read_best(ws, note)
    return Ledger(ws=ws, runs=runs, objective=objective, pointer=pointer,
                  pinned_baseline=pinned_baseline(ws, note), warnings=warnings)


def recent_sps(history: list[RunRecord]) -> float | None:
    """The throughput of the latest run that measured one (finite, positive)."""
    for rec in reversed(history):
        ts = rec.trainer_summary
        sps = ts.throughput.sps if ts is not None else None
        if isinstance(sps, (int, float)) and math.isfinite(sps) and sps > 0:
            return float(sps)
    return None


def _summary_text(rec: RunRecord, key: str) -> str | None:
    value = (rec.loop_summary.model_extra or {}).get(key) if rec.loop_summary is not None else None
    return value if isinstance(value, str) else None


def run_mode(rec: RunRecord) -> str | None:
    """The base a run started from (`quick`, `full` or `config`), as its loop summary records it."""
    return _summary_text(rec, "mode")


def run_base_digest(rec: RunRecord) -> str | None:
    """The fingerprint of the base file the run's session started from (`proposals.profile_digest`)."""
    return _summary_text(rec, "base_digest")


def changed_knobs(prev: RunRecord | None, rec: RunRecord) -> str:
    """What a run changed against the run before it, as the status table and the report show it."""
    if prev is None:
        return "(first run)"
    if not prev.raw_config or not rec.raw_config:
        return "?"
    ch = [c for c in diff_configs(prev.raw_config, rec.raw_config) if not c.key.startswith("autopilot.resume")]
    shown = "; ".join(str(c) for c in ch[:3]) + (f" (+{len(ch) - 3})" if len(ch) > 3 else "")
    return shown or "—"
