"""The loop's shared records: what a run left behind, what diagnosis found, what an advisor proposes,
and what the guard decided. Plain typed data; the logic lives in diagnose/trends/advisors/guard/notes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autopilot.config.invariants import Check
from autopilot.config.model import Config
from autopilot.summary import TrainerSummary

Severity = Literal["info", "warn", "error"]
Direction = Literal["up", "down", "set", "revert"]


class LoopSummary(BaseModel):
    """`runs/<run_id>/summary.json`, written by the loop (not the trainer)."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    status: str  # completed|failed|diverged|stalled|interrupted|crashed|running
    objective: str = "success_rate"
    score: float | None = None  # the objective over the tail window (None if unknown)
    suspect: bool = False
    suspect_reasons: list[str] = Field(default_factory=list)
    deltas: dict[str, dict[str, float | None]] = Field(default_factory=dict)  # {"vs_previous": {...}, "vs_baseline": {...}}
    baseline_run_id: str | None = None
    previous_run_id: str | None = None
    resume: dict[str, Any] = Field(default_factory=dict)  # {"mode", "from", "checkpoint"}
    changes: list[str] = Field(default_factory=list)  # "key: old -> new" vs the previous run's config
    findings: list[str] = Field(default_factory=list)  # finding codes
    attempts: int = 1
    started_at: str | None = None
    ended_at: str | None = None
    error: str | None = None


class RunRecord(BaseModel):
    """Everything the loop knows about one run folder."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    run_id: str
    run_dir: Path
    config: Config | None = None
    raw_config: dict[str, Any] = Field(default_factory=dict)
    override: dict[str, Any] = Field(default_factory=dict)
    trainer_summary: TrainerSummary | None = None
    loop_summary: LoopSummary | None = None
    curve: list[dict[str, Any]] = Field(default_factory=list)  # metrics.jsonl rows

    @property
    def status(self) -> str:
        if self.loop_summary is not None:
            return self.loop_summary.status
        if self.trainer_summary is not None:
            return self.trainer_summary.status
        return "unknown"

    @property
    def score(self) -> float | None:
        return self.loop_summary.score if self.loop_summary is not None else None

    @property
    def suspect(self) -> bool:
        return bool(self.loop_summary and self.loop_summary.suspect)


class Move(BaseModel):
    """A knob and the direction a finding suggests (`factor` sizes up/down; `value` for set/revert)."""

    key: str
    direction: Direction
    factor: float | None = None
    value: Any = None
    why: str = ""
    # The evidence dictates this knob (not one suspect among several): it is answered first.
    required: bool = False


class Finding(BaseModel):
    code: str  # stable: updates_too_small, entropy_too_high, metric_glitch, ...
    severity: Severity = "warn"
    evidence: dict[str, Any] = Field(default_factory=dict)  # the numbers and thresholds that fired it
    theory: str = ""
    moves: list[Move] = Field(default_factory=list)
    # Facts the finding rests on that the ledger does not state (e.g. the action layout). An assumed
    # fact may inform a note, never a severe verdict: such a finding is at most a warning.
    assumed: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _assumed_is_never_severe(self) -> Finding:
        if self.assumed and self.severity == "error":
            self.severity = "warn"
        return self

    def evidence_text(self) -> str:
        return ", ".join(f"{k}={_short(v)}" for k, v in self.evidence.items())


class KnobTrend(BaseModel):
    """For one knob that varied: the runs that differ mainly in it, their scores, the best-known value."""

    key: str
    points: list[dict[str, Any]] = Field(default_factory=list)  # {"run_id", "value", "score"}
    best_value: Any = None
    best_score: float | None = None
    direction: str = ""  # "higher is better" | "lower is better" | "mixed" | "flat" | "confounded"


class Proposal(BaseModel):
    advisor: str = "rules"
    changes: dict[str, Any] = Field(default_factory=dict)  # dotted key -> new value
    resume_mode: Literal["fresh", "continue"] = "continue"
    resume_from: str = "latest"  # latest | best | a path
    save_strategy: Literal["best", "latest", "all"] = "best"
    headline: str = ""
    rationale: list[str] = Field(default_factory=list)
    expected_effect: str = ""
    next_steps: list[str] = Field(default_factory=list)
    seed_repeat: bool = False  # a deliberate repeat of an existing config with another seed
    trust_region_override: str = ""  # why a knob may move beyond the trust region this step

    def as_override(self) -> dict[str, Any]:
        """The flat override staged in proposals/next_config.json (changes + autopilot.* keys)."""
        out = dict(self.changes)
        out["autopilot.resume_mode"] = self.resume_mode
        out["autopilot.resume_from"] = self.resume_from
        out["autopilot.save_strategy"] = self.save_strategy
        return out


class NoiseBand(BaseModel):
    """How far apart two scores must be before the difference counts (objective units).

    Measured from seed repeats (runs whose configs differ only in train.seed) when the ledger has
    them; otherwise a stated default. `value` is the band in force either way.
    """

    value: float
    measured: bool = False
    groups: int = 0  # seed-repeat groups used
    runs: int = 0  # runs in those groups
    detail: str = ""  # how it was obtained, with the arithmetic

    def text(self) -> str:
        return f"±{self.value:.4g} ({self.detail})"


class ChangeEffect(BaseModel):
    """What the latest run's change did, judged against the comparison the ledger supports."""

    run_id: str
    previous_run_id: str | None = None
    changed: list[str] = Field(default_factory=list)  # tunable knobs that differ from the previous run
    comparison: Literal["controlled", "continuation", "none"] = "none"
    expected_low: float | None = None  # what the comparison predicts without the change
    expected_high: float | None = None
    score: float | None = None
    verdict: Literal["helped", "hurt", "inconclusive", "unchanged", "unknown"] = "unknown"
    detail: str = ""  # the arithmetic, for the notes


class AdvisorContext(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    history: list[RunRecord]  # oldest first; the latest run is history[-1]
    findings: list[Finding]
    trends: list[KnobTrend]
    space: dict[str, Any]  # SearchSpace
    base_config: Config  # the latest run's full config (what a proposal changes)
    best: RunRecord | None = None  # the trusted best run (never suspect), for comparisons and reverts
    best_resumable: bool = True  # False when the best pointer (models/best.pt) is missing or suspect
    noise_band: float | None = None  # the band in force (measured or assumed), objective units
    noise: NoiseBand | None = None  # the band with how it was obtained
    objective: str = "success_rate"
    sps: float | None = None  # recent measured SPS (runtime budget)
    remaining_runs: int | None = None
    remaining_seconds: float | None = None
    seed: int = 0
    effect: ChangeEffect | None = None  # what the latest run's change did (see decide/attribution.py)
    # A folder the loop keeps for advisors' own state (e.g. an Optuna study's SQLite file), set by the
    # I/O side; None: an advisor keeps nothing between calls (pure, in memory).
    state_dir: str | None = None


class GuardVerdict(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    accepted: bool
    proposal: Proposal  # after repairs
    config: Config | None = None  # the full resolved config the proposal produces, when accepted
    checks: list[Check] = Field(default_factory=list)  # every rule, ✓/✗, for the notes' Checks section
    reasons: list[str] = Field(default_factory=list)  # why rejected
    repairs: list[str] = Field(default_factory=list)  # what was fixed on the way ("train.batch_size derived: ...")


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
