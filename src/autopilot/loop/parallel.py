"""`autopilot run --parallel K`: generations of K candidates trained at once as Ray tasks.

The driver (this process) stays the only writer of the workspace. A generation goes:

1. prepare: the K run folders are created in phase `prepared` (config.json, override.json, and in
   `.state` the generation number, the member index and the parent run) before any task is submitted;
2. train: each candidate is one Ray task (`ray_task.run_candidate`) with its resource request (CPUs =
   vec.num_workers, a GPU fraction when the device is CUDA); the task trains in a staging folder on its
   worker, under the same watchdog as a sequential run, and returns the folder's bytes, which the driver
   unpacks into the run folder. A task whose worker or node died is a `crashed` attempt, retried per
   `autopilot.max_retries` from the run's own latest checkpoint; the rest of the generation goes on;
3. record: the members go collected -> promoted -> done in run-id order through the sequential loop's
   own steps (summary, checkpoints, analysis, notes, labbook), then the generation's note compares them
   side by side against the noise band;
4. the next generation grows from this one's best trusted run (`generation.plan_generation`).

A driver killed at any point resumes with the same command: the sequential loop's recovery pass marks a
candidate caught in `training` interrupted, `prepared` members are trained, a half-prepared generation
is topped up to its size, and no run is created twice.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from autopilot.atomic import append_text, atomic_write_bytes, atomic_write_json, atomic_write_text
from autopilot.backends import get_backend
from autopilot.config import Config, config_from_dict, ensure_valid
from autopilot.decide.analysis import advisor_seed
from autopilot.decide.generation import generation_parent, plan_generation, render_generation_note
from autopilot.decide.records import RunRecord
from autopilot.decide.sanity import record_score
from autopilot.decide.trends import SEED_KEY, noise_band
from autopilot.errors import ConfigError
from autopilot.loop import launch, ray_task, runner
from autopilot.loop.session import Loop
from autopilot.loop.training import RETRYABLE, _classify, _set_aside, record_outcome, resume_for
from autopilot.workspace.layout import (
    LABBOOK_HEADER,
    STAGING_SUFFIX,
    iso_now,
    load_history,
    load_run,
    new_run_id,
    read_state,
    write_state,
)
from autopilot.workspace.pointers import check_pointers, checkpoint_loads, run_checkpoint
from autopilot.workspace.proposals import (
    current_base,
    read_pending,
    take_pending,
    unresolve,
    validate_override,
)
from autopilot.workspace.recording import repro_command

WAIT_S = 0.5  # how often the driver looks up from ray.wait to check signals and deadlines


def _ray():
    try:
        import ray
    except ImportError:  # pragma: no cover - the extra is part of `dev`
        raise ConfigError("--parallel needs Ray, which is not installed; install it with "
                          "`pip install 'autopilot[ray]'`, or run without --parallel") from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a cluster address nobody answers at (Ray itself keeps retrying for minutes)."""
    if address in ("auto", "local"):
        return
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r} is not HOST:PORT (rule: the head node's GCS address, or "
                          f"ray://HOST:PORT for Ray Client); use e.g. --ray-address 10.0.0.5:6379 or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--ray-address {address}: nothing answers at {host}:{port} ({exc.strerror or exc}); "
                          f"start the cluster (`ray start --head`), check the address, or leave --ray-address "
                          f"out for a local cluster") from None


def connect(address: str | None, say) -> bool:
    """Join the cluster at `address`, or start a local one with this machine's cores and GPUs. Returns
    whether this call started Ray (and so should shut it down). A Ray already initialised is reused."""
    ray = _ray()
    if ray.is_initialized():
        return False
    if address:
        check_reachable(address)
    # ray.init installs its own SIGINT/SIGTERM handlers; the loop's (stop gracefully, rerun resumes) stay.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                 configure_logging=True)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ConfigError(f"cannot connect to {where} ({str(exc)[:200]}); check --ray-address (e.g. "
                          f"--ray-address ray://HOST:10001 or auto), or leave it out for a local cluster") from None
    finally:
        if threading.current_thread() is threading.main_thread():
            for s, h in handlers.items():
                if h is not None:
                    signal.signal(s, h)
    res = ray.cluster_resources()
    say(f"Ray: {len(ray.nodes())} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs", "cyan")
    return True


