"""Reliability (issue 6): every fault injected for real — the trainer child killed, hung, crashed or
diverging; the loop itself SIGKILLed or interrupted; files corrupted; proposals malformed — and
afterwards the ledger is consistent, nothing is lost and the next `autopilot run` goes on."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from runner_fixtures import *  # noqa: F403 (the fixtures)
from runner_fixtures import FakeWorkspace, profile_with

from autopilot.loop import runner
from autopilot.workspace import recording
from autopilot.workspace.layout import read_state
from autopilot.workspace.pointers import checkpoint_loads


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _latest_from(fw: FakeWorkspace) -> str:
    return json.loads(fw.ws.latest_json.read_text())["run_id"]


def _kill_when_ready(fw: FakeWorkspace, ready: Path, sig: int = signal.SIGKILL) -> threading.Thread:
    """A side thread: once the fake trainer has written its first line, kill it by its recorded pid."""
    def kill() -> None:
        fw.wait_for(ready.exists, what="the trainer's first metrics line")
        fw.wait_for(lambda: fw.training_pid() is not None, what="the trainer pid in .state")
        os.kill(fw.training_pid(), sig)

    t = threading.Thread(target=kill, daemon=True)
    t.start()
    return t


# -- the trainer child --------------------------------------------------------------------------------------
def test_a_hung_trainer_is_killed_as_stalled_and_the_loop_goes_on(fake_ws):
    profile_with(fake_ws.ws, stall_seconds=1.0)
    fake_ws.plan({"hang_at": 1})
    assert fake_ws.run(runs=2) == 0
    fake_ws.assert_complete(2)
    first, second = fake_ws.summaries()
    assert (first["status"], second["status"]) == ("stalled", "completed")
    assert "no new metrics line" in first["error"] and first["attempts"] == 1  # a stall is not retried
    assert not _alive(fake_ws.calls()[0]["pid"])  # the hung process is gone
    assert "status: stalled" in (fake_ws.run_dirs()[0] / "notes.md").read_text()
    assert _latest_from(fake_ws) == second["run_id"]  # never latest from a broken run


@pytest.mark.parametrize("ignore_term", [False, True], ids=["saves-on-sigterm", "ignores-sigterm"])
def test_past_the_wall_budget_the_trainer_is_interrupted_and_its_checkpoint_kept(fake_ws, ignore_term):
    profile_with(fake_ws.ws, max_run_seconds=1.0, stall_seconds=30.0)  # grace 2 s: SIGTERM at 3 s
    fake_ws.plan({"epochs": 200, "epoch_sleep": 0.1, "ignore_term": ignore_term})
    t0 = time.monotonic()
    assert fake_ws.run(runs=1) == 0
    assert time.monotonic() - t0 < 15
    fake_ws.assert_complete(1)
    s = fake_ws.summaries()[0]
    assert s["status"] == "interrupted" and "wall budget" in s["error"]
    run_dir = fake_ws.run_dirs()[0]
    assert checkpoint_loads(run_dir / "checkpoints" / "latest.pt")[0]
    assert _latest_from(fake_ws) == run_dir.name and checkpoint_loads(fake_ws.ws.latest_model)[0]
    assert not _alive(fake_ws.calls()[0]["pid"])
    if ignore_term:  # no summary from the trainer: the loop's own verdict, after SIGKILL
        assert not (run_dir / "trainer_summary.json").exists()
    else:
        assert json.loads((run_dir / "trainer_summary.json").read_text())["status"] == "interrupted"


def test_a_crashed_trainer_is_retried_from_its_own_latest_checkpoint(fake_ws):
    fake_ws.plan({"crash_at": 2})
    assert fake_ws.run(runs=1) == 0
    fake_ws.assert_complete(1)
    s = fake_ws.summaries()[0]
    assert s["status"] == "completed" and s["attempts"] == 2
    run_dir = fake_ws.run_dirs()[0]
    calls = fake_ws.calls()
    assert calls[0]["resume"] is None and calls[1]["resume"] == str(run_dir / "checkpoints" / "latest.pt")
    log = (run_dir / "train.log").read_text()
    assert "attempt 1" in log and "attempt 2" in log and "fake trainer crash" in log


def test_a_trainer_crashing_beyond_its_retries_is_recorded_with_its_log_tail(fake_ws):
    fake_ws.plan({"crash_at": 1}, {"crash_at": 1})
    assert fake_ws.run(runs=2) == 0
    fake_ws.assert_complete(2)
    first, second = fake_ws.summaries()
    assert first["status"] == "crashed" and first["attempts"] == 2 and first["score"] is None
    assert "exit code 3" in first["error"] and "RuntimeError: fake trainer crash" in first["error"]
    notes = (fake_ws.run_dirs()[0] / "notes.md").read_text()
    assert "RuntimeError: fake trainer crash" in notes and "status: crashed" in notes
    assert second["status"] == "completed"
    assert fake_ws.best()["run_id"] == second["run_id"] and _latest_from(fake_ws) == second["run_id"]


def test_a_trainer_killed_with_sigkill_mid_run_is_crashed_then_the_loop_goes_on(fake_ws, tmp_path):
    profile_with(fake_ws.ws, max_retries=0)
    ready = tmp_path / "ready"
    fake_ws.plan({"epochs": 100, "epoch_sleep": 0.1, "ready_file": str(ready)})
    killer = _kill_when_ready(fake_ws, ready)
    assert fake_ws.run(runs=2) == 0
    killer.join(5)
    fake_ws.assert_complete(2)
    first, second = fake_ws.summaries()
    assert first["status"] == "crashed" and "killed by SIGKILL" in first["error"]
    assert second["status"] == "completed"


def test_nan_diverges_and_the_next_run_rolls_back_to_best(fake_ws):
    fake_ws.plan({"success": 0.5}, {"nan_at": 2}, {})
    assert fake_ws.run(runs=2) == 0
    good, bad = fake_ws.run_dirs()
    assert fake_ws.summaries()[1]["status"] == "diverged"
    assert _latest_from(fake_ws) == good.name and fake_ws.best()["run_id"] == good.name
    # The real analysis answers a divergence with a smaller step, resuming from best.
    staged = json.loads(fake_ws.ws.next_config.read_text())
    assert staged["autopilot.resume_from"] == "best"
    base_lr = json.loads((bad / "config.json").read_text())["train"]["learning_rate"]
    assert staged.get("train.learning_rate", base_lr) < base_lr or staged.get("train.max_grad_norm", 1e9) < 0.5
    # Even if a person asks for latest, the loop never continues from latest after a divergence.
    fake_ws.ws.next_config.write_text(json.dumps({"autopilot.resume_mode": "continue", "autopilot.resume_from": "latest"}))
    assert fake_ws.run(runs=1) == 0
    assert fake_ws.calls()[-1]["resume"] == str(fake_ws.ws.best_model)
    third = fake_ws.summaries()[2]
    assert third["resume"]["from"] == "best" and any("rollback" in n for n in third["resume"]["notes"])


# -- the loop itself killed -----------------------------------------------------------------------------------
def _loop_argv(fw: FakeWorkspace, runs: int) -> list[str]:
    return ["run", "--runs", str(runs), "--mode", "quick", "--workdir", str(fw.root)]


def test_the_loop_sigkilled_mid_run_is_resumed_by_the_same_command(fake_ws, tmp_path):
    ready = tmp_path / "ready"
    fake_ws.plan({}, {"epochs": 100, "epoch_sleep": 0.2, "ready_file": str(ready)})
    loop = fake_ws.popen(*_loop_argv(fake_ws, 3))
    fake_ws.wait_for(ready.exists, timeout=60, what="run 2's trainer to start")
    staged_for_run2 = json.loads((fake_ws.run_dirs()[1] / "override.json").read_text())
    trainer_pid = fake_ws.training_pid()
    loop.kill()
    loop.wait(10)
    # The kernel tells the orphaned trainer (PDEATHSIG): it saves and exits instead of running on.
    fake_ws.wait_for(lambda: not _alive(trainer_pid), timeout=10, what="the orphaned trainer to exit")
    assert staged_for_run2 and not fake_ws.ws.next_config.exists()  # consumed by run 2, kept in override.json
    done = fake_ws.cli(*_loop_argv(fake_ws, 3), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "recovering run" in done.stdout and "resuming session" in done.stdout
    fake_ws.assert_complete(3)
    assert fake_ws.statuses() == ["completed", "interrupted", "completed"]
    assert len(fake_ws.calls()) == 3  # no run launched twice
    assert "status: interrupted" in (fake_ws.run_dirs()[1] / "notes.md").read_text()
    assert json.loads((fake_ws.run_dirs()[1] / "override.json").read_text()) == staged_for_run2
    again = fake_ws.cli(*_loop_argv(fake_ws, 3), timeout=120)  # the finished session starts anew
    assert again.returncode == 0 and len(fake_ws.run_dirs()) == 6


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_the_loop_stops_gracefully_on_a_signal_and_continues_on_rerun(fake_ws, tmp_path, sig, code):
    ready = tmp_path / "ready"
    fake_ws.plan({"epochs": 100, "epoch_sleep": 0.2, "ready_file": str(ready)})
    loop = fake_ws.popen(*_loop_argv(fake_ws, 2))
    fake_ws.wait_for(ready.exists, timeout=60, what="the trainer to start")
    loop.send_signal(sig)
    out, _ = loop.communicate(timeout=30)
    assert loop.returncode == code, out
    assert "rerun the same command to continue" in out and "Traceback" not in out
    fake_ws.assert_complete(1)  # the run in flight is finished on the record: interrupted, analysed, noted
    assert fake_ws.statuses() == ["interrupted"]
    assert json.loads((fake_ws.run_dirs()[0] / "trainer_summary.json").read_text())["status"] == "interrupted"
    assert fake_ws.ws.next_config.exists()  # the proposal for the next run is staged
    done = fake_ws.cli(*_loop_argv(fake_ws, 2), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    fake_ws.assert_complete(2)
    assert fake_ws.statuses() == ["interrupted", "completed"]


class _Died(BaseException):
    """The loop dying at a chosen point (BaseException: nothing in the loop may swallow it)."""


def _die(*args, **kwargs):
    raise _Died()


def _die_on_prepared_state(real):
    def write_state(run_dir, **fields):
        if fields.get("phase") == "prepared":
            real(run_dir, **fields)
            raise _Died()
        return real(run_dir, **fields)

    return write_state


def _die_after_spawn(real):
    def supervise(proc, *args, **kwargs):
        raise _Died()  # the child keeps running, as it would after a real crash of the loop

    return supervise


CRASH_POINTS = {
    "creating the run folder": lambda mp: mp.setattr(runner, "write_state", _die_on_prepared_state(runner.write_state)),
    "before the proposal is removed": lambda mp: mp.setattr(runner, "consume_pending", _die),
    "before the launch": lambda mp: mp.setattr(runner.launch, "spawn", _die),
    "while the trainer runs": lambda mp: mp.setattr(runner.launch, "supervise", _die_after_spawn(None)),
    "after summary.json": lambda mp: mp.setattr(runner, "promote", _die),
    "after the promotion": lambda mp: mp.setattr(runner, "analyse_run", _die),
    "after staging the next proposal": lambda mp: mp.setattr(recording, "append_labbook", _die),
}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_every_crash_point_of_an_iteration_is_recoverable(fake_ws, monkeypatch, point):
    fake_ws.plan(default={"epochs": 3, "epoch_sleep": 0.05})
    assert fake_ws.run(runs=1) == 0
    staged = json.loads(fake_ws.ws.next_config.read_text())
    with monkeypatch.context() as mp:
        CRASH_POINTS[point](mp)
        with pytest.raises(_Died):
            fake_ws.run(runs=1)  # a new session (the first one finished) dies in its only run
    assert fake_ws.run(runs=1) == 0, fake_ws.output()[-2000:]  # the same command: resumes that session
    fake_ws.assert_complete(2)
    second = fake_ws.run_dirs()[1]
    assert json.loads((second / "override.json").read_text()) == staged  # the proposal reached its run
    assert fake_ws.ws.next_config.exists()  # and the run's own proposal is staged
    assert fake_ws.best() is not None and checkpoint_loads(fake_ws.ws.resolve(fake_ws.best()["checkpoint"]))[0]
    expected = "interrupted" if point == "while the trainer runs" else "completed"
    assert fake_ws.statuses() == ["completed", expected]
    assert all(not _alive(c["pid"]) for c in fake_ws.calls())
    assert len(list(fake_ws.ws.rejected.glob("*.json"))) == 0  # nothing was mistaken for a bad proposal


# -- the lock -------------------------------------------------------------------------------------------------
def test_a_second_run_on_the_same_workspace_is_refused_naming_the_holder(fake_ws, tmp_path):
    ready = tmp_path / "ready"
    fake_ws.plan({"epochs": 100, "epoch_sleep": 0.1, "ready_file": str(ready)})
    first = fake_ws.popen(*_loop_argv(fake_ws, 1))
    try:
        fake_ws.wait_for(ready.exists, timeout=60, what="the first loop's trainer")
        second = fake_ws.cli(*_loop_argv(fake_ws, 1))
        assert second.returncode == 1
        assert f"in use by pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)
    assert len(fake_ws.run_dirs()) == 1


def test_a_stale_lock_from_a_dead_process_is_taken_over(fake_ws):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fake_ws.ws.lock_path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                "started_at": "2025-01-01T00:00:00Z"}))
    assert fake_ws.run(runs=1) == 0
    assert f"took over a stale lock .autopilot.lock left by pid {dead.pid} (dead" in fake_ws.output()
    fake_ws.assert_complete(1)


# -- corrupt or missing inputs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("proposal, reason", [
    ('{"train.ent_coeff": 0.05}', "train.ent_coeff is not a known key"),
    ('{"train.learning_rate": 7}', "train.learning_rate=7 is outside its range"),
    ('{"vec.num_workers": 3}', "vec.num_workers=3 does not divide vec.num_envs=4"),
    ('{"train.batch_size": 1000}', "train.batch_size=1000 breaks the segments rule"),
    ('{"train.learning_rate": "fast"}', "train.learning_rate='fast' is invalid"),
    ('{"autopilot.trainer_command": ["sh", "-c", "echo hi"]}', "may not be set by a proposal"),
    ('{"train.ent_coef": 0.0', "malformed JSON"),
    ('[["train.ent_coef", 0.05]]', "must be a JSON object"),
])
def test_a_broken_staged_proposal_is_kept_in_rejected_and_the_loop_goes_on(fake_ws, proposal, reason):
    fake_ws.run(runs=1)
    fake_ws.ws.next_config.write_text(proposal)
    assert fake_ws.run(runs=1) == 0
    fake_ws.assert_complete(2)
    rejected = list(fake_ws.ws.rejected.glob("*.json"))
    assert len(rejected) == 1
    entry = json.loads(rejected[0].read_text())
    assert any(reason in r for r in entry["reasons"]), entry["reasons"]
    assert entry.get("proposal") is not None or entry.get("raw_text") == proposal
    second = fake_ws.run_dirs()[1]
    assert json.loads((second / "override.json").read_text()) == {}  # the base config was used
    assert fake_ws.statuses() == ["completed", "completed"]
    assert "staged proposal rejected" in fake_ws.output()


@pytest.mark.parametrize("damage", ["truncated", "missing run", "missing checkpoint"])
def test_a_damaged_best_json_is_rebuilt_from_the_ledger(fake_ws, damage):
    fake_ws.plan({"success": 0.6}, {"success": 0.3})
    fake_ws.run(runs=1)
    good = fake_ws.run_dirs()[0].name
    best = fake_ws.ws.best_json
    if damage == "truncated":
        best.write_text(best.read_text()[:20])
    elif damage == "missing run":
        best.write_text(json.dumps({"run_id": "2020-01-01T000000Z", "score": 0.99, "checkpoint": "runs/x/best.pt"}))
    else:
        data = json.loads(best.read_text())
        (fake_ws.ws.resolve(data["checkpoint"])).unlink()
    assert fake_ws.run(runs=1) == 0
    assert "rebuilt runs/best.json: best is run " + good in fake_ws.output()
    ptr = fake_ws.best()  # still the 0.6 run (the 0.3 one does not beat it), on a checkpoint that loads
    assert ptr["run_id"] == good and checkpoint_loads(fake_ws.ws.resolve(ptr["checkpoint"]))[0]
    if damage == "missing checkpoint":  # its best.pt is gone: the run's own latest.pt stands in
        assert ptr["checkpoint"].endswith("checkpoints/latest.pt")
    fake_ws.assert_complete(2)


def test_a_checkpoint_that_does_not_load_is_never_resumed_from(fake_ws):
    fake_ws.run(runs=1)
    fake_ws.ws.latest_model.write_bytes(b"\x00garbage, not a torch file")
    fake_ws.ws.next_config.write_text(json.dumps({"autopilot.resume_mode": "continue", "autopilot.resume_from": "latest"}))
    assert fake_ws.run(runs=1) == 0
    assert fake_ws.calls()[-1]["resume"] == str(fake_ws.ws.best_model)
    notes = fake_ws.summaries()[1]["resume"]["notes"]
    assert any("does not load" in n for n in notes) and any("fell back to models/best.pt" in n for n in notes)
    fake_ws.assert_complete(2)


def test_a_run_whose_checkpoint_does_not_load_is_not_promoted(fake_ws, tmp_path, monkeypatch):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("FAKE_CKPT", str(junk))
    assert fake_ws.run(runs=1) == 0
    fake_ws.assert_complete(1)
    assert fake_ws.best() is None and not fake_ws.ws.latest_model.exists()
    assert "does not load" in fake_ws.output()


@pytest.mark.parametrize("kind", ["truncated", "missing"])
def test_an_unreadable_trainer_summary_is_a_failed_run_not_a_traceback(fake_ws, kind):
    fake_ws.plan({"summary": kind}, {"summary": kind}, {})
    assert fake_ws.run(runs=2) == 0
    fake_ws.assert_complete(2)
    first, second = fake_ws.summaries()
    assert first["status"] == "failed" and first["attempts"] == 2
    assert ("malformed JSON" if kind == "truncated" else "no trainer_summary.json") in first["error"]
    assert second["status"] == "completed"


def test_a_corrupt_loop_summary_of_an_old_run_does_not_stop_the_next(fake_ws):
    fake_ws.run(runs=1)
    (fake_ws.run_dirs()[0] / "summary.json").write_text('{"run_id": "x", "status": ')
    assert fake_ws.run(runs=1) == 0
    assert "summary.json is malformed JSON" in fake_ws.output()
    assert len(fake_ws.run_dirs()) == 2 and read_state(fake_ws.run_dirs()[1])["phase"] == "done"


def test_a_corrupt_profile_is_a_one_line_error(fake_ws):
    fake_ws.ws.profile_path("quick").write_text('{"env_name": ')
    res = fake_ws.cli(*_loop_argv(fake_ws, 1))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "baseline_quick.json is malformed JSON" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert fake_ws.run_dirs() == []


def test_an_unstartable_trainer_is_one_line_with_the_run_recorded_failed(fake_ws):
    profile_with(fake_ws.ws, trainer_command=["/no/such/trainer", "{config}"])
    res = fake_ws.cli(*_loop_argv(fake_ws, 2))
    assert res.returncode == 1 and "cannot start the trainer '/no/such/trainer'" in res.stderr
    assert "Traceback" not in res.stderr
    fake_ws.assert_complete(1)
    assert fake_ws.statuses() == ["failed"]


def test_an_analysis_that_raises_still_leaves_a_complete_record(fake_ws, monkeypatch):
    from autopilot.decide import analysis

    def broken(history, **kw):
        raise RuntimeError("advisor exploded")

    monkeypatch.setattr(analysis, "analyse_and_propose", broken)
    assert fake_ws.run(runs=2) == 0
    fake_ws.assert_complete(2)
    notes = (fake_ws.run_dirs()[0] / "notes.md").read_text()
    assert "analysis unavailable" in notes and "RuntimeError: advisor exploded" in notes and "Loop record" in notes
    assert "analysis failed for run" in fake_ws.output()
    assert not fake_ws.ws.next_config.exists()  # no proposal: the next run repeats the last config
    assert json.loads((fake_ws.run_dirs()[1] / "override.json").read_text()) == {}


# -- metric sanity on ingest ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("success", [9.38, -0.5, "NaN"])
def test_glitched_metrics_mark_the_run_suspect_never_best(fake_ws, success):
    value = float(success) if isinstance(success, str) else success
    fake_ws.plan({"success": 0.3}, {"success": value})
    assert fake_ws.run(runs=2) == 0
    fake_ws.assert_complete(2)
    clean, glitched = fake_ws.summaries()
    assert glitched["suspect"] is True and any("success_rate" in r for r in glitched["suspect_reasons"])
    assert fake_ws.best()["run_id"] == clean["run_id"] and _latest_from(fake_ws) == clean["run_id"]
    notes = (fake_ws.run_dirs()[1] / "notes.md").read_text()
    assert "SUSPECT" in notes and "metric_glitch" in glitched["findings"]


# -- soak ------------------------------------------------------------------------------------------------------------
TINY_BUILTIN = {"env": {"num_envs": 2, "num_drones": 2, "max_steps": 10}, "vec": {"num_envs": 1, "num_workers": 1},
                "train": {"bptt_horizon": 8, "total_timesteps": 256, "checkpoint_interval": 1}}


def _soak(fw: FakeWorkspace, *, runs: int, kill_delay_max: float, seed: int) -> dict:
    """Run `runs` iterations; in a third of them a side thread SIGKILLs the trainer at a random moment
    (and, half the time, its retry too). Returns the figures; asserts the ledger invariants."""
    rng = random.Random(seed)
    doomed = set(rng.sample(range(runs), math.ceil(runs / 3)))
    kills: list[tuple[int, int, float]] = []
    stop = threading.Event()

    def killer() -> None:
        seen: set[tuple[str, int]] = set()
        while not stop.is_set():
            for idx, d in enumerate(fw.run_dirs()):
                st = read_state(d)
                key = (d.name, st.get("attempt", 0))
                if idx not in doomed or st.get("phase") != "training" or key in seen or not isinstance(st.get("pid"), int):
                    continue
                seen.add(key)
                if st["attempt"] > 1 and rng.random() < 0.5:
                    continue  # let some retries live
                delay = rng.uniform(0.0, kill_delay_max)
                time.sleep(delay)
                try:
                    os.kill(st["pid"], signal.SIGKILL)
                    kills.append((idx + 1, st["attempt"], round(delay, 2)))
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        assert fw.run(runs=runs) == 0
    finally:
        stop.set()
        print(fw.output())
        t.join(10)
    elapsed = time.monotonic() - t0
    fw.assert_complete(runs)  # every run ended with a status, analysed and noted; no gaps, no duplicates
    statuses = fw.statuses()
    assert all(s in ("completed", "crashed", "interrupted", "failed") for s in statuses), statuses
    best = fw.best()
    assert best is not None and checkpoint_loads(fw.ws.resolve(best["checkpoint"]))[0]
    assert checkpoint_loads(fw.ws.best_model)[0] and checkpoint_loads(fw.ws.latest_model)[0]
    assert kills, "the soak must actually kill something"
    assert all(not _alive(c["pid"]) for c in fw.calls()) if fw.calls() else True
    return {"runs": runs, "seconds": round(elapsed, 1), "doomed": sorted(i + 1 for i in doomed), "kills": kills,
            "statuses": statuses, "attempts": [s["attempts"] for s in fw.summaries()],
            "best": (best["run_id"], round(best["score"], 3))}


@pytest.fixture
def no_plateau_stop(monkeypatch):
    """The soak is about reliability: a plateau (a legitimate early stop) must not cut it short."""
    monkeypatch.setattr(runner, "PLATEAU_RUNS", 10**6)


@pytest.mark.slow
def test_soak_fake_trainer(fake_ws, capsys, no_plateau_stop):
    profile_with(fake_ws.ws, max_retries=1)
    fake_ws.plan(default={"epochs": 8, "epoch_sleep": 0.1})
    figures = _soak(fake_ws, runs=10, kill_delay_max=0.7, seed=20250920)
    with capsys.disabled():
        print(f"\nsoak (fake trainer): {figures}")


@pytest.mark.slow
def test_soak_builtin_trainer(fake_ws, capsys, no_plateau_stop):
    """The same with the real PPO trainer child (tiny config): kills land during start-up or training."""
    pytest.importorskip("autopilot.trainer.train")
    path = fake_ws.ws.profile_path("quick")
    prof = json.loads(path.read_text())
    for section, values in TINY_BUILTIN.items():
        prof[section].update(values)
    prof["autopilot"].update({"trainer_command": None, "stall_seconds": 60.0, "max_run_seconds": 120.0,
                              "max_retries": 1, "eval_episodes": 0, "metrics_window": 2})
    path.write_text(json.dumps(prof))
    figures = _soak(fake_ws, runs=10, kill_delay_max=6.0, seed=7)
    with capsys.disabled():
        print(f"\nsoak (built-in trainer): {figures}")
