"""The outside advisors in the real loop, from the command line: `autopilot run --advisor llm --runs 2`
against a scripted OpenAI-protocol server, and `--advisor manual` with a person approving, editing,
vetoing or not answering (the fake trainer stands in for training)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from openai_server import openai_server  # noqa: F401 (fixture)
from runner_fixtures import *  # noqa: F403 (fixtures)

from autopilot.workspace.approval import approve_command, awaiting_path


def notes(fake_ws, i: int) -> str:
    return (fake_ws.run_dirs()[i] / "notes.md").read_text()


def test_run_advisor_llm_runs_2_from_the_command_line(fake_ws, openai_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("AUTOPILOT_LLM_MODEL", "test-model")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    openai_server.script(
        {"content": json.dumps({"changes": {"autopilot.trainer_command": ["sh", "-c", "echo [/] [bold]pwned"]},
                                "headline": "use my trainer", "rationale": ["success_rate will be 0.999"]})},
        {"content": json.dumps({"changes": {"train.gae_lambda": 0.9}, "resume_mode": "continue",
                                "resume_from": "latest", "headline": "shorter credit assignment",
                                "rationale": ["value fit is fine; lower lambda for less variance"]})})
    done = fake_ws.cli("run", "--advisor", "llm", "--runs", "2", "--workdir", str(fake_ws.root), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    fake_ws.assert_complete(2)
    assert len(openai_server.requests) == 2
    assert "llm refused: autopilot.trainer_command=['sh', '-c', 'echo [/] [bold]pwned']" in done.stdout  # markup shown, not run
    # run 1: the model's proposal refused, shown with why, and what ran instead
    first = notes(fake_ws, 0)
    assert "## Refused proposals" in first
    assert "- llm proposed: autopilot.trainer_command: [" in first and "-> ['sh', '-c', 'echo [/] [bold]pwned']" in first
    assert "model test-model's theory (quoted, not checked): “success_rate will be 0.999”" in first
    assert "  - refused: autopilot.trainer_command=" in first and "- ran instead: rules:" in first
    labbook = fake_ws.ws.labbook.read_text()
    assert "- Refused: llm (autopilot.trainer_command=" in labbook and "ran rules instead" in labbook
    # run 2 trained what rules proposed; the model's second proposal was accepted and staged
    second = notes(fake_ws, 1)
    assert "- Advisor: llm" in second and "train.gae_lambda: 0.95 -> 0.9" in second
    assert json.loads(fake_ws.ws.next_config.read_text())["train.gae_lambda"] == 0.9
    cfg = json.loads((fake_ws.run_dirs()[1] / "config.json").read_text())
    assert "pwned" not in json.dumps(cfg)


def _start_manual(fake_ws, runs: int, timeout: float = 60) -> subprocess.Popen:
    return fake_ws.popen("run", "--advisor", "manual", "--runs", str(runs), "--workdir", str(fake_ws.root),
                         "--approval-timeout", str(timeout))


def _wait_awaiting(fake_ws, run_index: int) -> dict:
    fake_ws.wait_for(lambda: awaiting_path(fake_ws.ws).exists() and len(fake_ws.run_dirs()) == run_index + 1,
                     timeout=60, what=f"the wait after run {run_index + 1}")
    return json.loads(awaiting_path(fake_ws.ws).read_text())


def test_manual_approve_then_edit(fake_ws):
    loop = _start_manual(fake_ws, 2)
    try:
        waiting = _wait_awaiting(fake_ws, 0)
        draft = waiting["staged"]
        assert draft and json.loads(fake_ws.ws.next_config.read_text()) == draft
        approve_command(fake_ws.root, note="looks right")
        _wait_awaiting(fake_ws, 1)
        edited = {"train.gae_lambda": 0.9, "autopilot.resume_mode": "continue", "autopilot.resume_from": "latest"}
        fake_ws.ws.next_config.write_text(json.dumps(edited))
        out, _ = loop.communicate(timeout=60)
    finally:
        loop.kill()
    assert loop.returncode == 0, out
    assert "waiting for a person" in out
    fake_ws.assert_complete(2)
    # run 2 trained the approved draft
    override = json.loads((fake_ws.run_dirs()[1] / "override.json").read_text())
    assert override == draft
    first, second = notes(fake_ws, 0), notes(fake_ws, 1)
    assert "## Decision by a person" in first and " approved " in first and "- note: looks right" in first
    assert "- how: autopilot approve" in first
    assert "replaced the draft with train.gae_lambda=0.9" in second and "- drafted by the advisor:" in second
    labbook = fake_ws.ws.labbook.read_text()
    assert labbook.count("- Person: ") == 2
    assert json.loads(fake_ws.ws.next_config.read_text()) == edited  # the edit is what the next run uses


def test_manual_invalid_edit_is_reported_and_a_veto_stops_the_session(fake_ws):
    loop = _start_manual(fake_ws, 3)
    try:
        _wait_awaiting(fake_ws, 0)
        fake_ws.ws.next_config.write_text(json.dumps({"train.gae_lambda": 7}))
        time.sleep(1.0)  # the loop validates the edit, reports it and keeps waiting
        assert awaiting_path(fake_ws.ws).exists()
        approve_command(fake_ws.root, veto=True)
        out, _ = loop.communicate(timeout=60)
    finally:
        loop.kill()
    assert loop.returncode == 0, out
    assert "is not valid: train.gae_lambda=7" in out
    assert "a person vetoed the proposal" in out
    assert len(fake_ws.run_dirs()) == 1  # nothing a person refused was trained
    assert not fake_ws.ws.next_config.exists()
    assert list(fake_ws.ws.rejected.glob("*.vetoed.json"))
    assert "vetoed the proposal; the session stops after this run" in notes(fake_ws, 0)


def test_manual_timeout_runs_the_draft_and_says_nobody_reviewed_it(fake_ws):
    loop = _start_manual(fake_ws, 1, timeout=1.0)
    out, _ = loop.communicate(timeout=60)
    assert loop.returncode == 0, out
    assert "no decision (no answer within 1s); the draft runs unreviewed" in notes(fake_ws, 0)
    assert fake_ws.ws.next_config.exists()


def test_approve_with_nothing_waiting_is_a_clear_error(fake_ws):
    done = fake_ws.cli("approve", "--workdir", str(fake_ws.root))
    assert done.returncode == 1 and "no proposal is waiting for approval" in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--advisor-command", "'unterminated"], "cannot be split into arguments"),
    (["--advisor", "oracle"], "advisor 'oracle' is not registered; use one of command, constant, llm, manual, optuna, optuna-cmaes, optuna-qmc, optuna-random, random, rules"),
])
def test_bad_advisor_options_are_one_line_errors(fake_ws, args, message):
    done = fake_ws.cli("run", "--runs", "1", "--workdir", str(fake_ws.root), *args)
    assert done.returncode == 1 and message in done.stderr


def test_the_token_budget_is_per_session_and_survives_a_restart(fake_ws, openai_server, monkeypatch):  # noqa: F811
    from autopilot.decide.advisors import llm

    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("AUTOPILOT_LLM_MODEL", "test-model")
    monkeypatch.setattr(llm, "SESSION_USAGE", llm.UsageMeter())
    openai_server.script(default={"content": json.dumps({"changes": {"train.gae_lambda": 0.9}, "headline": "h",
                                                         "rationale": ["r"]})})
    budget = {"autopilot.advisor.llm_token_budget": 100}
    assert fake_ws.run(runs=1, advisor="llm", base_overrides=budget) == 0
    session = json.loads(fake_ws.ws.session_path.read_text())
    spent = session["advisor_tokens"]
    assert spent == llm.SESSION_USAGE.tokens > 100 and len(openai_server.requests) == 1
    # the process dies; a new one (a fresh meter) resumes the same, unfinished session
    monkeypatch.setattr(llm, "SESSION_USAGE", llm.UsageMeter())
    session.update(status="stopped", target=2)
    session["signature"]["runs"] = 2
    fake_ws.ws.session_path.write_text(json.dumps(session))
    assert fake_ws.run(runs=2, advisor="llm", base_overrides=budget) == 0
    assert "resuming session" in fake_ws.output()
    assert len(openai_server.requests) == 1  # the budget was already spent: not asked again
    assert "token budget is spent" in notes(fake_ws, 1)
