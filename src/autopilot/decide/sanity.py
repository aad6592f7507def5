"""Is a trainer summary believable? Every value is checked against its own definition.

A rate outside [0, 1], a NaN or an infinity, a negative count: each is a glitch, named with the key,
the value and the definition it breaks. The runner marks such a run suspect at ingest (never best);
diagnosis reports it as `metric_glitch`; trends and the noise band leave it out. The same rules apply
to summaries written by external trainers.
"""

from __future__ import annotations

import math
from typing import Any

from autopilot.config.model import AutopilotConfig
from autopilot.decide.records import RunRecord
from autopilot.space import fmt_num
from autopilot.summary import TrainerSummary

# Known definitions, by dotted key; env-specific metrics fall back to the name rules below.
_RATES = {"trainer.clipfrac"}
_COUNTS = {"metrics.episodes", "throughput.agent_steps", "throughput.epoch", "eval.episodes"}
_NON_NEGATIVE = {"metrics.episode_length", "throughput.sps", "throughput.wall_s", "trainer.value_loss",
                 "utilisation.cpu_pct"}
_PERCENTS = {"utilisation.gpu_pct", "utilisation.dram_pct", "utilisation.vram_pct"}
_AT_MOST_ONE = {"trainer.explained_var"}  # 1 - Var[G - V] / Var[G] cannot exceed 1
# approx_kl's k1 estimator (mean of -log ratio) may dip slightly below 0 from sampling noise.
_KL_FLOOR = -1e-3
_RATE_SUFFIXES = ("_rate", "_frac", "_fraction")


def _fields(summary: TrainerSummary) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section in ("metrics", "trainer"):
        for k, v in getattr(summary, section).items():
            out[f"{section}.{k}"] = v
    for section in ("throughput", "utilisation"):
        for k, v in getattr(summary, section).model_dump().items():
            out[f"{section}.{k}"] = v
    if summary.eval is not None:
        for k, v in summary.eval.model_dump().items():
            out[f"eval.{k}"] = v
    return out


def _is_rate(key: str) -> bool:
    section, _, name = key.partition(".")
    return key in _RATES or (section in ("metrics", "eval") and name.endswith(_RATE_SUFFIXES))


def _reason(key: str, value: float) -> str | None:
    if not math.isfinite(value):
        return f"{key}={value} is not finite"
    shown = fmt_num(value)
    if _is_rate(key) and not 0.0 <= value <= 1.0:
        return f"{key}={shown} is outside [0, 1] (a rate)"
    if key in _COUNTS and (value < 0 or not float(value).is_integer()):
        return f"{key}={shown} is not a non-negative whole number (a count)"
    if key in _NON_NEGATIVE and value < 0:
        return f"{key}={shown} is negative (defined ≥ 0)"
    if key in _PERCENTS and not 0.0 <= value <= 100.0:
        return f"{key}={shown} is outside [0, 100] (a percentage)"
    if key in _AT_MOST_ONE and value > 1.0 + 1e-9:
        return f"{key}={shown} is above 1 (defined ≤ 1)"
    if key == "trainer.approx_kl" and value < _KL_FLOOR:
        return f"{key}={shown} is below {_KL_FLOOR} (a KL divergence is ≥ 0)"
    return None


def sanity_reasons(summary: TrainerSummary) -> list[str]:
    """Every value that breaks its own definition, one line each; empty means clean."""
    reasons = []
    for key, value in _fields(summary).items():
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        reason = _reason(key, float(value))
        if reason:
            reasons.append(reason)
    return reasons


def score_of(summary: TrainerSummary | None, objective: str) -> float | None:
    """The objective from the summary's tail metrics; None when missing or not finite."""
    if summary is None:
        return None
    value = summary.metric(objective)
    if value is None or not math.isfinite(value):
        return None
    return value


# -- record-level views (what the loop's other modules use) ------------------------------------------
def suspect_reasons(record: RunRecord) -> list[str]:
    """Why a run's numbers cannot be trusted: the runner's verdict plus the summary's own glitches."""
    reasons = list(record.loop_summary.suspect_reasons) if record.loop_summary else []
    if record.trainer_summary is not None:
        reasons += [r for r in sanity_reasons(record.trainer_summary) if r not in reasons]
    if record.suspect and not reasons:
        reasons.append("marked suspect by the runner")
    return reasons


def is_suspect(record: RunRecord) -> bool:
    return bool(suspect_reasons(record))


def record_score(record: RunRecord, objective: str) -> float | None:
    """The run's score: the runner's (summary.json) when it has one, else computed from the summary."""
    score = record.score
    if score is None:
        score = score_of(record.trainer_summary, objective)
    return score if score is not None and math.isfinite(score) else None


def trusted_score(record: RunRecord, objective: str) -> float | None:
    """The score when it may be compared with others: finite and from a run that is not suspect."""
    return None if is_suspect(record) else record_score(record, objective)


def best_of(history: list[RunRecord], objective: str) -> RunRecord | None:
    """The highest trusted score in the ledger (a later run wins a tie); None if there is none."""
    best, best_score = None, -math.inf
    for rec in history:
        score = trusted_score(rec, objective)
        if score is not None and score >= best_score:
            best, best_score = rec, score
    return best


# -- the ledger-level decisions every reader shares (one home each) ----------------------------------
DEFAULT_OBJECTIVE: str = AutopilotConfig.model_fields["objective"].default


def objective_of(history: list[RunRecord]) -> str:
    """The ledger's objective: the latest run config's `autopilot.objective`, else the config default."""
    cfg = next((r.config for r in reversed(history) if r.config is not None), None)
    return cfg.autopilot.objective if cfg is not None else DEFAULT_OBJECTIVE


def trusted_best(history: list[RunRecord], objective: str, pointer: RunRecord | str | None = None) -> RunRecord | None:
    """Which run is best. The runner's pointer (runs/best.json, a record or its run id) when it names a
    run of `history` that is not suspect; else the highest trusted score in the ledger (`best_of`)."""
    if isinstance(pointer, str):
        pointer = next((r for r in history if r.run_id == pointer), None)
    if pointer is not None and not is_suspect(pointer):
        return pointer
    return best_of(history, objective)
