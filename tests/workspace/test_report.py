"""`autopilot report`: the HTML page and its PNGs, from a hand-written ledger (no training)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

from autopilot.cli import app
from autopilot.config import load_profile
from autopilot.errors import WorkspaceError
from autopilot.workspace.layout import init_workspace
from autopilot.workspace.report import PLOT_FILES, build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUNS = {  # run id -> (config overrides, final success_rate, mean_reward, what the folder holds)
    "2025-09-20T100000Z": ({}, 0.20, 80.0, "loop"),
    "2025-09-20T110000Z": ({"train.learning_rate": 0.01}, 0.42, 140.0, "loop"),
    "2025-09-20T120000Z": ({"train.learning_rate": 0.01, "train.ent_coef": 0.05}, 9.38, 150.0, "loop"),  # suspect
    "2025-09-20T130000Z": ({"train.learning_rate": 0.001}, None, None, "crashed"),
    "2025-09-20T140000Z": ({"train.learning_rate": 0.001, "train.gamma": 0.95}, 0.31, 120.0, "external"),
}
SUSPECT, CRASHED, EXTERNAL, BEST = (list(RUNS)[i] for i in (2, 3, 4, 1))


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def _trainer_summary(run_id: str, success: float, reward: float) -> dict[str, Any]:
    return {"schema": 1, "run_id": run_id, "status": "completed",
            "throughput": {"sps": 50_000.0, "agent_steps": 200_000, "epoch": 48, "wall_s": 4.0},
            "metrics": {"success_rate": success, "mean_reward": reward, "collision_rate": 0.01, "oob_rate": 0.1,
                        "episode_length": 150.0, "episodes": 400},
            "trainer": {"approx_kl": 0.01, "clipfrac": 0.1, "entropy": 2.0, "value_loss": 0.05,
                        "policy_loss": -0.01, "explained_var": 0.8},
            "utilisation": {"cpu_pct": 100.0, "gpu_pct": None, "dram_pct": 20.0, "vram_pct": None},
            "checkpoint": {"path": f"runs/{run_id}/checkpoints/latest.pt", "resumed_from": None}}


def _curve(success: float, reward: float) -> str:
    rows = []
    for epoch in range(1, 13):
        f = epoch / 12
        rows.append({"epoch": epoch, "agent_steps": epoch * 16_384, "success_rate": success * f,
                     "mean_reward": reward * f, "approx_kl": 0.02 * (1 - f / 2) * (1 + success / 20),
                     "clipfrac": 0.15 * (1 - f / 3) * (1 + success / 20), "entropy": 3.0 - f * (1 + success),
                     "episodes": 30})
    rows[3]["entropy"] = math.nan  # a NaN (json.dumps writes the NaN literal, which the reader accepts)
    rows[4]["success_rate"] = None
    return "".join(json.dumps(r) + "\n" for r in rows) + '{"epoch": 13, "agent_st'  # torn last line


def make_ledger(root: Path) -> Path:
    """Five runs: three written by the loop (one suspect), one crashed, one from an external trainer."""
    ws = init_workspace(root)
    previous = None
    for run_id, (overrides, success, reward, kind) in RUNS.items():
        run_dir = ws.runs / run_id
        config = load_profile("quick", overrides).model_dump()
        _write(run_dir / "config.json", config)
        if kind == "crashed":
            _write(run_dir / "train.log", "Traceback (most recent call last): ...\n")
            previous = config
            continue
        _write(run_dir / "trainer_summary.json", _trainer_summary(run_id, success, reward))
        if kind == "loop":
            _write(run_dir / "metrics.jsonl", _curve(success, reward))
            suspect = success > 1
            changes = [] if previous is None else [f"{k}: {previous['train'][k.split('.')[1]]} -> {v}"
                                                   for k, v in overrides.items()]
            _write(run_dir / "summary.json", {
                "run_id": run_id, "status": "completed", "objective": "success_rate", "score": success,
                "suspect": suspect, "changes": changes, "findings": ["plateau"] if suspect else ["updates_too_small"],
                "suspect_reasons": [f"metrics.success_rate={success} is outside [0, 1] (a rate)"] if suspect else []})
            _write(run_dir / "notes.md", f"Run {run_id} — headline for {run_id[-7:]}\n\n## Config\n- ...\n")
        previous = config
    _write(ws.runs / BEST / "checkpoints" / "best.pt", "x")
    _write(ws.best_json, {"run_id": BEST, "score": 0.42, "checkpoint": f"runs/{BEST}/checkpoints/best.pt"})
    return ws.root


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> Path:
    return make_ledger(tmp_path_factory.mktemp("report") / "w")


def _pngs_referenced(page: str) -> set[str]:
    return set(re.findall(r'<img src="([^"]+\.png)"', page))


def _row(page: str, run_id: str) -> str:
    return next(r for r in page.split("<tbody>")[1].split("<tr") if run_id in r)


def test_report_has_every_plot_run_and_note(ledger, tmp_path):
    index = build_report(ledger, tmp_path / "out")
    assert index == tmp_path / "out" / "index.html"
    page = index.read_text("utf-8")
    written = {p.name for p in index.parent.glob("*.png")}
    assert written == set(PLOT_FILES) == _pngs_referenced(page)
    for name in written:
        data = (index.parent / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    assert not list(index.parent.glob(".*.tmp"))  # atomic writes leave no temp files
    for run_id in RUNS:
        assert run_id in page
    assert "suspect" in _row(page, SUSPECT) and "9.38" in _row(page, SUSPECT)
    assert "outside [0, 1]" in _row(page, SUSPECT)
    assert "suspect" not in _row(page, BEST) and "★ best" in _row(page, BEST)
    assert "crashed" in _row(page, CRASHED) and "no notes.md" in _row(page, CRASHED)
    assert "0.31" in _row(page, EXTERNAL) and "gamma: 0.99 -&gt; 0.95" in _row(page, EXTERNAL)
    for run_id, (*_, kind) in RUNS.items():
        if kind != "loop":
            continue
        href = re.search(r'<a href="([^"]+)">notes.md</a>', _row(page, run_id)).group(1)
        assert not Path(href).is_absolute()  # relative: the report folder and the workspace move together
        assert (index.parent / unquote(href)).resolve() == (ledger / "runs" / run_id / "notes.md").resolve()
        assert f"Run {run_id} — headline for {run_id[-7:]}" in _row(page, run_id)
    assert "could not be drawn" not in page and "Traceback" not in page
    assert "<script" not in page and "http" not in page  # self-contained: no JS, no network


def test_default_out_dir_and_cli(ledger):
    res = CliRunner().invoke(app, ["report", "--workdir", str(ledger)])
    assert res.exit_code == 0, res.output
    index = ledger / "report" / "index.html"
    assert res.output.strip().replace("\n", "") == str(index)
    page = index.read_text("utf-8")
    assert f'href="../runs/{BEST}/notes.md"' in page
    assert _pngs_referenced(page) == {p.name for p in index.parent.glob("*.png")}


def test_a_plot_without_data_is_dropped_on_rerender(tmp_path):
    root = make_ledger(tmp_path / "w")
    build_report(root)
    assert (root / "report" / "curves.png").exists()
    for curve in (root / "runs").glob("*/metrics.jsonl"):
        curve.unlink()
    page = build_report(root).read_text("utf-8")
    assert _pngs_referenced(page) == {p.name for p in (root / "report").glob("*.png")} == {"scores.png", "knobs.png"}


def test_an_empty_workspace_says_there_are_no_runs(tmp_path):
    root = init_workspace(tmp_path / "w").root
    index = build_report(root)
    page = index.read_text("utf-8")
    assert "No runs yet" in page and "<table" not in page
    assert not list(index.parent.glob("*.png"))


def test_a_missing_workspace_is_a_one_line_error(tmp_path):
    with pytest.raises(WorkspaceError, match="not an autopilot workspace") as err:
        build_report(tmp_path / "nowhere")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "nowhere").exists()
    res = CliRunner().invoke(app, ["report", "--workdir", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and "error:" in res.output and "Traceback" not in res.output


def test_odd_ledgers_render_without_a_traceback(tmp_path):
    ws = init_workspace(tmp_path / "w")
    runs = [f"2025-09-22T1{i}0000Z" for i in range(5)]
    _write(ws.runs / runs[0] / ".state", {"phase": "training"})  # a run still in flight: nothing else yet
    _write(ws.runs / runs[1] / "config.json", "{not json")
    _write(ws.runs / runs[1] / "trainer_summary.json", _trainer_summary(runs[1], math.nan, 5.0))  # NaN objective
    _write(ws.runs / runs[2] / "config.json", load_profile("quick").model_dump())
    _write(ws.runs / runs[2] / "trainer_summary.json", _trainer_summary(runs[2], 1.26e3, -3.0))  # suspect only
    _write(ws.runs / runs[2] / "metrics.jsonl", '{"agent_steps": "x", "success_rate": true, "entropy": 1}\n[1, 2]\n')
    _write(ws.runs / runs[3] / "summary.json", '{"run_id": "x", "status": "completed", "score": NaN}')
    _write(ws.runs / runs[4] / "config.json", load_profile("quick", {"train.gamma": 0.9}).model_dump())
    _write(ws.runs / runs[4] / "notes.md", "")
    _write(ws.best_json, {"run_id": "../escape", "score": 1, "checkpoint": "nowhere.pt"})
    page = build_report(ws.root).read_text("utf-8")
    for run_id in runs:
        assert run_id in page
    assert "could not be drawn" not in page
    assert "suspect" in _row(page, runs[2]) and "best: none yet" in page
    assert "training…" in _row(page, runs[0])  # in flight, not "crashed"
    assert _pngs_referenced(page) == {p.name for p in (ws.root / "report").glob("*.png")}