# -- generations ---------------------------------------------------------------------------------------
def _members(loop: Loop, number: int) -> list[tuple[Path, dict[str, Any]]]:
    return [(d, st) for d, st in loop.session_runs() if st.get("generation") == number]


def _last_generation(loop: Loop) -> int:
    return max((int(st["generation"]) for _, st in loop.session_runs() if isinstance(st.get("generation"), int)),
               default=0)


def drive_parallel(loop: Loop, runs: int, k: int, ray_address: str | None = None) -> int:
    """The generational counterpart of `runner._drive`; returns the same exit codes."""
    ws = loop.ws
    current_base(ws, loop.mode, load_history(ws, lambda m: None, with_curve=False), loop.base_overrides)
    runner._recover(loop)  # half-done runs of a killed driver: the sequential loop's own recovery
    check_pointers(ws, load_history(ws, loop.warn, with_curve=False), loop.warn)
    started = connect(ray_address, loop.say)
    try:
        reason = _generations(loop, runs, k)
    finally:
        if started:
            _ray().shutdown()
    return runner.finish_session(loop, reason)


def _generations(loop: Loop, runs: int, k: int) -> str:
    while True:
        session_runs = loop.session_runs()
        done = [d for d, st in session_runs if st.get("phase") == "done"]
        if loop.stop.requested:
            return ""
        number = _last_generation(loop)
        members = _members(loop, number)
        size = int(members[0][1].get("of", k)) if members else 0
        complete = bool(members) and len(members) >= size and all(st.get("phase") == "done" for _, st in members)
        if number == 0 or complete:
            if len(done) >= runs:
                return f"{runs} run(s) done"
            remaining = loop.remaining_s()
            if remaining is not None and remaining <= 0:
                return f"budget of {loop.budget_s / 60:g} min spent"
            number, size = number + 1, min(k, runs - len(session_runs))
            if size <= 0:
                return f"{runs} run(s) done"
        loop.say(f"[generation {number}: {size} candidate(s); {len(done)}/{runs} runs done]", "bold cyan")
        dirs = _prepare_generation(loop, number, size)
        if loop.stop.requested and any(read_state(d).get("phase") == "prepared" for d in dirs):
            return ""  # stopped while preparing: the prepared members are trained by the rerun
        if not dirs:
            return "no candidate passed the guard (see proposals/rejected/ and the warnings above)"
        _train_generation(loop, dirs)
        if loop.fatal:
            loop.session.status, loop.session.stop_reason = "stopped", loop.fatal
            loop.session.save(loop.ws)
            raise ConfigError(loop.fatal)
        if loop.stop.requested:
            for d in dirs:  # what finished is recorded; the rest stays for the rerun
                if read_state(d).get("phase") in ("collected", "promoted"):
                    runner._advance(loop, d)
            return ""
        _record_generation(loop, number, dirs)
        loop.tick()
        for d in dirs:
            reason = runner._stop_criterion(loop, d)
            if reason:
                return reason


# -- 1. prepare ----------------------------------------------------------------------------------------
def _parent(loop: Loop, number: int) -> RunRecord | None:
    if number <= 1:
        return None
    members = [load_run(d, loop.warn, with_curve=False) for d, _ in _members(loop, number - 1)]
    objective = members[0].config.autopilot.objective if members and members[0].config else "success_rate"
    return generation_parent(members, objective)


