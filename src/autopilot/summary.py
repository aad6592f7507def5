"""`trainer_summary.json`, schema v1: what a trainer (ours or a user's) writes at the end of a run.

Parsing is lenient about values and strict about shape: a success_rate of 9.38 or a NaN parses (the
loop must see it to flag it as `metric_glitch`), but a missing section or a string where a number
belongs is a `SummaryError` naming the key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autopilot.atomic import atomic_write_json, read_json
from autopilot.errors import AutopilotError

SCHEMA_VERSION = 1
RunStatus = Literal["completed", "failed", "diverged", "stalled", "interrupted", "crashed"]
Number = float | int | None


class SummaryError(AutopilotError):
    """A trainer_summary.json that cannot be read as schema v1."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class Throughput(_Part):
    sps: Number = None
    agent_steps: Number = None
    epoch: Number = None
    wall_s: Number = None


class Utilisation(_Part):
    cpu_pct: Number = None
    gpu_pct: Number = None  # null when not measurable, never a fake 0.0
    dram_pct: Number = None
    vram_pct: Number = None


class EvalBlock(_Part):
    episodes: Number = None
    success_rate: Number = None
    mean_reward: Number = None


class CheckpointInfo(_Part):
    path: str | None = None
    resumed_from: str | None = None


class TrainerSummary(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_version: int = Field(SCHEMA_VERSION, alias="schema")
    run_id: str = ""
    status: RunStatus = "completed"
    throughput: Throughput = Field(default_factory=Throughput)
    metrics: dict[str, Number] = Field(default_factory=dict)  # env stats over the tail window
    trainer: dict[str, Number] = Field(default_factory=dict)  # approx_kl, clipfrac, entropy, ... tail means
    utilisation: Utilisation = Field(default_factory=Utilisation)
    eval: EvalBlock | None = None
    checkpoint: CheckpointInfo = Field(default_factory=CheckpointInfo)
    error: str | None = None  # tail of the log / reason, for failed runs

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")

    def metric(self, name: str) -> float | None:
        """A metric by name from metrics, trainer, throughput or eval (`eval.success_rate`)."""
        if name.startswith("eval."):
            block = self.eval.model_dump() if self.eval else {}
            value = block.get(name[5:])
        else:
            value = self.metrics.get(name, self.trainer.get(name, self.throughput.model_dump().get(name)))
        if value is None or isinstance(value, bool):
            return None
        return float(value)


def parse_summary(data: Any) -> TrainerSummary:
    if not isinstance(data, dict):
        raise SummaryError(f"trainer summary must be a JSON object, got {type(data).__name__}")
    schema = data.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise SummaryError(f"trainer summary schema={schema!r} is not supported; write \"schema\": {SCHEMA_VERSION}")
    try:
        return TrainerSummary.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise SummaryError(f"trainer summary key {key}={err.get('input')!r} is invalid ({err['msg']})") from None


def read_summary(path: str | Path) -> TrainerSummary:
    data = read_json(Path(path), SummaryError)
    return parse_summary(data)


def write_summary(path: str | Path, summary: TrainerSummary) -> Path:
    return atomic_write_json(path, summary.to_json())


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
