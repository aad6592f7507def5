"""The loop runner and the workspace commands (issue 5), driven by the fake trainer (and once by the
real built-in trainer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from runner_fixtures import *  # noqa: F403 (the fixtures)
from runner_fixtures import REPO, trainer_command
from typer.testing import CliRunner

from autopilot.cli import app
from autopilot.errors import ConfigError
from autopilot.loop.commands import apply_command, diagnose_command, propose_command, status_command
from autopilot.loop.launch import trainer_argv
from autopilot.loop.runner import parse_until
from autopilot.workspace.layout import init_workspace, list_run_dirs, read_state


def _console():
    import io

    buf = io.StringIO()
    return Console(file=buf, width=220, color_system=None), buf


def test_run_3_quick_on_a_fresh_workspace_via_the_cli(tmp_path, ckpt_template, monkeypatch):
    """Acceptance (issue 5): three complete run folders, notes, three labbook sections, best/latest
    checkpoints and a staged proposal, from the real command on a folder that does not exist yet."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"steps": [], "default": {}}))
    monkeypatch.setenv("FAKE_PLAN", str(plan))
    monkeypatch.setenv("FAKE_CKPT", str(ckpt_template))
    ws_dir = tmp_path / "fresh"
    proc = subprocess.run(
        [sys.executable, "-m", "autopilot", "run", "--runs", "3", "--mode", "quick", "--workdir", str(ws_dir),
         "--set", "autopilot.trainer_command=" + json.dumps(trainer_command())],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    ws = init_workspace(ws_dir)
    dirs = list_run_dirs(ws)
    assert len(dirs) == 3
    for d in dirs:
        for f in ("config.json", "override.json", "train.log", "metrics.jsonl", "trainer_summary.json",
                  "summary.json", "notes.md"):
            assert (d / f).is_file(), f"{d.name}/{f}"
        assert read_state(d)["phase"] == "done"
        assert (d / "notes.md").read_text().startswith(f"Run {d.name} — ")
    assert json.loads((dirs[0] / "override.json").read_text()) == {}  # the first run is a baseline
    labbook = ws.labbook.read_text()
    assert labbook.count("<!-- autopilot:run ") == 3 and all(d.name in labbook for d in dirs)
    assert ws.best_model.is_file() and ws.latest_model.is_file()
    best = json.loads(ws.best_json.read_text())
    assert best["run_id"] in {d.name for d in dirs} and (ws.root / best["checkpoint"]).is_file()
    staged = json.loads(ws.next_config.read_text())
    assert staged["autopilot.resume_mode"] in ("fresh", "continue")
    # Progress lines: a line per stage.
    for stage in ("[1/3] run", "[3/3] run", "launching", "summary:", "findings:", "proposal"):
        assert stage in proc.stdout, stage


def test_the_staged_proposal_is_consumed_into_override_json_and_resume_follows_it(fake_ws):
    fake_ws.run(runs=1)
    staged = {"train.ent_coef": 0.02, "autopilot.resume_mode": "continue", "autopilot.resume_from": "best"}
    fake_ws.ws.next_config.write_text(json.dumps(staged))  # a person's edit between runs
    assert fake_ws.run(runs=1) == 0
    second = fake_ws.run_dirs()[1]
    assert json.loads((second / "override.json").read_text()) == staged
    assert json.loads((second / "config.json").read_text())["train"]["ent_coef"] == 0.02
    assert fake_ws.calls()[1]["resume"] == str(fake_ws.ws.best_model)
    # The analysis of run 2 staged a new proposal; the one consumed is gone.
    assert json.loads(fake_ws.ws.next_config.read_text()) != staged
    summary = json.loads((second / "summary.json").read_text())
    assert summary["resume"]["from"] == "best" and "train.ent_coef: 0.01 -> 0.02" in summary["changes"]


def test_accepted_changes_accumulate_from_the_last_run_config(fake_ws, stub_analysis):
    """Proposals are relative to the last run's config (what the advisors diff against)."""
    fake_ws.run(runs=1)
    fake_ws.ws.next_config.write_text(json.dumps({"train.ent_coef": 0.02}))
    fake_ws.run(runs=1)
    # After run 2 the stub proposes train.seed 1 -> 2 only; ent_coef must survive into run 3.
    fake_ws.run(runs=1)
    cfg = json.loads((fake_ws.run_dirs()[2] / "config.json").read_text())
    assert cfg["train"]["ent_coef"] == 0.02 and cfg["train"]["seed"] == 2


def test_set_moves_the_starting_point_and_does_not_undo_accepted_proposals(fake_ws, stub_analysis):
    """`--set train.ent_coef=0.12` starts the session there; a proposal that moves it must stick."""
    fake_ws.ws.next_config.write_text(json.dumps({"train.ent_coef": 0.05}))
    assert fake_ws.run(runs=3, base_overrides={"train.ent_coef": 0.12}) == 0
    ent = [json.loads((d / "config.json").read_text())["train"]["ent_coef"] for d in fake_ws.run_dirs()]
    # Run 1 consumed the staged proposal on top of the --set base; runs 2 and 3 inherit, not re-set.
    assert ent == [0.05, 0.05, 0.05]


def test_set_applies_to_the_first_run_of_a_session(fake_ws):
    assert fake_ws.run(runs=1, base_overrides={"train.ent_coef": 0.12}) == 0
    cfg = json.loads((fake_ws.run_dirs()[0] / "config.json").read_text())
    assert cfg["train"]["ent_coef"] == 0.12


def test_until_stops_the_session_when_the_target_is_reached(fake_ws):
    fake_ws.plan({"success": 0.5}, {"success": 0.95})
    assert fake_ws.run(runs=5, until="success_rate>=0.9") == 0
    assert len(fake_ws.run_dirs()) == 2
    assert "target success_rate>=0.9 reached" in fake_ws.output()


def test_budget_minutes_stops_the_session(fake_ws):
    fake_ws.plan(default={"epochs": 2, "epoch_sleep": 0.5})
    assert fake_ws.run(runs=5, budget_minutes=0.02) == 0  # 1.2 s: the first run spends it
    assert 1 <= len(fake_ws.run_dirs()) < 5
    assert "budget of 0.02 min spent" in fake_ws.output()


def test_a_baseline_pin_is_what_deltas_are_taken_against(fake_ws):
    fake_ws.plan({"success": 0.4}, {"success": 0.8}, {"success": 0.5})
    fake_ws.run(runs=1)
    first = fake_ws.run_dirs()[0].name
    fake_ws.ws.baseline_json.write_text(json.dumps({"run_id": first}))
    fake_ws.run(runs=2)
    last = fake_ws.summaries()[-1]
    assert last["baseline_run_id"] == first
    assert last["deltas"]["vs_baseline"]["success_rate"] == pytest.approx(0.1)
    assert last["deltas"]["vs_previous"]["success_rate"] == pytest.approx(-0.3)


def test_parse_until_and_trainer_argv():
    u = parse_until("success_rate >= 0.9")
    assert (u.metric, u.op, u.value) == ("success_rate", ">=", 0.9) and u.met(0.95) and not u.met(float("nan"))
    with pytest.raises(ConfigError, match="METRIC OP NUMBER"):
        parse_until("success_rate is high")
    cfg, rd, ck = Path("/c.json"), Path("/r"), Path("/m/latest.pt")
    tpl = ["t", "--config", "{config}", "--run-dir={run_dir}", "--resume", "{resume}"]
    assert trainer_argv(tpl, config=cfg, run_dir=rd, resume=ck) == ["t", "--config", "/c.json", "--run-dir=/r",
                                                                    "--resume", "/m/latest.pt"]
    assert trainer_argv(tpl, config=cfg, run_dir=rd, resume=None) == ["t", "--config", "/c.json", "--run-dir=/r"]
    assert trainer_argv(["t", "--resume={resume}"], config=cfg, run_dir=rd, resume=None) == ["t"]
    builtin = trainer_argv(None, config=cfg, run_dir=rd, resume=None)
    assert builtin == [sys.executable, "-m", "autopilot", "train", "--config", "/c.json", "--run-dir", "/r"]


# -- apply ---------------------------------------------------------------------------------------------
def test_apply_stages_a_valid_proposal(fake_ws):
    fake_ws.run(runs=1)
    fake_ws.ws.next_config.unlink()
    p = fake_ws.root / "mine.json"
    p.write_text(json.dumps({"train": {"ent_coef": 0.03}, "autopilot.resume_mode": "continue"}))
    console, out = _console()
    assert apply_command(p, fake_ws.root, console=console) == {"train.ent_coef": 0.03, "autopilot.resume_mode": "continue"}
    assert json.loads(fake_ws.ws.next_config.read_text()) == {"train.ent_coef": 0.03, "autopilot.resume_mode": "continue"}
    assert "train.ent_coef: 0.01 -> 0.03" in out.getvalue()


@pytest.mark.parametrize("proposal, message", [
    ({"train.ent_coeff": 0.03}, "train.ent_coeff is not a known key.*did you mean train.ent_coef"),
    ({"train.learning_rate": 5.0}, r"train.learning_rate=5 is outside its range"),
    ({"vec.num_workers": 3}, r"vec.num_workers=3 does not divide vec.num_envs=4"),
    ({"train.minibatch_size": 100}, r"train.minibatch_size=100"),
    ({"autopilot.trainer_command": ["rm", "-rf", "/"]}, "may not be set by a proposal"),
    ([1, 2], "must be a JSON object"),
])
def test_apply_rejects_a_broken_proposal_with_one_line_and_stages_nothing(fake_ws, proposal, message):
    fake_ws.run(runs=1)
    before = fake_ws.ws.next_config.read_bytes()
    p = fake_ws.root / "mine.json"
    p.write_text(json.dumps(proposal))
    res = CliRunner().invoke(app, ["apply", str(p), "--workdir", str(fake_ws.root)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    import re

    assert re.search(message, res.output.replace("\n", "")), res.output
    assert fake_ws.ws.next_config.read_bytes() == before  # nothing staged, the pending one untouched
    with pytest.raises(ConfigError, match="rejected \\(nothing staged\\)"):
        apply_command(p, fake_ws.root, console=_console()[0])


def test_apply_during_a_session_stages_the_next_runs_proposal(fake_ws, tmp_path):
    """A person vetoes/edits the next step while the loop trains: the loop uses it, the advisor does
    not overwrite it."""
    ready = tmp_path / "ready"
    fake_ws.plan({"epochs": 6, "epoch_sleep": 0.3, "ready_file": str(ready)})
    loop = fake_ws.popen("run", "--runs", "2", "--workdir", str(fake_ws.root))
    fake_ws.wait_for(ready.exists, timeout=60, what="the first run's trainer")
    mine = fake_ws.root / "mine.json"
    mine.write_text(json.dumps({"train.ent_coef": 0.033, "autopilot.resume_mode": "fresh"}))
    res = CliRunner().invoke(app, ["apply", str(mine), "--workdir", str(fake_ws.root)])
    assert res.exit_code == 0, res.output
    out, _ = loop.communicate(timeout=120)
    assert loop.returncode == 0, out
    assert "staged by hand during the run; kept" in out
    second = fake_ws.run_dirs()[1]
    assert json.loads((second / "override.json").read_text()) == {"train.ent_coef": 0.033, "autopilot.resume_mode": "fresh"}
    assert json.loads((second / "config.json").read_text())["train"]["ent_coef"] == 0.033


def test_apply_reports_malformed_json_in_one_line(fake_ws):
    p = fake_ws.root / "mine.json"
    p.write_text('{"train.ent_coef": ')
    res = CliRunner().invoke(app, ["apply", str(p), "--workdir", str(fake_ws.root)])
    assert res.exit_code == 1 and "malformed JSON at line 1" in res.output and "Traceback" not in res.output


# -- propose / status / diagnose ------------------------------------------------------------------------
def _external_ledger(root: Path, scores: list[float]) -> Path:
    """What an external trainer leaves: config.json and trainer_summary.json per run folder, nothing else."""
    from autopilot.config.load import profile_dict

    for i, sr in enumerate(scores):
        d = root / "runs" / f"2025-09-20T15351{i}Z"
        d.mkdir(parents=True)
        cfg = profile_dict("quick")
        cfg["train"]["ent_coef"] = 0.01 * (i + 1)
        (d / "config.json").write_text(json.dumps(cfg))
        (d / "trainer_summary.json").write_text(json.dumps({
            "schema": 1, "run_id": d.name, "status": "completed",
            "throughput": {"sps": 125000.0, "agent_steps": 11_000_000, "epoch": 349, "wall_s": 90.0},
            "metrics": {"success_rate": sr, "mean_reward": 7.4, "collision_rate": 0.0007, "episodes": 500},
            "trainer": {"approx_kl": 0.0, "clipfrac": 0.0, "entropy": 32.7, "value_loss": 0.006, "explained_var": 0.85},
            "checkpoint": {"path": None}}))
    return root


def test_propose_works_on_an_external_trainers_ledger(tmp_path):
    root = _external_ledger(tmp_path / "ext", [0.1, 9.38, 0.2])  # the middle one is a glitch
    console, out = _console()
    decision = propose_command(root, advisor="rules", console=console)
    assert decision is not None
    last = root / "runs" / "2025-09-20T153512Z"
    staged = json.loads((root / "proposals" / "next_config.json").read_text())
    assert "autopilot.resume_mode" in staged
    assert (last / "notes.md").read_text().startswith(f"Run {last.name}")
    assert not (last / "summary.json").exists()  # their folders are not rewritten
    assert (root / "journal" / "labbook.md").read_text().count("<!-- autopilot:run ") == 1
    # Status of that ledger: the glitched run is suspect and never best.
    console, out = _console()
    status_command(root, console=console)
    text = out.getvalue()
    assert "2025-09-20T153511Z" in text and "(suspect)" in text
    best_line = next(line for line in text.splitlines() if "★" in line)
    assert "2025-09-20T153512Z" in best_line


def test_propose_refuses_an_empty_ledger_and_unknown_advisor(tmp_path):
    init_workspace(tmp_path / "w")
    res = CliRunner().invoke(app, ["propose", "--workdir", str(tmp_path / "w")])
    assert res.exit_code == 1 and "holds no runs" in res.output
    res = CliRunner().invoke(app, ["propose", "--workdir", str(tmp_path / "w"), "--advisor", "oracle"])
    assert res.exit_code == 1 and "advisor 'oracle' is not registered" in res.output


def test_status_and_diagnose_json(fake_ws):
    fake_ws.plan({}, {"crash_at": 1}, {"crash_at": 1})  # run 2 crashes twice (retry included)
    fake_ws.run(runs=2)
    res = CliRunner().invoke(app, ["status", "--workdir", str(fake_ws.root)])
    assert res.exit_code == 0, res.output
    dirs = fake_ws.run_dirs()
    assert dirs[0].name in res.output and "crashed" in res.output and "★" in res.output
    res = CliRunner().invoke(app, ["diagnose", str(dirs[1]), "--json"])
    assert res.exit_code == 0, res.output
    findings = json.loads(res.output)
    assert any(f["code"] == "crashed" for f in findings)
    assert all(set(f) >= {"code", "severity", "evidence", "theory", "moves"} for f in findings)
    console, out = _console()
    diagnose_command(dirs[1], console=console)
    assert "crashed" in out.getvalue()
    res = CliRunner().invoke(app, ["diagnose", str(fake_ws.root / "nope")])
    assert res.exit_code == 1 and "does not exist" in res.output


# -- the real built-in trainer, once -----------------------------------------------------------------------
def test_end_to_end_with_the_builtin_trainer(tmp_path):
    """Two loop iterations of the real PPO trainer on a tiny config, with the real analysis."""
    pytest.importorskip("autopilot.trainer.train")
    tiny = ["env.num_envs=2", "env.num_drones=2", "env.max_steps=10", "vec.num_envs=1", "train.bptt_horizon=8",
            "train.total_timesteps=64", "autopilot.eval_episodes=0", "autopilot.metrics_window=2"]
    args = [sys.executable, "-m", "autopilot", "run", "--runs", "2", "--mode", "quick", "--workdir", str(tmp_path / "w")]
    for s in tiny:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=280, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ws = init_workspace(tmp_path / "w")
    dirs = list_run_dirs(ws)
    assert len(dirs) == 2
    statuses = [json.loads((d / "summary.json").read_text())["status"] for d in dirs]
    assert statuses == ["completed", "completed"]
    assert (dirs[0] / "checkpoints" / "latest.pt").is_file() and ws.latest_model.is_file()
    from autopilot.workspace.pointers import checkpoint_loads

    best = json.loads(ws.best_json.read_text())
    assert checkpoint_loads(ws.root / best["checkpoint"])[0] and checkpoint_loads(ws.best_model)[0]
    assert ws.labbook.read_text().count("<!-- autopilot:run ") == 2
    assert ws.next_config.is_file()
