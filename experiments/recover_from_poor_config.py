"""Does the loop fix a deliberately poor start? (issue: "started from ent_coef 0.12, 4 quick runs end
clearly better than the first").

For each seed: a fresh workspace, `autopilot run --runs 4 --mode quick --set train.ent_coef=0.12
--set train.seed=<seed>` with the rules advisor, then the objective of the first and the last run (and
the best), and what the advisor changed on the way. Run: `python experiments/recover_from_poor_config.py`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from autopilot.loop.runner import run_loop
from autopilot.workspace.layout import load_history, open_workspace


def one_session(workdir: Path, seed: int, runs: int, ent_coef: float, console: Console) -> list[dict]:
    if (workdir / "runs").is_dir() and any((workdir / "runs").iterdir()):
        raise SystemExit(f"{workdir} already holds runs; the experiment needs a fresh workspace per seed")
    run_loop(workdir, runs=runs, mode="quick", advisor="rules",
             base_overrides={"train.ent_coef": ent_coef, "train.seed": seed}, console=console)
    rows = []
    for rec in load_history(open_workspace(workdir, create_missing_dirs=False), lambda msg: None, with_curve=False):
        if rec.config is None or rec.loop_summary is None:
            continue  # a folder the loop never completed: not part of the session's result
        t = rec.config.train
        rows.append({"run_id": rec.run_id, "score": rec.score, "status": rec.status, "ent_coef": t.ent_coef,
                     "lr": t.learning_rate, "update_epochs": t.update_epochs, "changes": rec.loop_summary.changes})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--ent-coef", type=float, default=0.12)
    ap.add_argument("--keep", type=Path, default=None, help="Keep the workspaces under this folder.")
    args = ap.parse_args()
    console = Console()
    root = args.keep or Path(tempfile.mkdtemp(prefix="autopilot-recover-"))
    table = Table(title=f"{args.runs} quick runs from ent_coef {args.ent_coef}, rules advisor")
    for col in ("seed", "first", "last", "best", "last − first", "ent_coef path", "other changes"):
        table.add_column(col)
    gains = []
    for seed in args.seeds:
        rows = one_session(root / f"seed{seed}", seed, args.runs, args.ent_coef, console)
        scores = [r["score"] for r in rows]
        first, last = scores[0], scores[-1]
        best = max((s for s in scores if s is not None), default=None)
        gain = (last - first) if first is not None and last is not None else None
        if gain is not None:
            gains.append(gain)
        other = sorted({c.split(":")[0] for r in rows[1:] for c in r["changes"] if "ent_coef" not in c})
        table.add_row(str(seed), f"{first:.3f}" if first is not None else "–", f"{last:.3f}" if last is not None else "–",
                      f"{best:.3f}" if best is not None else "–", f"{gain:+.3f}" if gain is not None else "–",
                      " → ".join(f"{r['ent_coef']:g}" for r in rows), ", ".join(other) or "–")
    console.print(table)
    if gains:
        console.print(f"mean gain last − first: {statistics.mean(gains):+.3f} over {len(gains)} seeds "
                      f"(min {min(gains):+.3f}); workspaces in {root}")


if __name__ == "__main__":
    main()
