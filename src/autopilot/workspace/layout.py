"""The workspace on disk: its layout, `init`, the single-writer lock, and reading the ledger back.

Reading is tolerant by design: a truncated JSON file, a half-written metrics line or a config that no
longer validates is reported through `warn` (one line naming the file and what was done about it) and
the rest of the ledger is still read. Nothing here raises for a damaged run folder; only a missing or
locked workspace is an error.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from autopilot.atomic import atomic_write_json, atomic_write_text
from autopilot.decide.records import LoopSummary, RunRecord
from autopilot.errors import AutopilotError, WorkspaceError
from autopilot.summary import read_summary

log = logging.getLogger("autopilot.loop")
Warn = Callable[[str], None]
MODES = ("quick", "full")  # the built-in profiles, written by `init` as configs/baseline_<mode>.json
CONFIG_MODE = "config"  # the user's own base config (`--config PATH`), kept as configs/base.json
LABBOOK_HEADER = "# Lab notebook\n\nOne section per run, appended by `autopilot run` / `autopilot propose`.\n"
# The runner's per-run progress marker (see runner.py for the phases).
STATE_FILE = ".state"
STAGING_SUFFIX = ".staging"


def _log_warn(msg: str) -> None:
    log.warning(msg)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_now() -> str:
    return utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(now: datetime | None = None) -> str:
    """The run-id form of a UTC time: 2025-09-20T153515Z."""
    return (now or utc_now()).strftime("%Y-%m-%dT%H%M%SZ")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def proposals(self) -> Path:
        return self.root / "proposals"

    @property
    def rejected(self) -> Path:
        return self.proposals / "rejected"

    @property
    def next_config(self) -> Path:
        return self.proposals / "next_config.json"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def best_json(self) -> Path:
        return self.runs / "best.json"

    @property
    def baseline_json(self) -> Path:
        return self.runs / "baseline.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def latest_model(self) -> Path:
        return self.models / "latest.pt"

    @property
    def best_model(self) -> Path:
        return self.models / "best.pt"

    @property
    def latest_json(self) -> Path:
        # Which run models/latest.pt came from (for the resume line of the next run's notes).
        return self.models / "latest.json"

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    @property
    def labbook(self) -> Path:
        return self.journal / "labbook.md"

    @property
    def lock_path(self) -> Path:
        return self.root / ".autopilot.lock"

    @property
    def session_path(self) -> Path:
        return self.root / "session.json"

    def profile_path(self, mode: str) -> Path:
        """The base config a session of this mode starts from."""
        return self.configs / ("base.json" if mode == CONFIG_MODE else f"baseline_{mode}.json")

    def default_mode(self) -> str:
        """`config` once a base config was given (`init --config` / `run --config`), else `quick`."""
        return CONFIG_MODE if self.profile_path(CONFIG_MODE).exists() else MODES[0]

    def rel(self, path: Path | str) -> str:
        """A path as stored in the ledger: relative to the workspace when inside it."""
        p = Path(path)
        try:
            return str(p.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(p)

    def resolve(self, stored: str | Path) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else self.root / p


def init_workspace(workdir: str | Path, base: dict[str, Any] | None = None) -> Workspace:
    """Create the layout and the two profiles. Idempotent: existing files (a person's edits) are kept.
    `base` (a validated config's dict) becomes configs/base.json, the base of `--mode config` sessions;
    it replaces an earlier one only when it differs."""
    from autopilot.config.load import profile_dict

    ws = Workspace(Path(workdir).absolute())
    try:
        for d in (ws.configs, ws.proposals, ws.rejected, ws.runs, ws.models, ws.journal):
            d.mkdir(parents=True, exist_ok=True)
        for mode in MODES:
            if not ws.profile_path(mode).exists():
                atomic_write_json(ws.profile_path(mode), profile_dict(mode))
        base_path = ws.profile_path(CONFIG_MODE)
        if base is not None and read_json_tolerant(base_path, lambda m: None) != json.loads(json.dumps(base)):
            atomic_write_json(base_path, base)
        if not ws.labbook.exists():
            atomic_write_text(ws.labbook, LABBOOK_HEADER)
    except OSError as exc:
        raise WorkspaceError(f"cannot create the workspace at {ws.root}: {exc.strerror or exc}; "
                             f"choose a writable --workdir") from None
    return ws


def open_workspace(workdir: str | Path, *, create_missing_dirs: bool = True) -> Workspace:
    """An existing workspace (or an external trainer's ledger: a folder with runs/)."""
    ws = Workspace(Path(workdir).absolute())
    if not ws.runs.is_dir():
        raise WorkspaceError(f"{ws.root} is not an autopilot workspace (no runs/ folder); "
                             f"create one with `autopilot init --workdir {workdir}`")
    if create_missing_dirs:
        for d in (ws.proposals, ws.rejected, ws.models, ws.journal):
            d.mkdir(parents=True, exist_ok=True)
    return ws


# --------------------------------------------------------------------------------------------------
# The lock: an flock on .autopilot.lock. The kernel drops it when the holder dies, so a lock left by
# a dead process is stale by construction; the file's content (pid, host, start) names the holder for
# the refusal message and the takeover log. The file is written in place, never renamed: a rename
# would give later openers a different inode and two processes could both "hold" the lock.
class WorkspaceLock:
    def __init__(self, ws: Workspace, command: str = "autopilot", warn: Warn | None = None):
        self.ws = ws
        self.command = command
        self.warn = warn or _log_warn
        self._fd: int | None = None

    def acquire(self) -> WorkspaceLock:
        path = self.ws.lock_path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise WorkspaceError(f"cannot lock {path}: {exc.strerror}") from None
            holder = read_lock_info(path)
            raise WorkspaceError(
                f"workspace {self.ws.root} is in use by pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} (since {holder.get('started_at', '?')}, "
                f"{holder.get('command', 'autopilot')}); wait for it to finish or stop that process"
            ) from None
        previous = read_lock_info(path)
        if previous.get("pid"):
            here = previous.get("host") == socket.gethostname()
            alive = here and _pid_alive(int(previous["pid"]))
            what = "dead" if here and not alive else ("on another host" if not here else "not holding it")
            self.warn(f"took over a stale lock {path.name} left by pid {previous['pid']} "
                      f"({what}, since {previous.get('started_at', '?')})")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": iso_now(), "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # empty = nobody holds it; the file stays (see the class comment)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkspaceLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_lock_info(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------------
# Tolerant readers.
def read_json_tolerant(path: Path, warn: Warn | None = None, what: str = "") -> Any | None:
    """The parsed JSON, or None when missing (silently) or unreadable (with a warning)."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        (warn or _log_warn)(f"{path} cannot be read ({exc}); ignoring it")
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        (warn or _log_warn)(f"{path} is malformed JSON ({str(exc)[:80]}); ignoring it{what}")
        return None


def read_state(run_dir: Path) -> dict[str, Any]:
    data = read_json_tolerant(run_dir / STATE_FILE, warn=lambda m: None)
    return data if isinstance(data, dict) else {}


def write_state(run_dir: Path, **fields: Any) -> dict[str, Any]:
    state = read_state(run_dir)
    state.update(fields)
    state["updated_at"] = iso_now()
    atomic_write_json(run_dir / STATE_FILE, state)
    return state


_RUN_SUFFIX = re.compile(r"^(.*?)-(\d+)$")


def run_sort_key(name: str) -> tuple[str, int]:
    """Run ids sort by time; `...Z-2` (a second run within one second) sorts after `...Z`, `-10` after `-9`."""
    m = _RUN_SUFFIX.match(name)
    return (m.group(1), int(m.group(2))) if m and m.group(1).endswith("Z") else (name, 0)


def list_run_dirs(ws: Workspace) -> list[Path]:
    """Run folders in ledger order. A run folder holds a config, a trainer summary or a loop state."""
    if not ws.runs.is_dir():
        return []
    dirs = []
    for p in ws.runs.iterdir():
        if not p.is_dir() or p.name.startswith(".") or p.name.endswith(STAGING_SUFFIX):
            continue
        if any((p / f).exists() for f in ("config.json", "trainer_summary.json", STATE_FILE, "summary.json")):
            dirs.append(p)
    return sorted(dirs, key=lambda p: run_sort_key(p.name))


def read_curve(path: Path, warn: Warn | None = None, limit: int = 100_000) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a torn last line (the trainer was killed mid-write) or a junk line is skipped."""
    rows: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError):
                    (warn or _log_warn)(f"{path}:{n} is not a JSON line; skipped")
                    continue
                if isinstance(row, dict):
                    rows.append(row)
                if len(rows) >= limit:
                    break
    except FileNotFoundError:
        return []
    except OSError as exc:
        (warn or _log_warn)(f"{path} cannot be read ({exc}); no learning curve")
    return rows


def load_run(run_dir: Path, warn: Warn | None = None, *, with_curve: bool = True) -> RunRecord:
    """Everything a run folder holds, each damaged file reported and skipped."""
    from autopilot.config.load import config_from_dict
    from autopilot.summary import SummaryError

    warn = warn or _log_warn
    rec = RunRecord(run_id=run_dir.name, run_dir=run_dir)
    raw = read_json_tolerant(run_dir / "config.json", warn)
    if isinstance(raw, dict):
        rec.raw_config = raw
        try:
            rec.config = config_from_dict(raw)
        except AutopilotError as exc:
            warn(f"{run_dir.name}/config.json does not validate ({str(exc)[:120]}); using it as raw data only")
        except Exception as exc:  # a validator tripping on junk must not stop the ledger from loading
            warn(f"{run_dir.name}/config.json cannot be read as a config ({type(exc).__name__}); skipped")
    elif raw is not None:
        warn(f"{run_dir.name}/config.json is not a JSON object; skipped")
    override = read_json_tolerant(run_dir / "override.json", warn)
    if isinstance(override, dict):
        rec.override = override
    if (run_dir / "trainer_summary.json").exists():
        try:
            rec.trainer_summary = read_summary(run_dir / "trainer_summary.json")
        except SummaryError as exc:
            warn(f"{run_dir.name}: {exc}; treating the run as having no trainer summary")
    loop = read_json_tolerant(run_dir / "summary.json", warn)
    if isinstance(loop, dict):
        try:
            loop.setdefault("run_id", run_dir.name)
            rec.loop_summary = LoopSummary.model_validate(_finite_only(loop))
        except ValidationError as exc:
            err = exc.errors()[0]
            warn(f"{run_dir.name}/summary.json key {'.'.join(map(str, err['loc']))} is invalid "
                 f"({err['msg']}); it will be rebuilt from the trainer summary")
    if with_curve:
        rec.curve = read_curve(run_dir / "metrics.jsonl", warn)
    return rec


def _finite_only(value: Any) -> Any:
    """NaN/inf in a loop summary (hand-edited, or an old writer) become null rather than poison scores."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_only(v) for v in value]
    return value


def load_history(ws: Workspace, warn: Warn | None = None, *, upto: str | None = None,
                 with_curve: bool = True) -> list[RunRecord]:
    """Every run of the ledger, oldest first; `upto` stops after that run id."""
    out = []
    for d in list_run_dirs(ws):
        out.append(load_run(d, warn, with_curve=with_curve))
        if upto is not None and d.name == upto:
            break
    return out


def new_run_id(ws: Workspace, now: datetime | None = None) -> str:
    """A UTC run id not used in runs/ yet; a second run within the same second gets `-2`, `-3`, ..."""
    base = stamp(now)
    candidate, n = base, 1
    while (ws.runs / candidate).exists() or (ws.runs / f"{candidate}{STAGING_SUFFIX}").exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate

