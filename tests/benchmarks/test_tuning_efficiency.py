"""The tuning-efficiency benchmark: its starts are valid configs, its statistics are right, and (slow) one
real session runs end to end and lands in the JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from autopilot.config import config_from_dict, ensure_valid

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "tuning_efficiency.py"


def _load():
    spec = importlib.util.spec_from_file_location("tuning_efficiency", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _load()


def test_every_start_is_a_valid_config_that_differs_from_the_decent_one():
    assert len(bench.ENVS) >= 2
    objectives = set()
    for env, data in bench.ENVS.items():
        assert len(data["starts"]) >= 4 and "decent" in data["starts"], env
        decent = ensure_valid(config_from_dict(bench.start_config(env, "decent", 1)))
        objectives.add(decent.autopilot.objective)
        for start in data["starts"]:
            cfg = ensure_valid(config_from_dict(bench.start_config(env, start, 7)))
            assert cfg.train.seed == 7
            if start != "decent":
                assert cfg.train.model_dump() != decent.train.model_dump() | {"seed": 7}, (env, start)
    assert objectives == {"success_rate", "mean_reward"}


def _session(env, start, advisor, seed, scores, steps=100):
    best, runs = None, []
    for s in scores:
        best = s if best is None else (best if s is None else max(best, s))
        runs.append({"score": s, "best_so_far": best, "agent_steps": steps})
    return {"env": env, "start": start, "seed": seed, "advisor": advisor, "runs": runs, "final_best": best,
            "agent_steps": steps * len(scores)}


def test_summary_statistics_per_start_and_over_starts():
    sessions = [_session("drone", "timid", "rules", 1, [0.1, 0.5]), _session("drone", "timid", "rules", 2, [0.3, 0.2]),
                _session("drone", "timid", "constant", 1, [0.0, 0.1]),
                _session("drone", "timid", "constant", 2, [None, None]),  # no trusted score: missing, not 0
                _session("drone", "decent", "rules", 1, [0.6, 0.9], steps=300),
                _session("drone", "decent", "constant", 1, [0.7, 0.8])]
    summary = bench.summarise(sessions)
    timid = summary["drone"]["starts"]["timid"]
    assert timid["rules"]["n"] == 2 and timid["rules"]["mean"] == pytest.approx(0.4)
    assert timid["rules"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert (timid["rules"]["min"], timid["rules"]["max"]) == (0.3, 0.5)
    assert timid["rules"]["mean_best_so_far"] == pytest.approx([0.2, 0.4])
    assert timid["constant"]["n"] == 1 and timid["constant"]["mean"] == 0.1 and timid["constant"]["std"] == 0.0
    assert summary["drone"]["starts"]["decent"]["rules"]["mean_agent_steps"] == 600
    assert summary["drone"]["average"]["rules"] == pytest.approx((0.4 + 0.9) / 2)
    assert summary["drone"]["average"]["constant"] == pytest.approx((0.1 + 0.8) / 2)
    tables = bench.tables(summary, ["rules", "constant"])
    assert len(tables) == 1 and tables[0].row_count == 3  # two starts + the average


def test_grid_names_a_bad_start():
    with pytest.raises(SystemExit, match="--starts nope: not a start of drone; use one of decent"):
        bench.grid(["drone"], ["nope"], [1], ["rules"], 1, Path("/tmp"))


@pytest.mark.slow
def test_one_real_session_end_to_end(tmp_path):
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, str(BENCH), "--envs", "drone", "--starts", "decent", "--advisors", "constant",
                    "--runs", "2", "--seeds", "1", "--out", str(out), "--keep", str(tmp_path / "ws")],
                   check=True, timeout=600, capture_output=True, text=True)
    result = json.loads(out.read_text())
    (session,) = result["sessions"]
    assert session["exit_code"] == 0 and len(session["runs"]) == 2
    assert session["runs"][1]["resume"] == "continue"  # constant continues from latest
    assert session["agent_steps"] == sum(r["agent_steps"] for r in session["runs"]) > 0
    cell = result["summary"]["drone"]["starts"]["decent"]["constant"]
    assert cell["n"] == 1 and cell["mean"] == session["final_best"]


def test_verdict_reads_the_acceptance_per_start():
    cell = lambda mean, std: {"mean": mean, "std": std, "min": mean - std, "max": mean + std}  # noqa: E731
    assert bench.verdict({"rules": cell(0.9, 0.1), "optuna": cell(0.8, 0.05), "random": cell(0.9, 0.0)}) == "best"
    assert bench.verdict({"rules": cell(430.0, 5.0), "optuna": cell(490.0, 70.0)}) == "within optuna's spread"
    assert bench.verdict({"rules": cell(430.0, 5.0), "optuna": cell(490.0, 14.0)}) == "below optuna"
    table = bench.markdown_tables(bench.summarise([
        {"env": "cartpole", "start": "decent", "seed": 1, "advisor": a, "final_best": v, "agent_steps": 10,
         "runs": [{"best_so_far": v}]} for a, v in (("rules", 200.0), ("constant", 150.0))]), ["rules", "constant"])
    assert "| decent | **200.0 ± 0.0 [200.0–200.0] · 0.00** | 150.0 ± 0.0 [150.0–150.0] · 0.00 | best |" in table
