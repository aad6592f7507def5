"""What a Ray worker does for one candidate attempt: train it in a private staging folder and hand the
folder back as bytes.

The worker never touches the workspace (the driver is its only writer). It gets the run's config.json
and, for a warm start, the checkpoint's bytes; it launches the same trainer argv as a sequential run,
under the same watchdog (`launch.spawn` + `launch.supervise`: stall timeout, wall budget, SIGTERM then
SIGKILL of the whole process group), then returns the staging folder as a tar archive together with how
the child ended. The staging folder is removed afterwards.

This module needs no Ray to run (it only asks which node it is on): the driver wraps `run_candidate` with `ray.remote`, so the same
function runs in-process in tests and on any node of a cluster.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any

from autopilot.loop import launch
from autopilot.workspace.layout import iso_now

RESUME_NAME = "resume.pt"  # where the warm-start checkpoint is written inside the staging folder
STAGING_ROOT_ENV = "AUTOPILOT_STAGING_DIR"  # parent of the per-attempt staging folders (default: the temp dir)


def staging_root() -> Path:
    return Path(os.environ.get(STAGING_ROOT_ENV) or tempfile.gettempdir()) / "autopilot-staging"


def pack_folder(folder: Path, *, skip: tuple[str, ...] = ()) -> bytes:
    """The folder's regular files as an uncompressed tar (checkpoints barely compress)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if path.is_file() and not path.is_symlink() and rel.parts[0] not in skip:
                tar.add(path, arcname=rel.as_posix(), recursive=False)
    return buf.getvalue()


def unpack_folder(data: bytes, dest: Path) -> list[Path]:
    """Extract an archive made by `pack_folder` into `dest`, refusing anything that is not a plain file
    inside `dest` (the `data` extraction filter: no absolute paths, no `..`, no links or devices)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        tar.extractall(dest, members=members, filter="data")
        out = [dest / m.name for m in members]
    return out


def _node_id() -> str | None:
    """The Ray node this runs on (None outside Ray), so a generation's spread over a cluster is on record."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - a bookkeeping detail must never fail a candidate
        return None


def run_candidate(payload: dict[str, Any]) -> dict[str, Any]:
    """Train one attempt of one candidate; returns how it ended and the staging folder as a tar.

    payload: run_id, attempt, config_bytes, trainer_command (argv template or None), resume_bytes
    (or None), stall_seconds, wall_seconds, grace, workspace (the driver's workspace root: the child's
    working directory when this node has it, as in a sequential run).
    """
    root = staging_root()
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"{uuid.uuid4().hex[:10]}" / payload["run_id"]  # the trainer sees the run's own id
    staging.mkdir(parents=True)
    try:
        (staging / "config.json").write_bytes(payload["config_bytes"])
        resume = None
        if payload.get("resume_bytes") is not None:
            resume = staging / RESUME_NAME
            resume.write_bytes(payload["resume_bytes"])
        argv = launch.trainer_argv(payload.get("trainer_command"), config=staging / "config.json",
                                   run_dir=staging, resume=resume)
        host, started = socket.gethostname(), iso_now()
        with open(staging / "train.log", "ab") as log:  # the timestamps that show candidates overlapping
            log.write(f"=== autopilot: attempt {payload['attempt']} on host {host} (pid {os.getpid()}), "
                      f"started {started}\n".encode())
        workspace = Path(payload.get("workspace") or staging)
        proc = launch.spawn(argv, staging, attempt=payload["attempt"], cwd=workspace if workspace.is_dir() else staging)
        result = launch.supervise(proc, staging, stall_seconds=payload["stall_seconds"],
                                  wall_seconds=payload["wall_seconds"], grace=payload["grace"],
                                  stop=launch.StopFlag())
        ended = iso_now()
        with open(staging / "train.log", "ab") as log:
            log.write(f"=== autopilot: attempt {payload['attempt']} ended {ended} ({result.reason}, "
                      f"exit {result.returncode}, {result.wall_s:.1f}s)\n".encode())
        if resume is not None:
            resume.unlink(missing_ok=True)  # the driver has it already
        return {"node": _node_id(), "returncode": result.returncode, "reason": result.reason, "wall_s": result.wall_s,
                "detail": result.detail, "killed_with": result.killed_with, "host": host,
                "worker_pid": os.getpid(), "started_at": started, "ended_at": ended,
                "files": pack_folder(staging)}
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)


__all__ = ["RESUME_NAME", "pack_folder", "run_candidate", "staging_root", "unpack_folder"]