def _member_overrides(loop: Loop, size: int, parent: RunRecord | None, base: Config,
                      history: list[RunRecord], first: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(flat override, where it came from) for every member of the generation, in member order. The first
    generation is the session's starting point (`first`: the staged proposal, if any) and seed repeats
    of it; a later one is planned from its parent, the previous generation's best."""
    if parent is None:
        seeds = {r.config.train.seed for r in history if r.config is not None} | {base.train.seed}
        top = max(seeds | ({first[SEED_KEY]} if isinstance(first.get(SEED_KEY), int) else set()))
        return [(first, "the session's starting config")] + [
            ({**first, SEED_KEY: top + i}, f"seed repeat {i} of the starting config (measures the noise band)")
            for i in range(1, size)]
    plan = plan_generation(history, parent, advisor=loop.advisor, k=size, sps=_sps(history),
                           remaining_runs=max(0, loop.session.target - len(loop.session_runs())),
                           remaining_seconds=loop.remaining_s(), repro_command=repro_command(loop.ws, parent),
                           seed=advisor_seed(history))
    for name, verdict in plan.rejected:
        loop.warn(f"candidate from {name} refused by the guard: {(verdict.reasons or ['?'])[0][:160]}")
    return [(p.as_override(), f"{p.advisor}: {p.headline}"[:160]) for p in plan.proposals]


def _sps(history: list[RunRecord]) -> float | None:
    for rec in reversed(history):
        sps = rec.trainer_summary.throughput.sps if rec.trainer_summary is not None else None
        if isinstance(sps, (int, float)) and math.isfinite(sps) and sps > 0:
            return float(sps)
    return None


def _prepare_generation(loop: Loop, number: int, size: int) -> list[Path]:
    """Create the generation's missing run folders (each atomically, in `prepared`). A proposal staged in
    proposals/ (by a person, or left by a sequential session) takes the first member's place."""
    ws = loop.ws
    existing = _members(loop, number)
    have = {int(st.get("member", 0)): d for d, st in existing}
    if len(have) >= size:
        return [d for d, _ in existing]
    history = load_history(ws, loop.warn, with_curve=False)
    sps = _sps(history)
    parent = _parent(loop, number)
    if parent is not None and parent.config is not None:
        base, source = config_from_dict(unresolve(parent.config).model_dump()), f"run {parent.run_id} (generation best)"
    else:
        parent = None
        first_of_session = not loop.session_runs()
        base, source = current_base(ws, loop.mode, history, loop.base_overrides if first_of_session else None)
    staged_cfg, staged = (None, {}) if 0 in have else take_pending(ws, base, sps=sps, warn=loop.warn)
    first = staged or (load_run(have[0], loop.warn, with_curve=False).override if 0 in have and parent is None else {})
    plan = _member_overrides(loop, size, parent, base, history, {k: v for k, v in first.items()})
    if len(plan) < size:
        loop.warn(f"only {len(plan)} distinct candidate(s) passed the guard; the generation has {len(plan)}")
        size = len(plan)
    for member in range(size):
        if member in have or loop.stop.requested:
            continue
        override, why = plan[member]
        if member == 0 and staged_cfg is not None:
            cfg, override, why = staged_cfg, staged, f"{ws.rel(ws.next_config)} (staged)"
        else:
            try:
                cfg = validate_override(override, base, sps=sps) if override else ensure_valid(base)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        run_dir = _create_run(loop, cfg, override, source=source, number=number, member=member, size=size,
                              parent=parent)
        if member == 0 and staged_cfg is not None:
            runner._consume_proposal(loop, override)
        loop.say(f"  candidate {member + 1}/{size}: run {run_dir.name} — {why}")
    return [d for d, _ in _members(loop, number)]


def _create_run(loop: Loop, cfg: Config, override: dict[str, Any], *, source: str, number: int, member: int,
                size: int, parent: RunRecord | None) -> Path:
    ws = loop.ws
    run_id = new_run_id(ws)
    staging = ws.runs / f"{run_id}{STAGING_SUFFIX}"
    staging.mkdir(parents=True)
    atomic_write_json(staging / "config.json", cfg.model_dump())
    atomic_write_json(staging / "override.json", override)
    write_state(staging, phase="prepared", session=loop.session.id, mode=loop.mode, base=source, attempt=0,
                created_at=iso_now(), generation=number, member=member, of=size,
                parent=parent.run_id if parent is not None else None)
    run_dir = ws.runs / run_id
    staging.rename(run_dir)
    return run_dir


# -- 2. train ------------------------------------------------------------------------------------------
def _resume(loop: Loop, run_dir: Path, cfg: Config) -> dict[str, Any]:
    """Exploit: warm-start from the parent's (the previous generation's best) trusted checkpoint; without
    a parent, the sequential loop's rule."""
    ws = loop.ws
    st = read_state(run_dir)
    if cfg.autopilot.resume_mode != "fresh" and st.get("parent"):
        parent = load_run(ws.runs / st["parent"], lambda m: None, with_curve=False)
        ckpt = run_checkpoint(ws, parent, "best" if cfg.autopilot.resume_from == "best" else "latest")
        ok, why = checkpoint_loads(ckpt)
        if ok and ckpt is not None and parent.loop_summary is not None and not parent.loop_summary.suspect:
            return {"mode": "continue", "from": f"generation best {parent.run_id}", "checkpoint": str(ckpt),
                    "notes": []}
        loop.warn(f"parent {parent.run_id}'s checkpoint is not usable ({why or 'suspect run'}); "
                  f"using the sequential resume rule")
    history = load_history(ws, lambda m: None, upto=run_dir.name, with_curve=False)
    return resume_for(loop, cfg, history[-2] if len(history) > 1 else None)


def _resources(cfg: Config, k: int, gpus_in_cluster: float) -> dict[str, float]:
    """One task's request: a CPU per trainer process, a GPU fraction when it trains on CUDA."""
    want = {"num_cpus": float(max(1, cfg.vec.num_workers)), "num_gpus": 0.0}
    device = cfg.train.device
    if device == "cuda" or (device == "auto" and gpus_in_cluster > 0):
        want["num_gpus"] = round(max(0.1, min(1.0, gpus_in_cluster / k if gpus_in_cluster else 1.0 / k)), 3)
    return want


class _Attempt:
    def __init__(self, run_dir: Path, cfg: Config, attempt: int, resume: dict[str, Any], checkpoint: Path | None,
                 deadline: float):
        self.run_dir, self.cfg, self.attempt, self.resume = run_dir, cfg, attempt, resume
        self.checkpoint, self.deadline = checkpoint, deadline


def _train_generation(loop: Loop, dirs: list[Path]) -> None:
    ray = _ray()
    ws = loop.ws
    remote = ray.remote(max_retries=0)(ray_task.run_candidate)  # retries are the loop's, per max_retries
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    max_cpus = max((n.get("Resources", {}).get("CPU", 0) for n in nodes), default=0)
    gpus = ray.cluster_resources().get("GPU", 0.0)
    running: dict[Any, _Attempt] = {}

    def submit(run_dir: Path, cfg: Config, attempt: int, resume: dict[str, Any], checkpoint: Path | None) -> None:
        ap = cfg.autopilot
        wall = ap.max_run_seconds if loop.remaining_s() is None else max(1.0, min(ap.max_run_seconds, loop.remaining_s()))
        grace = launch.grace_seconds(wall)
        want = _resources(cfg, len(dirs), gpus)
        if want["num_cpus"] > max_cpus:
            raise ConfigError(f"vec.num_workers={cfg.vec.num_workers} asks for {want['num_cpus']:g} CPUs per candidate "
                              f"but the largest Ray node has {max_cpus:g} (rule: a candidate runs on one node); "
                              f"use vec.num_workers<={int(max_cpus)}")
        if want["num_gpus"] and not gpus:
            raise ConfigError(f"train.device={cfg.train.device} needs a GPU but the Ray cluster has none (rule: a "
                              f"candidate's device must exist where it runs); use train.device=cpu, or join a "
                              f"cluster with GPUs via --ray-address")
        _set_aside(run_dir, attempt - 1)
        # The backend decides the child; the builtin one is left to the worker (its own Python).
        template = None if cfg.backend == "builtin" and not ap.trainer_command else \
            get_backend(cfg.backend).argv_template(cfg)
        payload = {"run_id": run_dir.name, "attempt": attempt, "config_bytes": (run_dir / "config.json").read_bytes(),
                   "trainer_command": template, "resume_bytes": checkpoint.read_bytes() if checkpoint else None,
                   "stall_seconds": ap.stall_seconds, "wall_seconds": wall, "grace": grace, "workspace": str(ws.root)}
        argv = launch.trainer_argv(template, config=run_dir / "config.json", run_dir=run_dir, resume=checkpoint)
        ref = remote.options(**want).remote(payload)
        write_state(run_dir, phase="training", attempt=attempt, launched_at=iso_now(), resume=resume, argv=argv,
                    ray={"task": ref.hex(), **want})
        # The watchdog runs on the worker; this deadline only catches a worker that stops answering.
        running[ref] = _Attempt(run_dir, cfg, attempt, resume, checkpoint, time.monotonic() + wall + 3 * grace + 60)
        loop.say(f"  run {run_dir.name}: submitted attempt {attempt} ({want['num_cpus']:g} CPU"
                 + (f", {want['num_gpus']:g} GPU" if want["num_gpus"] else "") + ")", "dim")

    for run_dir in dirs:
        if read_state(run_dir).get("phase") != "prepared":
            continue
        rec = load_run(run_dir, loop.warn, with_curve=False)
        if rec.config is None:
            record_outcome(loop, run_dir, status="failed", error="config.json does not validate", result=None, attempts=0)
            continue
        resume = _resume(loop, run_dir, rec.config)
        for note in resume.get("notes", []):
            loop.warn(note)
        ckpt = Path(resume["checkpoint"]) if resume.get("checkpoint") else None
        submit(run_dir, rec.config, 1, resume, ckpt)

    cancelled = False
    while running:
        ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
        now = time.monotonic()
        if loop.stop.requested and not cancelled:
            for ref in running:
                ray.cancel(ref, force=True)  # the worker dies; its trainer gets SIGTERM (PR_SET_PDEATHSIG)
            cancelled = True
        for ref, att in list(running.items()):
            if ref not in ready and now > att.deadline and not cancelled:
                loop.warn(f"run {att.run_dir.name}: no answer from its Ray task past the wall budget; cancelling it")
                ray.cancel(ref, force=True)
        for ref in ready:
            att = running.pop(ref)
            status, error, result = _finish_attempt(loop, ref, att, stopped=cancelled)
            ap = att.cfg.autopilot
            if status in RETRYABLE and att.attempt <= ap.max_retries and not loop.stop.requested:
                own = att.run_dir / "checkpoints" / "latest.pt"
                ckpt = own if checkpoint_loads(own)[0] else att.checkpoint
                loop.warn(f"run {att.run_dir.name}: retrying ({att.attempt}/{ap.max_retries}) from "
                          f"{ws.rel(ckpt) if ckpt else 'scratch'}")
                submit(att.run_dir, att.cfg, att.attempt + 1, att.resume, ckpt)
                continue
            record_outcome(loop, att.run_dir, status=status, error=error, result=result, attempts=att.attempt,
                    resume=att.resume, resumed_checkpoint=str(att.checkpoint) if att.checkpoint else None)


def _finish_attempt(loop: Loop, ref: Any, att: _Attempt, *, stopped: bool
                    ) -> tuple[str, str | None, launch.LaunchResult | None]:
    """Unpack what the task returned into the run folder and classify the ending."""
    ray = _ray()
    name = att.run_dir.name
    try:
        out = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return "interrupted", "stopped: the loop received a signal" if stopped else "cancelled: its worker stopped answering", None
    except ray.exceptions.RayError as exc:
        what = type(exc).__name__
        if stopped:
            return "interrupted", f"stopped: the loop received a signal ({what})", None
        loop.warn(f"run {name}: attempt {att.attempt} lost its Ray worker ({what})")
        append_text(att.run_dir / "train.log", f"=== autopilot: attempt {att.attempt} lost its Ray worker at "
                                               f"{iso_now()}: {what}: {str(exc)[:300]}\n")
        return "crashed", f"the Ray worker running attempt {att.attempt} died ({what}: {str(exc)[:500]})", None
    _store(att.run_dir, out["files"])
    result = launch.LaunchResult(returncode=out["returncode"], reason=out["reason"], wall_s=out["wall_s"],
                                 detail=out["detail"], killed_with=list(out["killed_with"]))
    status, error = _classify(att.run_dir, result)
    write_state(att.run_dir, worker={"host": out["host"], "node": out.get("node"), "pid": out["worker_pid"],
                                     "started_at": out["started_at"], "ended_at": out["ended_at"]})
    loop.say(f"  run {name}: trainer ended: {status} after {result.wall_s:.1f}s on {out['host']} "
             f"({out['started_at']} → {out['ended_at']})", "green" if status == "completed" else "yellow")
    return status, error, result


APPENDED = ("train.log", "metrics.jsonl")  # grow across attempts, as when the trainer runs in the folder


def _store(run_dir: Path, files: bytes) -> None:
    """Move the returned staging folder into the run folder: logs appended, every other file replaced
    atomically (a retry's checkpoint and summary supersede the earlier attempt's)."""
    incoming = run_dir / f".incoming-{os.getpid()}"
    try:
        for path in ray_task.unpack_folder(files, incoming):
            rel = path.relative_to(incoming)
            target = run_dir / rel
            if rel.as_posix() in APPENDED:
                with open(path, "rb") as src, open(target, "ab") as dst:
                    dst.write(src.read())
                    dst.flush()
                    os.fsync(dst.fileno())
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, path.read_bytes())
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


