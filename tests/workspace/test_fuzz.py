"""Fuzz (hypothesis): random JSON in the files the loop reads — the staged proposal, the trainer's and
the loop's summaries, best.json — never crashes it: only project errors or logged recoveries."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runner_fixtures import *  # noqa: F403 (the fixtures)

from autopilot.config import flatten
from autopilot.config.load import load_profile
from autopilot.decide.sanity import sanity_reasons
from autopilot.workspace.layout import init_workspace, load_history, load_run
from autopilot.workspace.pointers import build_loop_summary, read_best, summary_in_memory
from autopilot.workspace.proposals import take_pending
from autopilot.workspace.recording import fallback_notes, loop_record

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
                           max_leaves=25)
KNOWN_KEYS = sorted(flatten(load_profile("quick").model_dump(exclude={"sweep"})))
proposal_keys = st.sampled_from(KNOWN_KEYS) | st.sampled_from(["", ".", "train", "train.", "train.nope", "env.x.y",
                                                                "sweep.train.gamma", "autopilot.trainer_command"])
proposals = json_values | st.dictionaries(proposal_keys, json_values, max_size=4) | st.dictionaries(
    st.sampled_from(KNOWN_KEYS), scalars, max_size=5)
raw_texts = st.text(max_size=200) | json_values.map(lambda v: json.dumps(v, allow_nan=True)).map(
    lambda t: t[: len(t) // 2])  # truncated JSON


@pytest.fixture(scope="module")
def ws():
    root = Path(tempfile.mkdtemp(prefix="fuzz-ws-"))
    yield init_workspace(root / "w")
    shutil.rmtree(root, ignore_errors=True)


def _check_take_pending(ws, text: str) -> None:
    base = load_profile("quick")
    ws.next_config.write_text(text)
    before = set(ws.rejected.glob("*.json"))
    warnings: list[str] = []
    cfg, used = take_pending(ws, base, sps=1e6, warn=warnings.append)
    if cfg is None:
        new = set(ws.rejected.glob("*.json")) - before
        assert len(new) == 1 and not ws.next_config.exists() and len(warnings) == 1
        entry = json.loads(new.pop().read_text())
        assert entry["reasons"] and all(isinstance(r, str) for r in entry["reasons"])
        # A rejection comes from a rule, not from a validator tripping (that is logged as "internal error").
        assert not any(r.startswith("internal error") for r in entry["reasons"]), entry["reasons"]
    else:
        assert isinstance(used, dict) and warnings == []
        assert cfg.train.batch_size != "auto"  # resolved: what a trainer can run


@FUZZ
@given(value=proposals)
def test_random_proposals_never_crash_the_loop(ws, value):
    _check_take_pending(ws, json.dumps(value, allow_nan=True))


@FUZZ
@given(text=raw_texts)
def test_random_proposal_text_never_crashes_the_loop(ws, text):
    _check_take_pending(ws, text)


VALID_SUMMARY = {
    "schema": 1, "run_id": "r", "status": "completed",
    "throughput": {"sps": 1000.0, "agent_steps": 1024, "epoch": 2, "wall_s": 1.0},
    "metrics": {"success_rate": 0.5, "mean_reward": 1.0, "episodes": 3},
    "trainer": {"approx_kl": 0.01, "clipfrac": 0.1, "entropy": 1.0, "value_loss": 0.1, "explained_var": 0.5},
    "utilisation": {"cpu_pct": 50.0}, "eval": None, "checkpoint": {"path": "checkpoints/latest.pt"},
}


def _mutations():
    paths = [("status",), ("throughput", "sps"), ("throughput", "epoch"), ("metrics", "success_rate"),
             ("metrics", "episodes"), ("metrics",), ("trainer", "entropy"), ("trainer",), ("eval",), ("checkpoint",),
             ("checkpoint", "path"), ("schema",), ("utilisation",), ("extra_key",)]
    return st.lists(st.tuples(st.sampled_from(paths), json_values), max_size=4)


def _mutate(doc: dict, edits) -> dict:
    out = json.loads(json.dumps(doc))
    for path, value in edits:
        node = out
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    return out


def _ingest(ws, trainer_text: str | None, loop_text: str | None) -> None:
    run_dir = ws.runs / "2025-01-01T000000Z"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(load_profile("quick").model_dump()))
    if trainer_text is not None:
        (run_dir / "trainer_summary.json").write_text(trainer_text)
    if loop_text is not None:
        (run_dir / "summary.json").write_text(loop_text)
    (run_dir / "metrics.jsonl").write_text((trainer_text or "") + "\n{}\n")
    warnings: list[str] = []
    history = load_history(ws, warnings.append)
    rec = history[-1]
    summary = summary_in_memory(rec, history, "success_rate")
    assert summary.score is None or math.isfinite(summary.score)
    if rec.trainer_summary is not None:
        assert summary.suspect == bool(sanity_reasons(rec.trainer_summary))
    rebuilt = build_loop_summary(rec, status="completed", objective="success_rate", previous=rec, baseline=rec)
    json.dumps(rebuilt.model_dump(mode="json"), allow_nan=False)  # what summary.json gets is valid JSON
    rec.loop_summary = rec.loop_summary or summary
    assert loop_record(ws, rec) and fallback_notes(rec, None)
    assert load_run(run_dir, warnings.append).run_id == run_dir.name


@FUZZ
@given(edits=_mutations())
def test_mutated_trainer_summaries_never_crash_ingest(ws, edits):
    _ingest(ws, json.dumps(_mutate(VALID_SUMMARY, edits), allow_nan=True), None)


@FUZZ
@given(trainer=st.none() | raw_texts | json_values.map(lambda v: json.dumps(v, allow_nan=True)),
       loop=st.none() | raw_texts | json_values.map(lambda v: json.dumps(v, allow_nan=True)))
def test_random_summary_files_never_crash_ingest(ws, trainer, loop):
    _ingest(ws, trainer, loop)


@FUZZ
@given(value=json_values | st.fixed_dictionaries({"run_id": json_values, "score": json_values,
                                                  "checkpoint": json_values}))
def test_random_best_json_is_ignored_with_a_warning(ws, value):
    ws.best_json.write_text(json.dumps(value, allow_nan=True))
    warnings: list[str] = []
    assert read_best(ws, warnings.append) is None
    assert len(warnings) <= 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(text=raw_texts | json_values.map(lambda v: json.dumps(v, allow_nan=True))
       | st.lists(st.tuples(st.sampled_from([("metrics", "success_rate"), ("status",), ("throughput", "sps"),
                                              ("metrics", "episodes"), ("checkpoint", "path")]), json_values),
                  max_size=3).map(lambda edits: json.dumps(_mutate(VALID_SUMMARY, edits), allow_nan=True)))
def test_the_whole_loop_survives_a_random_trainer_summary(fake_ws, text):
    """The fake trainer writes random text as its summary; a whole loop iteration must complete."""
    n = len(fake_ws.run_dirs())
    fake_ws.plan(default={"summary_text": text})
    assert fake_ws.run(runs=1) == 0
    dirs = fake_ws.run_dirs()
    assert len(dirs) == n + 1
    last = json.loads((dirs[-1] / "summary.json").read_text())
    assert last["status"] in ("completed", "failed", "diverged", "stalled", "interrupted", "crashed")
    assert (dirs[-1] / "notes.md").is_file() and fake_ws.labbook_sections() == n + 1
    best = fake_ws.best()
    if best is not None:  # never a suspect run
        assert json.loads((fake_ws.ws.runs / best["run_id"] / "summary.json").read_text())["suspect"] is False
