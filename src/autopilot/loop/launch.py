"""The trainer as a child process, under a watchdog.

The child runs in its own session (process group), so the watchdog can stop it and every worker it
forked with one `killpg`, and a terminal's Ctrl-C reaches only the loop, which forwards it. On Linux
the child also asks the kernel for SIGTERM if the loop dies (PR_SET_PDEATHSIG), so a SIGKILLed loop
does not leave a trainer running; the recovery pass kills any survivor by its recorded pid.

The watchdog polls (no threads): the child's exit, the metrics file (size, mtime) for the stall
timeout, the wall budget, and the loop's stop flag (a signal the loop received).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autopilot.plugins import child_environment

Reason = Literal["exited", "stalled", "timeout", "stopped"]
POLL_S = 0.1

_PR_SET_PDEATHSIG = 1
try:  # loaded once in the parent: the preexec hook must not dlopen after fork
    _LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover
    _LIBC = None


def grace_seconds(max_run_seconds: float) -> float:
    """How long a trainer gets to save and exit after SIGTERM (and the slack past its wall budget)."""
    return min(30.0, max(2.0, 0.1 * max_run_seconds))


def builtin_trainer_argv() -> list[str]:
    return [sys.executable, "-m", "autopilot", "train", "--config", "{config}", "--run-dir", "{run_dir}",
            "--resume", "{resume}"]


def trainer_argv(template: list[str] | None, *, config: Path, run_dir: Path, resume: Path | None) -> list[str]:
    """Fill `{config}`, `{run_dir}`, `{resume}`. Without a checkpoint, a lone `{resume}` argument is
    dropped with the `--flag` before it, and an argument embedding it (`--resume={resume}`) is dropped."""
    argv = list(template) if template else builtin_trainer_argv()
    out: list[str] = []
    for arg in argv:
        if "{resume}" in arg and resume is None:
            if arg == "{resume}" and out and out[-1].startswith("-"):
                out.pop()
            continue
        out.append(arg.replace("{config}", str(config)).replace("{run_dir}", str(run_dir))
                   .replace("{resume}", str(resume) if resume is not None else ""))
    return out


def _child_setup(parent_pid: int) -> Callable[[], None]:
    def setup() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent_pid:  # the loop died before the request took effect
                os._exit(143)

    return setup


def spawn(argv: list[str], run_dir: Path, *, attempt: int, cwd: Path) -> subprocess.Popen:
    """Start the trainer with stdout+stderr appended to run_dir/train.log (one header per attempt)."""
    log_path = run_dir / "train.log"
    with open(log_path, "ab") as log:
        header = f"=== autopilot: attempt {attempt}: {' '.join(argv)}\n"
        log.write(header.encode())
        log.flush()
        # The child sees the loop's plugins: entry points resolve anywhere; user modules need their folders.
        env = dict(child_environment(), AUTOPILOT_LOG_CAPTURED="1", PYTHONUNBUFFERED="1")
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                env=env, start_new_session=True, preexec_fn=_child_setup(os.getpid()))


def signal_group(pid: int, sig: int) -> bool:
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def pid_is(pid: int, create_time: float | None) -> bool:
    """Is `pid` still the process we started (not a recycled pid)?"""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def process_create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def stop_orphan(pid: int, create_time: float | None, grace: float) -> str:
    """Stop a trainer left running by a dead loop: SIGTERM its group, then SIGKILL after `grace`."""
    if not pid_is(pid, create_time):
        return "not running"
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_is(pid, create_time):
            return "stopped with SIGTERM"
        time.sleep(POLL_S)
    signal_group(pid, signal.SIGKILL)
    return "killed with SIGKILL"


@dataclass
class StopFlag:
    """Set by the loop's signal handlers; the watchdog forwards it to the child."""

    signum: int | None = None
    count: int = 0

    def request(self, signum: int) -> None:
        self.signum = self.signum or signum
        self.count += 1

    @property
    def requested(self) -> bool:
        return self.signum is not None


class MetricsTail:
    """Reads the complete lines appended to metrics.jsonl since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.last: dict[str, Any] | None = None

    def poll(self) -> dict[str, Any] | None:
        try:
            size = self.path.stat().st_size
            if size < self.offset:  # rewritten (a retry started a fresh file)
                self.offset = 0
            if size == self.offset:
                return None
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(size - self.offset)
        except OSError:
            return None
        end = chunk.rfind(b"\n")
        if end < 0:
            return None  # only a partial line so far
        self.offset += end + 1
        fresh = None
        for line in chunk[: end + 1].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                fresh = row
        if fresh is not None:
            self.last = fresh
        return fresh


@dataclass
class LaunchResult:
    returncode: int | None
    reason: Reason
    wall_s: float
    detail: str = ""
    killed_with: list[str] = field(default_factory=list)

    @property
    def died_by_signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None


def _file_mark(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
        return st.st_size, st.st_mtime_ns
    except OSError:
        return None


def supervise(proc: subprocess.Popen, run_dir: Path, *, stall_seconds: float, wall_seconds: float,
              grace: float, stop: StopFlag, on_progress: Callable[[dict[str, Any]], None] | None = None,
              progress_every: float = 2.0) -> LaunchResult:
    """Wait for the child, enforcing the stall timeout, the wall budget and the stop flag."""
    start = time.monotonic()
    metrics = run_dir / "metrics.jsonl"
    tail = MetricsTail(metrics)
    last_mark, last_activity = _file_mark(metrics), start
    reason: Reason = "exited"
    detail = ""
    term_sent_at: float | None = None
    killed: list[str] = []
    last_progress = 0.0
    while True:
        rc = proc.poll()
        if rc is not None:
            break
        now = time.monotonic()
        mark = _file_mark(metrics)
        if mark != last_mark:
            last_mark, last_activity = mark, now
        row = tail.poll()
        if row is not None and on_progress is not None and now - last_progress >= progress_every:
            on_progress(row)
            last_progress = now
        if term_sent_at is None:
            if stop.requested:
                reason, detail = "stopped", f"the loop received {signal.Signals(stop.signum).name}"
            elif now - last_activity > stall_seconds:
                reason, detail = "stalled", f"no new metrics line for {now - last_activity:.0f}s (stall_seconds={stall_seconds:g})"
            elif now - start > wall_seconds + grace:
                reason, detail = "timeout", f"past the wall budget {wall_seconds:g}s + {grace:g}s grace"
            if reason != "exited":
                signal_group(proc.pid, signal.SIGTERM)
                killed.append("SIGTERM")
                term_sent_at = now
        elif now - term_sent_at > grace or (stop.count > 1 and "SIGKILL" not in killed):
            # It did not save and exit in time (or the person pressed Ctrl-C twice): no more waiting.
            signal_group(proc.pid, signal.SIGKILL)
            killed.append("SIGKILL")
            term_sent_at = float("inf")
        time.sleep(POLL_S)
    # Workers the trainer forked share its group; none may outlive it.
    signal_group(proc.pid, signal.SIGKILL)
    if tail.poll() is not None and on_progress is not None and tail.last is not None:
        on_progress(tail.last)
    return LaunchResult(returncode=rc, reason=reason, wall_s=time.monotonic() - start, detail=detail,
                        killed_with=killed)


def log_tail(run_dir: Path, lines: int = 15, max_chars: int = 2000) -> str:
    """The end of train.log, for a crashed run's summary and note."""
    path = run_dir / "train.log"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16 * max_chars))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    tail = "\n".join(text.splitlines()[-lines:])
    return tail[-max_chars:]
