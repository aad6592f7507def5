"""Shared ledger factories for the decision tests (also imported by the loop's tests and digest_doc.py):
`from ledgers import ...` works because tests/support is on pytest's `pythonpath` (pyproject.toml).

`make_record` builds one in-memory RunRecord the way the runner would have ingested it: the full
config (the seeds' topology by default: env 4×8, vec 28/56, bptt 16 → batch 28,672), a trainer
summary, and a loop summary whose score and suspect flag come from `score_of` / `sanity_reasons`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from autopilot.config import config_from_dict
from autopilot.decide.records import LoopSummary, RunRecord
from autopilot.decide.sanity import sanity_reasons, score_of
from autopilot.summary import parse_summary

BASE_CONFIG: dict[str, Any] = {
    "env_name": "drone_delivery",
    "env": {"num_envs": 4, "num_drones": 8},
    "vec": {"num_envs": 56, "num_workers": 28},
    "train": {"device": "cpu", "seed": 1, "bptt_horizon": 16, "total_timesteps": 10_000_000,
              "learning_rate": 0.0025, "ent_coef": 0.01, "update_epochs": 12, "vf_coef": 2.0,
              "max_minibatch_size": 32768},
    # Fresh starts by default: runs that differ in a knob are then controlled comparisons (a warm-start
    # chain is not; tests that need one say so).
    "autopilot": {"resume_mode": "fresh", "resume_from": "latest", "max_run_seconds": 3600.0},
}
HEALTHY_METRICS: dict[str, Any] = {"success_rate": 0.30, "mean_reward": 12.0, "collision_rate": 0.002,
                                   "oob_rate": 0.10, "episode_length": 150.0, "episodes": 1000}
# entropy 2.0 over 4 action dims = 0.5 nats/dim, a Gaussian std of 0.40: inside both entropy lines.
HEALTHY_TRAINER: dict[str, Any] = {"approx_kl": 0.012, "clipfrac": 0.12, "entropy": 2.0, "value_loss": 0.05,
                                   "policy_loss": -0.01, "explained_var": 0.80, "act_dim": 4}
# The seeds' first note: approx_kl ~0, clipfrac ~0, entropy ~32.7, success 0.
SEEDS_TRAINER: dict[str, Any] = {"approx_kl": 0.0002, "clipfrac": 0.0004, "entropy": 32.73, "value_loss": 0.0065,
                                 "policy_loss": -0.0001, "explained_var": 0.85, "act_dim": 4}
AUTO = object()


def rid(i: int) -> str:
    """Run ids in the workspace's form, ordered by i: 2025-09-20T100000Z, 2025-09-20T110000Z, ..."""
    return f"2025-09-20T{10 + i:02d}0000Z"


def make_config(overrides: dict[str, Any] | None = None):
    return config_from_dict(copy.deepcopy(BASE_CONFIG), overrides or {})


def make_record(run_id: str, overrides: dict[str, Any] | None = None, *, metrics: dict[str, Any] | None = None,
                trainer: dict[str, Any] | None = None, status: str = "completed", score: Any = AUTO,
                suspect: bool | None = None, sps: float | None = 125_000.0, curve: list[dict] | None = None,
                summary: bool | None = None, error: str | None = None, utilisation: dict | None = None,
                run_dir: Path | None = None, resume: dict[str, Any] | None = None) -> RunRecord:
    """One run. `metrics`/`trainer` are merged over the healthy defaults; `summary=False` (the default
    for status crashed) leaves trainer_summary None; `score`/`suspect` default to what the runner computes."""
    cfg = make_config(overrides)
    if summary is None:
        summary = status not in ("crashed", "failed")
    ts = None
    if summary:
        ts = parse_summary({
            "schema": 1, "run_id": run_id,
            "status": status if status in ("completed", "failed", "diverged", "stalled", "interrupted") else "failed",
            "throughput": {"sps": sps, "agent_steps": cfg.train.total_timesteps, "epoch": 349,
                           "wall_s": cfg.train.total_timesteps / sps if sps else None},
            "metrics": {**HEALTHY_METRICS, **(metrics or {})},
            "trainer": {**HEALTHY_TRAINER, **(trainer or {})},
            "utilisation": utilisation or {"cpu_pct": 355.0, "gpu_pct": None, "dram_pct": 33.0, "vram_pct": None},
            "checkpoint": {"path": f"runs/{run_id}/checkpoint.pt", "resumed_from": None},
        })
    objective = cfg.autopilot.objective
    reasons = sanity_reasons(ts) if ts is not None else []
    if score is AUTO:
        score = score_of(ts, objective)
    flagged = bool(reasons) if suspect is None else suspect
    ls = LoopSummary(run_id=run_id, status=status, objective=objective, score=score, suspect=flagged,
                     suspect_reasons=reasons if flagged else [], error=error, resume=resume or {})
    return RunRecord(run_id=run_id, run_dir=run_dir or Path("runs") / run_id, config=cfg,
                     raw_config=cfg.model_dump(), trainer_summary=ts, loop_summary=ls, curve=curve or [])


def ent_coef_ledger() -> list[RunRecord]:
    """Three runs differing mainly in ent_coef, best at the lowest value (the seeds' second note):
    0.01 → 0.31, 0.12 → 0.12, 0.06 → 0.00 (latest)."""
    return [
        make_record(rid(0), {"train.ent_coef": 0.01, "train.learning_rate": 0.002},
                    metrics={"success_rate": 0.31, "mean_reward": 481.55}),
        make_record(rid(1), {"train.ent_coef": 0.12}, metrics={"success_rate": 0.12, "mean_reward": 250.57}),
        make_record(rid(2), {"train.ent_coef": 0.06, "train.total_timesteps": 20_000_000},
                    metrics={"success_rate": 0.0, "mean_reward": 139.37, "episode_length": 490.08}, sps=135_100.0),
    ]


def seeds_ledger() -> list[RunRecord]:
    """The seeds' story: a good run, a glitched 'success_rate' of 1.26e3 at the same config, 9.38 at
    ent_coef 0.12 (both suspect), then the latest run at 0.12 with tiny updates and entropy 32.7."""
    return [
        make_record(rid(0), {"train.ent_coef": 0.01, "train.learning_rate": 0.002},
                    metrics={"success_rate": 0.31, "mean_reward": 481.55}),
        make_record(rid(1), {"train.ent_coef": 0.01, "train.learning_rate": 0.0025},
                    metrics={"success_rate": 1.26e3, "mean_reward": 474.92}),
        make_record(rid(2), {"train.ent_coef": 0.12}, metrics={"success_rate": 9.38, "mean_reward": 250.57},
                    sps=126_670.0),
        make_record(rid(3), {"train.ent_coef": 0.12, "train.total_timesteps": 11_038_720},
                    metrics={"success_rate": 0.0, "mean_reward": 7.43, "collision_rate": 0.00073,
                             "oob_rate": 0.85, "episode_length": 149.0},
                    trainer=SEEDS_TRAINER, sps=124_600.0),
    ]

