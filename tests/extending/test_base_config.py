"""`autopilot run --config` / `init --config`: the user's own base config, for any registered env.

The Gymnasium sessions run the real loop with the built-in trainer as a child process (2 runs each).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from autopilot.cli import app
from autopilot.errors import ConfigError
from autopilot.loop.runner import run_loop
from autopilot.workspace.layout import Workspace, list_run_dirs, read_state
from autopilot.workspace.report import build_report

CARTPOLE_JSON = {
    "env_name": "gym:CartPole-v1", "env": {"num_envs": 4}, "vec": {"num_envs": 1, "num_workers": 1},
    "train": {"total_timesteps": 1024, "bptt_horizon": 32, "update_epochs": 2, "learning_rate": 0.001,
              "gamma": 0.98, "ent_coef": 0.0, "checkpoint_interval": 1000},
    "policy": {"hidden_size": 16, "num_layers": 1},
    "autopilot": {"objective": "mean_reward", "eval_episodes": 0, "metrics_window": 2, "max_run_seconds": 120},
}

# `backend = builtin`: a .ini without it selects the pufferlib backend (PufferLib's own trainer and default.ini).
CARTPOLE_INI = """
[base]
backend = builtin
package = gymnasium
env_name = gym:CartPole-v1

[env]
num_envs = 4

[vec]
num_envs = 1
num_workers = 1

[train]
total_timesteps = 1_024
bptt_horizon = 32
update_epochs = 2
learning_rate = 0.001
ent_coef = 0.0
checkpoint_interval = 1000

[policy]
hidden_size = 16
num_layers = 1

[autopilot]
objective = mean_reward
eval_episodes = 0
metrics_window = 2
max_run_seconds = 120

[sweep.train.learning_rate]
distribution = log_normal
min = 0.0001
max = 0.01
"""


def _write_config(tmp_path: Path, kind: str) -> Path:
    if kind == "json":
        path = tmp_path / "cartpole.json"
        path.write_text(json.dumps(CARTPOLE_JSON))
    else:
        path = tmp_path / "cartpole.ini"
        path.write_text(CARTPOLE_INI)
    return path


def _run(workdir: Path, **kw) -> tuple[int, str]:
    out = io.StringIO()
    code = run_loop(workdir, console=Console(file=out, width=200), **kw)
    return code, out.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["json", "ini"])
def test_a_gymnasium_base_config_runs_the_whole_loop_with_notes_and_a_report(tmp_path, kind):
    code, out = _run(tmp_path / "ws", runs=2, config=_write_config(tmp_path, kind))
    assert code == 0, out[-3000:]
    ws = Workspace(tmp_path / "ws")
    dirs = list_run_dirs(ws)
    assert len(dirs) == 2
    for d in dirs:
        st = read_state(d)
        assert st["phase"] == "done" and st["mode"] == "config" and st["base_digest"]
        assert st["argv"][1:4] == ["-m", "autopilot", "train"]  # the trainer ran as a child process
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["objective"] == "mean_reward"
        assert summary["score"] is not None and summary["score"] > 0  # CartPole pays +1 per step
        notes = (d / "notes.md").read_text()
        assert "gym:CartPole-v1" in notes and "mean_reward (objective)" in notes
    assert json.loads((dirs[0] / "config.json").read_text())["env_name"] == "gym:CartPole-v1"
    assert read_state(dirs[1])["base"] == f"run {dirs[0].name}"  # the second run builds on the first
    labbook = ws.labbook.read_text()
    assert all(f"<!-- autopilot:run {d.name} -->" in labbook for d in dirs)
    page = build_report(ws.root, None).read_text()
    assert all(d.name in page for d in dirs) and "objective <b>mean_reward</b>" in page
    if kind == "ini":  # the .ini's sweep block reached the search space the base carries
        base = json.loads((ws.configs / "base.json").read_text())
        assert base["sweep"]["train.learning_rate"]["max"] == 0.01


def test_init_config_seeds_the_base_and_run_uses_it_by_default(tmp_path):
    config = _write_config(tmp_path, "json")
    res = CliRunner().invoke(app, ["init", "--workdir", str(tmp_path / "ws"), "--config", str(config)])
    assert res.exit_code == 0, res.output
    ws = Workspace(tmp_path / "ws")
    base = json.loads((ws.configs / "base.json").read_text())
    assert base["env_name"] == "gym:CartPole-v1" and base["autopilot"]["objective"] == "mean_reward"
    assert ws.default_mode() == "config"
    from autopilot.workspace.ledger import read_ledger
    from autopilot.workspace.proposals import current_base

    cfg, source = current_base(ws, ws.default_mode(), read_ledger(ws).runs, {"train.ent_coef": 0.01})
    assert source == "configs/base.json" and cfg.env_name == "gym:CartPole-v1" and cfg.train.ent_coef == 0.01


def test_a_changed_base_file_starts_a_new_session_and_a_fresh_base(tmp_path, monkeypatch):
    from autopilot.loop import runner
    from autopilot.workspace import proposals

    config = _write_config(tmp_path, "json")
    seen: list[dict] = []

    def stop_before_training(loop, *a, **kw):  # what the session would start from, without training
        seen.append({"signature": loop.session.signature, "digest": proposals.profile_digest(loop.ws, loop.mode)})
        loop.stop.request(2)
        return None

    monkeypatch.setattr(runner, "_prepare", stop_before_training)
    _run(tmp_path / "ws", runs=1, config=config)
    changed = dict(CARTPOLE_JSON, train={**CARTPOLE_JSON["train"], "learning_rate": 0.002})
    config.write_text(json.dumps(changed))
    _run(tmp_path / "ws", runs=1, config=config)
    assert seen[0]["signature"]["mode"] == "config" and seen[0]["signature"]["base"] == seen[0]["digest"]
    assert seen[1]["signature"]["base"] != seen[0]["signature"]["base"]  # the signature includes the base
    ws = Workspace(tmp_path / "ws")
    assert json.loads((ws.configs / "base.json").read_text())["train"]["learning_rate"] == 0.002


@pytest.mark.parametrize(
    ("kw", "needle"),
    [({"mode": "full", "config": "x.json"}, "--config x.json and --mode full both choose the base config"),
     ({"mode": "tiny"}, "--mode 'tiny' is not a base; use quick, full or config"),
     ({"mode": "config"}, "configs/base.json does not exist; run `autopilot init --config PATH`")],
)
def test_base_choice_errors_name_the_rule_and_the_alternative(tmp_path, kw, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        _run(tmp_path / "ws", runs=1, **kw)


def test_a_base_for_another_env_is_refused_with_the_valid_env_names(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps(dict(CARTPOLE_JSON, env_name="no_such_env")))
    with pytest.raises(ConfigError, match="env_name='no_such_env' is not a registered environment; use one of"):
        _run(tmp_path / "ws", runs=1, config=config)
    assert not (tmp_path / "ws").exists()  # refused before anything was written


def test_a_busy_workspace_keeps_its_base_file(tmp_path):
    from autopilot.errors import WorkspaceError
    from autopilot.workspace.layout import WorkspaceLock, init_workspace

    ws = init_workspace(tmp_path / "ws", base=dict(CARTPOLE_JSON))
    before = (ws.configs / "base.json").read_text()
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(CARTPOLE_JSON, train={**CARTPOLE_JSON["train"], "learning_rate": 0.003})))
    with WorkspaceLock(ws, command="another session"), pytest.raises(WorkspaceError, match="is in use by pid"):
        _run(ws.root, runs=1, config=other)
    assert (ws.configs / "base.json").read_text() == before  # the running session's base did not change
