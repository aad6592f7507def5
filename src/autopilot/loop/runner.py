"""`autopilot run`: the iteration, made restartable.

Each run folder carries a `.state` file whose `phase` says how far the loop got with it:

    prepared  -> config.json, override.json written (in runs/<id>.staging, then renamed into place);
                 only then is proposals/next_config.json removed
    training  -> the child was launched (pid + start time recorded, per attempt)
    collected -> summary.json written (status, score, suspect, deltas)
    promoted  -> models/latest.pt, models/best.pt, runs/best.json updated (copy first, pointer last)
    done      -> findings, proposal, notes.md and the labbook section written

Every step is idempotent, so after a crash, SIGKILL or Ctrl-C the same command first finishes each
half-done run from its phase (a run caught in `training` is stopped and marked `interrupted`), then
goes on. `session.json` holds the command's target; a run counts for the session that created it,
so a rerun of the same command does exactly the runs still missing.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from autopilot.atomic import atomic_write_json, dumps_json
from autopilot.config import ensure_valid, load_config
from autopilot.errors import ConfigError
from autopilot.loop import launch
from autopilot.loop.session import Loop, open_session, parse_until
from autopilot.loop.training import record_outcome, train_run
from autopilot.workspace.layout import (
    CONFIG_MODE,
    MODES,
    STAGING_SUFFIX,
    WorkspaceLock,
    init_workspace,
    iso_now,
    list_run_dirs,
    load_history,
    load_run,
    new_run_id,
    read_json_tolerant,
    read_state,
    write_state,
)
from autopilot.workspace.ledger import recent_sps
from autopilot.workspace.pointers import check_pointers, promote, read_best
from autopilot.workspace.proposals import consume_pending, current_base, profile_digest, take_pending
from autopilot.workspace.recording import analyse_run

PLATEAU_RUNS = 3  # stop after this many consecutive runs of the session diagnosed `plateau`


# --------------------------------------------------------------------------------------------------
def run_loop(workdir: str | Path, *, runs: int, mode: str | None = None, config: str | Path | None = None,
             advisor: str = "rules", until: str | None = None, budget_minutes: float | None = None,
             base_overrides: dict[str, Any] | None = None, console: Console | None = None,
             parallel: int = 1, ray_address: str | None = None) -> int:
    """Run (or resume) a session of `runs` runs; returns the exit code (0, 130 after SIGINT, 143 after SIGTERM).

    The session's base: `config` (a JSON or PufferLib .ini file, for any registered env; kept in the
    workspace as configs/base.json), else the profile `mode` (`quick`, `full`, or `config` for the
    workspace's configs/base.json); neither: configs/base.json when the workspace has one, else quick.
    `parallel` > 1 trains generations of that many candidates at once on Ray (`autopilot.loop.parallel`)."""
    console = console or Console()
    if config is not None and mode not in (None, CONFIG_MODE):
        raise ConfigError(f"--config {config} and --mode {mode} both choose the base config; use one of them")
    if mode is not None and mode not in (*MODES, CONFIG_MODE):
        raise ConfigError(f"--mode {mode!r} is not a base; use {', '.join(MODES)} or {CONFIG_MODE} "
                          f"(the workspace's configs/base.json, from --config)")
    if parallel < 1:
        raise ConfigError(f"--parallel {parallel} is not a number of candidates (rule: at least 1); use 1 for "
                          f"one run at a time, or e.g. --parallel 2")
    if ray_address and parallel == 1:
        raise ConfigError(f"--ray-address {ray_address} needs --parallel K with K >= 2 (rule: a single run at a time "
                          f"trains in this process); add e.g. --parallel 2")
    target = parse_until(until)
    base = load_config(config).model_dump() if config is not None else None  # plugins it names are imported
    from autopilot.decide.advisors import get_advisor

    get_advisor(advisor)  # an unknown advisor is a one-line error before anything is written
    ws = init_workspace(workdir)  # idempotent: keeps every existing file
    mode = CONFIG_MODE if base is not None else (mode or ws.default_mode())
    with WorkspaceLock(ws, command=f"autopilot run --runs {runs} --mode {mode}",
                       warn=lambda m: console.print(f"[yellow]! {m}[/]", highlight=False)):
        if base is not None:  # under the lock: a running session's base must not change under it
            init_workspace(workdir, base=base)
        # Normalised through JSON so that it compares equal to the copy read back from session.json.
        signature = json.loads(dumps_json({"mode": mode, "base": profile_digest(ws, mode), "advisor": advisor,
                                           "runs": runs, "until": until, "budget_minutes": budget_minutes,
                                           "set": base_overrides or {},
                                           **({"parallel": parallel} if parallel > 1 else {})}))
        session = open_session(ws, signature, runs, lambda m, s="": console.print(f"[{s}]{m}[/]" if s else m))
        _advisor_usage().tokens = session.advisor_tokens  # the llm token budget is per session, not per process
        loop = Loop(ws=ws, console=console, mode=mode, advisor=advisor, base_overrides=base_overrides or {},
                    session=session, until=target, budget_s=budget_minutes * 60 if budget_minutes else None)
        with _trap_signals(loop):
            if parallel > 1:
                from autopilot.loop.parallel import drive_parallel

                return drive_parallel(loop, runs, parallel, ray_address)
            return _drive(loop, runs)


def _drive(loop: Loop, runs: int) -> int:
    ws = loop.ws
    # Fail fast on a broken profile or --set, before anything is launched.
    current_base(ws, loop.mode, load_history(ws, lambda m: None, with_curve=False), loop.base_overrides)
    _recover(loop)
    check_pointers(ws, load_history(ws, loop.warn, with_curve=False), loop.warn)
    reason = ""
    while True:
        done = [st for _, st in loop.session_runs() if st.get("phase") == "done"]
        if loop.stop.requested:
            break
        if len(done) >= runs:
            reason = f"{runs} run(s) done"
            break
        remaining = loop.remaining_s()
        if remaining is not None and remaining <= 0:
            reason = f"budget of {loop.budget_s / 60:g} min spent"
            break
        loop.say(f"[{len(done) + 1}/{runs}] run", "bold cyan")
        run_dir = _next_prepared(loop) or _prepare(loop)
        if run_dir is None:  # stopped before anything was created
            break
        _advance(loop, run_dir)
        loop.tick()
        if loop.fatal:
            loop.session.status, loop.session.stop_reason = "stopped", loop.fatal
            loop.session.save(ws)
            raise ConfigError(loop.fatal)
        reason = _stop_criterion(loop, run_dir)
        if reason:
            break
    return finish_session(loop, reason)


def finish_session(loop: Loop, reason: str) -> int:
    """Record how the session ended (stopped by a signal: resumable; else finished) and its exit code."""
    ws = loop.ws
    loop.tick()
    if loop.stop.requested:
        loop.session.status, loop.session.stop_reason = "stopped", f"signal {signal.Signals(loop.stop.signum).name}"
        loop.session.save(ws)
        loop.say(f"stopped by {signal.Signals(loop.stop.signum).name}; rerun the same command to continue", "yellow")
        return 130 if loop.stop.signum == signal.SIGINT else 143
    loop.session.status, loop.session.stop_reason = "finished", reason
    loop.session.save(ws)
    best = read_best(ws, loop.warn)
    loop.say(f"session {loop.session.id} finished: {reason}; best: "
             f"{best.run_id + f' ({best.score:.4g})' if best else 'none yet'}", "bold green")
    return 0


def _stop_criterion(loop: Loop, run_dir: Path) -> str:
    rec = load_run(run_dir, lambda m: None, with_curve=False)
    s = rec.loop_summary
    if loop.until is not None and s is not None and not s.suspect:
        value = s.score if loop.until.metric == s.objective else (
            rec.trainer_summary.metric(loop.until.metric) if rec.trainer_summary else None)
        if loop.until.met(value):
            return f"target {loop.until} reached by run {rec.run_id} ({value:.4g})"
    if (read_state(run_dir).get("person") or {}).get("decision") == "vetoed":
        return f"a person vetoed the proposal after run {rec.run_id}; stage one with `autopilot apply` and rerun"
    recent = [load_run(d, lambda m: None, with_curve=False).loop_summary for d, st in loop.session_runs()
              if st.get("phase") == "done"][-PLATEAU_RUNS:]
    if len(recent) == PLATEAU_RUNS and all(r is not None and "plateau" in r.findings for r in recent):
        return f"plateau: the last {PLATEAU_RUNS} runs were diagnosed `plateau`"
    return ""


@contextmanager
def _trap_signals(loop: Loop) -> Iterator[None]:
    """SIGINT/SIGTERM: stop gracefully (forward to the trainer, finish writing); a second one kills the
    trainer at once; a third gives up on finishing (the next run's recovery pass completes the records)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        loop.stop.request(signum)
        if loop.stop.count == 1:
            loop.say(f"{signal.Signals(signum).name}: stopping after this run's records are written "
                     f"(again: kill the trainer now)", "bold yellow")
        elif loop.stop.count >= 3:
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------------------------------
def _recover(loop: Loop) -> None:
    """Finish every half-done run left by a killed loop, from the phase it reached."""
    ws = loop.ws
    for d in sorted(ws.runs.glob(f"*{STAGING_SUFFIX}")):
        # A staging folder means the loop died before the run existed: nothing was consumed yet.
        shutil.rmtree(d, ignore_errors=True)
        loop.warn(f"removed the unfinished run folder {ws.rel(d)} (the loop stopped while creating it)")
    for d in list_run_dirs(ws):
        st = read_state(d)
        phase = st.get("phase")
        if not st or phase == "done":
            continue  # an external trainer's folder (no .state) or a finished run
        if phase in ("prepared", "training"):
            _consume_if_pending(loop, d)
        if phase == "prepared" and st.get("session") == loop.session.id:
            continue  # launched by the main loop as this session's next run
        loop.say(f"recovering run {d.name} (left in phase `{phase}`)", "yellow")
        if phase == "prepared":
            record_outcome(loop, d, status="interrupted", result=None, attempts=0,
                           error="never launched: the loop stopped before starting it")
        elif phase == "training":
            pid, ctime = st.get("pid"), st.get("pid_create_time")
            if isinstance(pid, int):
                outcome = launch.stop_orphan(pid, ctime, launch.grace_seconds(_max_run_s(d)))
                loop.warn(f"trainer pid {pid} of run {d.name}: {outcome}")
            record_outcome(loop, d, status=None, error="recovered: the loop stopped while the trainer was running",
                           result=None, attempts=int(st.get("attempt", 1)), default_status="interrupted")
        _advance(loop, d)


def _max_run_s(run_dir: Path) -> float:
    data = read_json_tolerant(run_dir / "config.json", lambda m: None)
    try:
        return float(data["autopilot"]["max_run_seconds"])
    except (TypeError, KeyError, ValueError):
        return 60.0


def _consume_if_pending(loop: Loop, run_dir: Path) -> None:
    """Finish the 'remove the consumed proposal' step if the loop died right before it."""
    override = read_json_tolerant(run_dir / "override.json", loop.warn)
    if override and consume_pending(loop.ws, override, warn=None):
        loop.warn(f"the staged proposal was already used by run {run_dir.name}; removed it from proposals/")


def _next_prepared(loop: Loop) -> Path | None:
    for d, st in loop.session_runs():
        if st.get("phase") == "prepared":
            loop.say(f"  continuing prepared run {d.name}")
            return d
    return None


def _prepare(loop: Loop) -> Path | None:
    """Compose the config, create the run folder atomically, then consume the proposal."""
    ws = loop.ws
    history = load_history(ws, loop.warn, with_curve=False)
    # --set moves the session's starting point; after its first run the advisor's accepted proposals
    # carry the config forward, so re-applying --set each time would silently undo them.
    first_of_session = not list(loop.session_runs())
    base, source = current_base(ws, loop.mode, history, loop.base_overrides if first_of_session else None)
    sps = recent_sps(history)
    cfg, override = take_pending(ws, base, sps=sps, warn=loop.warn)
    if cfg is None:
        try:
            cfg = ensure_valid(base)
        except ConfigError as exc:
            if not source.startswith("run "):
                raise ConfigError(f"{source}: {exc}") from None
            loop.warn(f"the last run's config no longer validates ({str(exc)[:120]}); using the base file")
            base, source = current_base(ws, loop.mode, [], loop.base_overrides)
            cfg = ensure_valid(base)
    if loop.stop.requested:
        return None
    run_id = new_run_id(ws)
    staging = ws.runs / f"{run_id}{STAGING_SUFFIX}"
    staging.mkdir(parents=True)
    atomic_write_json(staging / "config.json", cfg.model_dump())
    atomic_write_json(staging / "override.json", override)
    write_state(staging, phase="prepared", session=loop.session.id, mode=loop.mode, base=source,
                base_digest=profile_digest(ws, loop.mode), attempt=0, created_at=iso_now())
    run_dir = ws.runs / run_id
    staging.rename(run_dir)
    if override:
        consume_pending(ws, override, warn=loop.warn)
    what = f"{source} + proposal ({len(override)} keys)" if override else f"{source} (no proposal)"
    loop.say(f"  run {run_id}: config from {what}")
    return run_dir


# --------------------------------------------------------------------------------------------------
def _advance(loop: Loop, run_dir: Path) -> None:
    """Take a run from whatever phase it is in to `done`."""
    phase = read_state(run_dir).get("phase")
    if phase == "prepared":
        train_run(loop, run_dir)
        phase = read_state(run_dir).get("phase")
        if phase == "prepared":  # stopped before launch: stays prepared for the rerun
            return
    if phase == "collected":
        rec = load_run(run_dir, loop.warn, with_curve=False)
        if rec.loop_summary is None:  # summary.json damaged after the fact: rebuild it
            record_outcome(loop, run_dir, status=None, error=None, result=None, attempts=1, default_status="crashed")
            rec = load_run(run_dir, loop.warn, with_curve=False)
        p = promote(loop.ws, rec, loop.warn)
        marks = ("latest ✓" if p.latest else "latest –") + (", best ★" if p.best else "")
        loop.say(f"  checkpoints: {marks}" + (f" ({'; '.join(p.notes)})" if p.notes else ""))
        write_state(run_dir, phase="promoted", promotion={"latest": p.latest, "best": p.best, "notes": list(p.notes)})
        phase = "promoted"
    if phase == "promoted":
        analyse_run(loop.ws, run_dir, advisor=loop.advisor, say=loop.say, warn=loop.warn, keep_pending=True,
                    remaining_runs=max(0, loop.session.target - len(loop.session_runs())),
                    remaining_seconds=loop.remaining_s())
        loop.session.advisor_tokens = _advisor_usage().tokens  # saved with the session at the next tick
        if loop.advisor == "manual" and not _person_decided(loop, run_dir):
            return  # stopped while waiting: the rerun analyses again and waits again
        write_state(run_dir, phase="done", finished_at=iso_now())


def _advisor_usage():
    from autopilot.decide.advisors.llm import SESSION_USAGE

    return SESSION_USAGE


def _person_decided(loop: Loop, run_dir: Path) -> bool:
    """`--advisor manual`: wait for a person's decision on the staged proposal (workspace/approval.py)."""
    from autopilot.workspace.approval import await_person

    if read_state(run_dir).get("person"):
        return True  # decided before a crash
    cfg = load_run(run_dir, loop.warn, with_curve=False).config
    timeout = cfg.autopilot.advisor.approval_timeout_s if cfg is not None else 900.0
    return await_person(loop.ws, run_dir, mode=loop.mode, timeout_s=timeout, console=loop.console,
                        stopped=lambda: loop.stop.requested) is not None


