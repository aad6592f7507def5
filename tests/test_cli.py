"""`autopilot validate` end to end through the real console script entry (Typer runner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autopilot.cli import app

SEEDS = Path(__file__).resolve().parents[1] / "examples" / "seeds_topology.json"
runner = CliRunner()


def test_validate_seeds_topology_passes_and_prints_the_batch():
    res = runner.invoke(app, ["validate", str(SEEDS)])
    assert res.exit_code == 0, res.output
    assert "28,672" in res.output and "✓ divisibility" in res.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--set", "vec.num_workers=24"], "use one of 1, 2, 4, 7, 8, 14, 28, 56"),
     (["--set", "train.ent_coef=-1"], "train.ent_coef=-1 is outside its range"),
     (["--set", "train.nosuchkey=1"], "train.nosuchkey is not a known key"),
     (["--set", "train.minibatch_size=65536"], "minibatch ≤ batch")],
)
def test_validate_failures_exit_1_with_one_line_reason(args, needle):
    res = runner.invoke(app, ["validate", str(SEEDS), *args])
    assert res.exit_code == 1
    assert needle in res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output


def test_validate_malformed_json_exits_1(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": {')
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 1 and "malformed JSON" in res.output and "Traceback" not in res.output


def test_validate_with_override_file(tmp_path):
    ovr = tmp_path / "o.json"
    ovr.write_text(json.dumps({"vec.num_workers": 7}))
    assert runner.invoke(app, ["validate", str(SEEDS), "--override", str(ovr)]).exit_code == 0


def test_console_script_is_installed():
    from importlib.metadata import entry_points

    assert any(ep.name == "autopilot" for ep in entry_points(group="console_scripts"))