# -- 3. record -----------------------------------------------------------------------------------------
def generation_marker(session: str, number: int) -> str:
    return f"<!-- autopilot:generation {session}/{number} -->"


def _record_generation(loop: Loop, number: int, dirs: list[Path]) -> None:
    ws = loop.ws
    pending_before = read_pending(ws)[1]
    for d in sorted(dirs, key=lambda p: p.name):  # ids, notes and labbook in order
        if read_state(d).get("phase") != "done":
            runner._advance(loop, d)
    # The per-run analysis stages a proposal for the latest member; the next generation is planned from
    # the generation's best instead, so that staged copy is withdrawn (one staged by a person stays).
    if pending_before is None and read_pending(ws)[1] is not None:
        ws.next_config.unlink(missing_ok=True)
    history = load_history(ws, loop.warn, with_curve=False)
    members = [r for r in history if r.run_dir in set(dirs)]
    objective = members[0].config.autopilot.objective if members and members[0].config else "success_rate"
    parent = _parent(loop, number)
    best = generation_parent(members, objective)
    band = noise_band(history, objective, reference=record_score(best, objective) if best else None)
    timings = {d.name: (w.get("started_at", "?"), w.get("ended_at", "?"))
               for d in dirs if isinstance(w := read_state(d).get("worker"), dict)}
    note = render_generation_note(number, members, parent=parent, objective=objective, noise=band, timings=timings)
    for d in dirs:
        atomic_write_text(d / "generation.md", note + "\n")
    marker = generation_marker(loop.session.id, number)
    existing = ws.labbook.read_text("utf-8", errors="replace") if ws.labbook.exists() else ""
    if not existing:
        atomic_write_text(ws.labbook, LABBOOK_HEADER)
    if marker not in existing:
        append_text(ws.labbook, f"\n{marker}\n{note.strip()}\n")
    for line in note.splitlines():
        if line.startswith("| 20") or line.startswith("Next generation"):
            loop.say(f"  {line}", "dim")


__all__ = ["connect", "drive_parallel", "generation_marker"]
