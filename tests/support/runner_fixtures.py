"""Fixtures for the runner/reliability tests: a workspace wired to the fake trainer.

`FakeWorkspace.plan(...)` says what the next trainer invocations do; `.run(...)` calls `run_loop` in
process (console captured); `.cli(...)` runs `python -m autopilot` as a real subprocess.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from autopilot.workspace.layout import Workspace, init_workspace, list_run_dirs, read_state

# Only the fixtures: test modules take them with `from runner_fixtures import *` (pytest finds fixtures
# by name in the test module; there is no conftest for them, and the ledger factories live in ledgers.py).
__all__ = ["ckpt_template", "fake_ws", "stub_analysis"]

FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")
REPO = Path(__file__).resolve().parents[2]  # tests/support/ -> the repository root


@pytest.fixture(scope="session")
def ckpt_template(tmp_path_factory) -> Path:
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "template.pt"
    torch.save({"policy": {"w": torch.zeros(2)}, "agent_steps": 0, "config": {}}, path)
    return path


def trainer_command() -> list[str]:
    return [sys.executable, str(FAKE_TRAINER), "--config", "{config}", "--run-dir", "{run_dir}", "--resume", "{resume}"]


@dataclass
class FakeWorkspace:
    ws: Workspace
    plan_path: Path
    out: io.StringIO = field(default_factory=io.StringIO)

    @property
    def root(self) -> Path:
        return self.ws.root

    def plan(self, *steps: dict[str, Any], default: dict[str, Any] | None = None) -> None:
        self.plan_path.write_text(json.dumps({"steps": list(steps), "default": default or {}}))
        self.plan_path.with_suffix(".count").unlink(missing_ok=True)

    def calls(self) -> list[dict[str, Any]]:
        path = self.plan_path.parent / "calls.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def run(self, runs: int = 1, **kw: Any) -> int:
        from autopilot.loop.runner import run_loop

        console = Console(file=self.out, width=200, force_terminal=False, color_system=None)
        kw.setdefault("mode", "quick")
        return run_loop(self.root, runs=runs, console=console, **kw)

    def output(self) -> str:
        return self.out.getvalue()

    def cli_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "autopilot", *args]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.cli_argv(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.cli_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)

    def run_dirs(self) -> list[Path]:
        return list_run_dirs(self.ws)

    def summaries(self) -> list[dict[str, Any]]:
        return [json.loads((d / "summary.json").read_text()) for d in self.run_dirs()]

    def statuses(self) -> list[str]:
        return [s["status"] for s in self.summaries()]

    def best(self) -> dict[str, Any] | None:
        return json.loads(self.ws.best_json.read_text()) if self.ws.best_json.exists() else None

    def labbook_sections(self) -> int:
        return self.ws.labbook.read_text().count("<!-- autopilot:run ")

    def wait_for(self, predicate, timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def training_pid(self) -> int | None:
        for d in self.run_dirs():
            st = read_state(d)
            if st.get("phase") == "training" and isinstance(st.get("pid"), int):
                return st["pid"]
        return None

    def assert_complete(self, n: int) -> None:
        """The ledger invariants every fault test ends with."""
        dirs = self.run_dirs()
        assert len(dirs) == n, [d.name for d in dirs]
        for d in dirs:
            assert read_state(d).get("phase") == "done", d.name
            for f in ("config.json", "override.json", "summary.json", "notes.md", "train.log"):
                assert (d / f).is_file(), f"{d.name}/{f} missing"
        assert self.labbook_sections() == n
        assert len({d.name for d in dirs}) == n
        assert not list(self.ws.runs.glob("*.staging"))


def profile_with(ws: Workspace, **autopilot: Any) -> None:
    """Point the workspace's quick profile at the fake trainer, with tiny time limits."""
    path = ws.profile_path("quick")
    prof = json.loads(path.read_text())
    prof["autopilot"].update({"trainer_command": trainer_command(), "stall_seconds": 5.0, "max_run_seconds": 20.0,
                              "max_retries": 1, **autopilot})
    path.write_text(json.dumps(prof))


@pytest.fixture
def fake_ws(tmp_path, ckpt_template, monkeypatch) -> FakeWorkspace:
    ws = init_workspace(tmp_path / "ws")
    profile_with(ws)
    plan_path = tmp_path / "plan.json"
    monkeypatch.setenv("FAKE_PLAN", str(plan_path))
    monkeypatch.setenv("FAKE_CKPT", str(ckpt_template))
    fw = FakeWorkspace(ws=ws, plan_path=plan_path)
    fw.plan()
    return fw


@pytest.fixture
def stub_analysis(monkeypatch):
    """A trivial stand-in for the analysis where a test is about reliability, not decisions: it always
    proposes continuing from latest with the seed bumped (a valid, distinguishable change)."""
    from autopilot.decide import analysis
    from autopilot.decide.records import Finding, GuardVerdict, Proposal

    calls: list[str] = []

    def fake(history, **kw):
        rec = history[-1]
        calls.append(rec.run_id)
        seed = rec.config.train.seed if rec.config else 1
        prop = Proposal(advisor="stub", changes={"train.seed": seed + 1}, resume_mode="continue",
                        resume_from="best" if rec.status == "diverged" else "latest", headline="stub")
        findings = [Finding(code=rec.status if rec.status != "completed" else "ok", severity="info")]
        return analysis.Decision(findings=findings, trends=[], noise_band=None, proposal=prop,
                                 verdict=GuardVerdict(accepted=True, proposal=prop), advisor_used="stub",
                                 notes_md=f"Run {rec.run_id} — stub note ({rec.status})",
                                 labbook_md=f"## Run {rec.run_id} — {rec.status}")

    monkeypatch.setattr(analysis, "analyse_and_propose", fake)
    return calls

