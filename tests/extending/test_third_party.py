"""A third-party env and advisor reach the loop and the trainer child: through entry points of a
pip-installed package, and as a user's own module named in `autopilot.plugins`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console
from tiny_plugin import ADVISOR_MODULE, CONFIG, ENV_MODULE

from autopilot.workspace.layout import Workspace, list_run_dirs, read_state

PYPROJECT = """
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "autopilot-line-reach"
version = "0.1"

[project.entry-points."autopilot.envs"]
line_reach = "line_reach_ext.env:SPEC"

[project.entry-points."autopilot.advisors"]
its_advisor = "line_reach_ext.advisor:HalfLearningRate"

[tool.setuptools]
packages = ["line_reach_ext"]
"""


def _autopilot(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autopilot", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


def _assert_trained_in_children(ws: Workspace, runs: int) -> list[Path]:
    dirs = list_run_dirs(ws)
    assert len(dirs) == runs
    for d in dirs:
        st = read_state(d)
        assert st["phase"] == "done"
        assert st["argv"][1:4] == ["-m", "autopilot", "train"]  # the built-in trainer, as a child process
        assert st["pid"] != os.getpid() and "=== autopilot: attempt 1:" in (d / "train.log").read_text()
        assert (d / "trainer_summary.json").exists()  # written by the child
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["score"] is not None, summary
        assert (d / "notes.md").read_text().strip()
    return dirs


@pytest.mark.slow  # about 25 s alone: pip, the loop and two trainer children, each a fresh Python
def test_an_entry_point_package_registers_an_env_and_an_advisor_for_loop_and_child(tmp_path):
    pkg = tmp_path / "src_pkg"
    (pkg / "line_reach_ext").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "line_reach_ext" / "__init__.py").write_text("")
    (pkg / "line_reach_ext" / "env.py").write_text(textwrap.dedent(ENV_MODULE))
    (pkg / "line_reach_ext" / "advisor.py").write_text(textwrap.dedent(ADVISOR_MODULE))
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-build-isolation",
                          "--no-deps", "--target", str(site), str(pkg)], capture_output=True, text=True, timeout=240)
    assert pip.returncode == 0, pip.stderr
    config = tmp_path / "its.json"
    config.write_text(json.dumps(CONFIG))
    args = ["run", "--config", str(config), "--advisor", "its_advisor", "--runs", "2", "--workdir", "ws"]

    # Not installed: the env's name is unknown, and the error lists what is registered.
    missing = _autopilot(args, cwd=tmp_path)
    assert missing.returncode == 1
    assert "env_name='line_reach' is not a registered environment; use one of drone_delivery" in missing.stderr

    installed = dict(os.environ, PYTHONPATH=str(site))  # what `pip install` into the environment gives
    done = _autopilot(args, cwd=tmp_path, env=installed)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ws = Workspace(tmp_path / "ws")
    first, second = _assert_trained_in_children(ws, 2)
    assert json.loads((ws.configs / "base.json").read_text())["env_name"] == "line_reach"
    lr = [json.loads((d / "config.json").read_text())["train"]["learning_rate"] for d in (first, second)]
    assert lr[0] == CONFIG["train"]["learning_rate"] and lr[1] == pytest.approx(0.8 * lr[0])  # its advisor's move
    assert "proposal (its_advisor)" in done.stdout


def test_a_users_own_module_named_in_the_config_reaches_the_trainer_child(tmp_path, monkeypatch):
    from autopilot.loop.runner import run_loop

    (tmp_path / "my_line_env.py").write_text(textwrap.dedent(ENV_MODULE) + textwrap.dedent("""
        from autopilot.envs.registry import register_env
        register_env(SPEC)
    """))
    cfg = json.loads(json.dumps(CONFIG))
    cfg["autopilot"]["plugins"] = ["my_line_env"]
    (tmp_path / "mine.json").write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)  # the module lies beside the config, in the folder the user works in
    monkeypatch.delenv("PYTHONPATH", raising=False)
    out = io.StringIO()
    code = run_loop(tmp_path / "ws", runs=1, config=tmp_path / "mine.json", console=Console(file=out, width=200))
    assert code == 0, out.getvalue()[-3000:]
    _assert_trained_in_children(Workspace(tmp_path / "ws"), 1)
