"""A session of `autopilot run` and the state one loop process carries: the command's target (kept in
`session.json` so a rerun of the same command finishes the runs still missing, with the time already
spent counted against `--budget-minutes`), the `--until` criterion, and the stop flag set by signals.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from autopilot.atomic import atomic_write_json
from autopilot.errors import ConfigError
from autopilot.loop import launch
from autopilot.workspace.layout import Workspace, iso_now, list_run_dirs, read_json_tolerant, read_state

_UNTIL = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|>|<|==)\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Until:
    metric: str
    op: str
    value: float

    def met(self, x: float | None) -> bool:
        if x is None or not math.isfinite(x):
            return False
        return {">=": x >= self.value, "<=": x <= self.value, ">": x > self.value, "<": x < self.value,
                "==": x == self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def parse_until(text: str | None) -> Until | None:
    if not text:
        return None
    m = _UNTIL.match(text)
    if not m:
        raise ConfigError(f"--until {text!r} is not of the form METRIC OP NUMBER; e.g. --until 'success_rate>=0.9'")
    return Until(m.group(1), m.group(2), float(m.group(3)))


# --------------------------------------------------------------------------------------------------
@dataclass
class Session:
    id: str
    signature: dict[str, Any]
    target: int
    started_at: str
    spent_s: float = 0.0
    status: str = "running"  # running | stopped (resumable) | finished
    stop_reason: str = ""
    advisor_tokens: int = 0  # tokens an llm advisor has spent in this session (its budget survives restarts)

    def save(self, ws: Workspace) -> None:
        atomic_write_json(ws.session_path, self.__dict__)


def open_session(ws: Workspace, signature: dict[str, Any], target: int, say) -> Session:
    data = read_json_tolerant(ws.session_path, lambda m: say(m, "yellow"))
    if isinstance(data, dict) and data.get("status") != "finished":
        if data.get("signature") == signature:
            try:
                s = Session(**{k: data[k] for k in Session.__dataclass_fields__ if k in data})
                say(f"resuming session {s.id} (same command; {s.spent_s:.0f}s spent so far)", "cyan")
                return s
            except TypeError:
                say("session.json is damaged; starting a new session", "yellow")
        else:
            say(f"an unfinished session {data.get('id', '?')} ran a different command; starting a new session", "yellow")
    s = Session(id=uuid.uuid4().hex[:8], signature=signature, target=target, started_at=iso_now())
    s.save(ws)
    return s


@dataclass
class Loop:
    """What one `autopilot run` process knows while it works."""

    ws: Workspace
    console: Console
    mode: str
    advisor: str
    base_overrides: dict[str, Any]
    session: Session
    until: Until | None
    budget_s: float | None
    stop: launch.StopFlag = field(default_factory=launch.StopFlag)
    fatal: str = ""  # set when going on is pointless (the trainer cannot even be started)
    clock_mark: float = field(default_factory=time.monotonic)

    def say(self, msg: str, style: str = "") -> None:
        self.console.print(f"[{style}]{msg}[/]" if style else msg, highlight=False, soft_wrap=True)

    def warn(self, msg: str) -> None:
        self.say(f"  ! {msg}", "yellow")

    def tick(self) -> None:
        """Add the wall time since the last mark to the session (survives restarts)."""
        now = time.monotonic()
        self.session.spent_s += now - self.clock_mark
        self.clock_mark = now
        self.session.save(self.ws)

    def remaining_s(self) -> float | None:
        if self.budget_s is None:
            return None
        return self.budget_s - self.session.spent_s - (time.monotonic() - self.clock_mark)

    def session_runs(self) -> list[tuple[Path, dict[str, Any]]]:
        return [(d, st) for d in list_run_dirs(self.ws) if (st := read_state(d)).get("session") == self.session.id]


