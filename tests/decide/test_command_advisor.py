"""`--advisor command`: a real child process reads the digest (stdin or a file) and prints a Proposal."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ledgers import ent_coef_ledger

from autopilot.decide.analysis import analyse_and_propose

AGENT = r'''
import json, os, sys
mode = sys.argv[1]
digest = open(sys.argv[2]).read() if len(sys.argv) > 2 and os.path.isfile(sys.argv[2]) else sys.stdin.read()
if not digest.startswith("# autopilot digest"):
    sys.exit("no digest received")
if mode == "good":
    # read the current ent_coef from the digest, as an agent would, and halve it
    line = next(l for l in digest.splitlines() if l.startswith("- train.ent_coef: ") and "; now " in l)
    now = float(line.split("now ")[1].split(";")[0])
    print(json.dumps({"changes": {"train.ent_coef": round(now / 2, 4)}, "headline": "halve ent_coef",
                      "rationale": ["the policy is too diffuse"], "resume_mode": "continue", "resume_from": "latest"}))
elif mode == "garbage":
    print("thinking... done!")
elif mode == "fail":
    sys.stderr.write("agent crashed: quota exceeded\n"); sys.exit(3)
elif mode == "slow":
    import time; time.sleep(5)
'''


@pytest.fixture
def agent(tmp_path) -> Path:
    path = tmp_path / "agent.py"
    path.write_text(AGENT)
    return path


def with_command(argv, timeout_s=10.0):
    hist = ent_coef_ledger()
    hist[-1].config.autopilot.advisor.command = argv
    hist[-1].config.autopilot.advisor.timeout_s = timeout_s
    return hist


@pytest.mark.parametrize("via_file", [False, True])
def test_command_reads_the_digest_and_its_proposal_is_applied(agent, via_file):
    argv = [sys.executable, str(agent), "good"] + (["{digest}"] if via_file else [])
    d = analyse_and_propose(with_command(argv), advisor="command")
    assert d.advisor_used == "command" and not d.rejected
    assert d.proposal.changes == {"train.ent_coef": 0.03}
    assert "command python" in d.proposal.headline or "command " in d.proposal.headline
    assert "theory (quoted, not checked): “the policy is too diffuse”" in d.notes_md


@pytest.mark.parametrize("mode, reason", [
    ("garbage", "the answer is not JSON"),
    ("fail", "exited with code 3: agent crashed: quota exceeded"),
])
def test_command_failure_falls_back_with_the_reason(agent, mode, reason):
    d = analyse_and_propose(with_command([sys.executable, str(agent), mode]), advisor="command")
    assert d.advisor_used == "rules"
    assert reason in d.rejected[0][1].reasons[0]
    assert "- command: no proposal; advisor command failed:" in d.notes_md
    assert "- Refused: command (" in d.labbook_md


def test_command_timeout_and_missing_program(agent):
    d = analyse_and_propose(with_command([sys.executable, str(agent), "slow"], timeout_s=0.5), advisor="command")
    assert d.advisor_used == "rules" and "did not finish within 0.5s" in d.rejected[0][1].reasons[0]
    d = analyse_and_propose(with_command(["no-such-agent-binary", "x"]), advisor="command")
    assert "command 'no-such-agent-binary' not found" in d.rejected[0][1].reasons[0]


def test_no_command_configured_names_both_ways(monkeypatch):
    monkeypatch.delenv("AUTOPILOT_ADVISOR_COMMAND", raising=False)
    d = analyse_and_propose(ent_coef_ledger(), advisor="command")
    assert "set autopilot.advisor.command" in d.rejected[0][1].reasons[0]
    assert "$AUTOPILOT_ADVISOR_COMMAND" in d.rejected[0][1].reasons[0]


def test_command_from_the_environment_is_split_without_a_shell(agent, monkeypatch, tmp_path):
    marker = tmp_path / "should-not-exist"
    monkeypatch.setenv("AUTOPILOT_ADVISOR_COMMAND", f"{sys.executable} {agent} good ; touch {marker}")
    d = analyse_and_propose(ent_coef_ledger(), advisor="command")
    assert d.advisor_used == "command" and not marker.exists()
