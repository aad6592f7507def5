"""Per-epoch metrics rows (`metrics.jsonl`) and the tail-window aggregates the summary is built from.

A row holds the epoch's counters, the PPO stats (means over every minibatch of the update), the env
stats as means over the episodes that finished during the epoch (`None` when none finished) with their
count in `episodes`, and the utilisation sample. The tail window (`autopilot.metrics_window` epochs)
averages env stats weighted by episodes (sum of per-episode values / episodes, the same number as if
the epochs were one) and trainer stats and utilisation as plain means over epochs that have them.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable
from typing import Any

TRAINER_KEYS = ("approx_kl", "old_approx_kl", "clipfrac", "entropy", "value_loss", "policy_loss", "explained_var")
UTIL_KEYS = ("cpu_pct", "dram_pct", "gpu_pct", "vram_pct")
TIMING_KEYS = ("env_s", "policy_s", "update_s")  # seconds per epoch: env stepping, policy in rollout, update
ENV_DEFAULT_KEYS = ("success_rate", "collision_rate", "oob_rate", "episode_length", "mean_reward")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def env_means(sums: dict[str, float]) -> tuple[dict[str, float | None], int]:
    """Episode sums from `pop_episode_stats` -> (per-episode means, episode count)."""
    sums = dict(sums)
    n = int(sums.pop("episodes", 0))
    return {k: (v / n if n else None) for k, v in sums.items()}, n


def epoch_row(*, epoch: int, agent_steps: int, sps: float, wall_s: float, lr: float, stats: dict[str, float],
              env_sums: dict[str, float], env_keys: Iterable[str], util: dict[str, float | None]) -> dict[str, Any]:
    means, episodes = env_means(env_sums)
    row: dict[str, Any] = {"epoch": epoch, "agent_steps": agent_steps, "sps": sps, "wall_s": wall_s,
                           "learning_rate": lr}
    row.update({k: stats.get(k) for k in TRAINER_KEYS})
    for key in dict.fromkeys([*env_keys, *means]):
        row[key] = means.get(key)
    row["episodes"] = episodes
    row.update({k: util.get(k) for k in UTIL_KEYS})
    return row


def row_json(row: dict[str, Any]) -> str:
    """One metrics.jsonl line; NaN/inf become null so every line is strict JSON."""
    clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()}
    return json.dumps(clean, allow_nan=False) + "\n"


class TailWindow:
    """The last `size` rows, and their aggregates."""

    def __init__(self, size: int, rows: Iterable[dict[str, Any]] = ()):
        self.rows: deque[dict[str, Any]] = deque(rows, maxlen=max(1, size))

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    @property
    def full(self) -> bool:
        return len(self.rows) == self.rows.maxlen

    def env_keys(self) -> list[str]:
        skip = {"epoch", "agent_steps", "sps", "wall_s", "learning_rate", "episodes", *TRAINER_KEYS, *UTIL_KEYS,
                *TIMING_KEYS}
        return list(dict.fromkeys(k for r in self.rows for k in r if k not in skip))

    def env_metrics(self) -> dict[str, float | int | None]:
        """Episode-weighted means of each env stat over the window, plus the episode count."""
        out: dict[str, float | int | None] = {}
        total = sum(int(r.get("episodes") or 0) for r in self.rows)
        for key in self.env_keys():
            num = den = 0.0
            for r in self.rows:
                n = int(r.get("episodes") or 0)
                if n and _finite(r.get(key)):
                    num += r[key] * n
                    den += n
            out[key] = num / den if den else None
        out["episodes"] = total
        return out

    def mean(self, key: str) -> float | None:
        vals = [r[key] for r in self.rows if _finite(r.get(key))]
        return sum(vals) / len(vals) if vals else None

    def trainer_metrics(self) -> dict[str, float | None]:
        return {k: self.mean(k) for k in TRAINER_KEYS}

    def utilisation(self) -> dict[str, float | None]:
        return {k: self.mean(k) for k in UTIL_KEYS}

    def objective(self, name: str) -> float | None:
        """The objective over the window: an env stat (episode-weighted) or a trainer stat (mean)."""
        value = self.env_metrics().get(name) if name in self.env_keys() else self.mean(name)
        return float(value) if _finite(value) else None
