"""The `optuna` advisor: Optuna's samplers over the whitelisted space, warm-started from the ledger,
the study persisted in the workspace (SQLite)."""

import importlib.util
import math

import optuna
import pytest
from ledgers import make_record, rid
from optuna.trial import TrialState
from runner_fixtures import *  # noqa: F403  (fake_ws and its fixtures)
from test_advisors import accepted, context

from autopilot.decide.advisors import available_advisors, get_advisor
from autopilot.decide.advisors.optuna_advisor import STORAGE_FILE, OptunaAdvisor
from autopilot.decide.advisors.optuna_space import build_search_map
from autopilot.errors import ConfigError
from autopilot.space import spec


def ledger():
    return [make_record(rid(0), {"train.seed": 1}, metrics={"success_rate": 0.2}),
            make_record(rid(1), {"train.seed": 2, "train.ent_coef": 0.05}, metrics={"success_rate": 0.4}),
            make_record(rid(2), {"train.seed": 3}, status="diverged", metrics={"success_rate": 0.0}),
            make_record(rid(3), {"train.seed": 4}, metrics={"success_rate": 1.7})]  # a glitched rate: suspect


def load(ctx):
    smap = build_search_map(ctx.space)
    return optuna.load_study(study_name=f"autopilot-{ctx.objective}-{smap.signature()}",
                             storage=f"sqlite:///{ctx.state_dir}/{STORAGE_FILE}")


def test_registered_with_selectable_samplers():
    names = set(available_advisors())
    assert {"optuna", "optuna-random", "optuna-qmc", "optuna-cmaes"} <= names
    assert get_advisor("optuna").sampler == "tpe" and get_advisor("optuna-qmc").name == "optuna-qmc"
    with pytest.raises(ConfigError, match="sampler='grid' .* one of tpe, random, qmc, cmaes"):
        OptunaAdvisor(sampler="grid")


def test_each_scale_maps_to_a_distribution_on_that_scale():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = {s.key: s for s in [spec("a.lr", "log", 1e-5, 1e-1), spec("a.gamma", "linear", 0.8, 0.999),
                                spec("a.epochs", "int", 1, 32), spec("a.width", "pow2", 8, 1024),
                                spec("a.opt", "choice", choices=("adam", "adamw")), spec("a.anneal", "bool"),
                                spec("a.frozen", "linear", 0, 1, tunable=False)]}
    smap = build_search_map(space)
    assert set(smap.dists) == {"a.lr", "a.gamma", "a.epochs", "a.width", "a.opt", "a.anneal"}
    # real-valued knobs are searched on their own scale's coordinate: uniform there is uniform in log(lr)
    assert smap.dists["a.lr"] == FloatDistribution(0.0, 1.0) and smap.dists["a.gamma"] == FloatDistribution(0.0, 1.0)
    assert smap.decode({"a.lr": 0.5}) == {"a.lr": 0.001} and smap.decode({"a.gamma": 1.0}) == {"a.gamma": 0.999}
    assert smap.dists["a.epochs"] == IntDistribution(1, 32)
    assert smap.dists["a.width"] == IntDistribution(3, 10)  # the exponent: 2**3 .. 2**10
    assert smap.dists["a.opt"] == CategoricalDistribution(("adam", "adamw"))
    assert smap.decode({"a.width": 6, "a.epochs": 4, "a.opt": "adamw"}) == {"a.width": 64, "a.epochs": 4,
                                                                            "a.opt": "adamw"}
    assert smap.encode_value("a.width", 256) == (8, "")
    value, note = smap.encode_value("a.lr", 0.5)
    assert value == 1.0 and "a.lr=0.5 is outside the space [1e-05, 0.1] (log scale): told as 0.1" in note
    assert smap.encode_value("a.gamma", float("nan"))[0] is None
    assert smap.encode_value("a.opt", "sgd") == (None, "a.opt='sgd' is not one of ['adam', 'adamw']: left out of the trial")


def test_trusted_runs_are_told_as_values_and_broken_or_suspect_ones_as_failures(tmp_path):
    ctx = context(ledger()).model_copy(update={"state_dir": str(tmp_path)})
    p = get_advisor("optuna").propose(ctx)
    study = load(ctx)
    by_run = {rid(i): study.user_attrs[f"run:{rid(i)}"] for i in range(4)}
    trials = {t.number: t for t in study.trials}
    assert [trials[by_run[rid(i)]].state for i in range(4)] == [TrialState.COMPLETE, TrialState.COMPLETE,
                                                               TrialState.FAIL, TrialState.FAIL]
    assert trials[by_run[rid(0)]].value == 0.2 and trials[by_run[rid(1)]].value == 0.4
    assert build_search_map(ctx.space).decode(trials[by_run[rid(1)]].params)["train.ent_coef"] == 0.05
    assert trials[by_run[rid(3)]].user_attrs["outcome"] == "suspect"
    assert any("told the study 2 trusted run(s) and 2 failed one(s)" in r for r in p.rationale)
    # The ask is the study's one running trial; the proposal warm-starts from the trusted best.
    assert [t.state for t in study.trials].count(TrialState.RUNNING) == 1
    assert (p.resume_mode, p.resume_from) == ("continue", "best")
    assert p.trust_region_override.startswith("model-based sample")
    accepted(ctx, p)


def test_the_run_that_used_an_ask_completes_that_trial_and_nothing_is_told_twice(tmp_path):
    hist = ledger()[:2]
    ctx = context(hist).model_copy(update={"state_dir": str(tmp_path)})
    p = get_advisor("optuna").propose(ctx)
    v = accepted(ctx, p)
    asked = next(t for t in load(ctx).trials if t.state == TrialState.RUNNING)
    # The loop ran the accepted config; its score arrives in the next call.
    overrides = {k: val for k, val in p.changes.items() if not k.startswith("autopilot.")}
    run = make_record(rid(2), {**overrides, "train.seed": v.config.train.seed}, metrics={"success_rate": 0.55})
    ctx2 = context(hist + [run]).model_copy(update={"state_dir": str(tmp_path)})
    get_advisor("optuna").propose(ctx2)
    study = load(ctx2)
    done = study.trials[asked.number]
    assert done.state == TrialState.COMPLETE and done.value == 0.55
    assert study.user_attrs[f"run:{rid(2)}"] == asked.number
    # 2 told + 1 asked-then-completed + 1 new ask; a third call adds only its own ask.
    assert len(study.trials) == 4
    get_advisor("optuna").propose(ctx2)
    study = load(ctx2)
    states = [t.state for t in study.trials]
    # The second call's ask was never run: it is closed as failed, not told as a value.
    assert len(study.trials) == 5 and states.count(TrialState.RUNNING) == 1 and states.count(TrialState.FAIL) == 1


def test_a_damaged_study_file_falls_back_to_the_ledger(tmp_path):
    (tmp_path / STORAGE_FILE).write_bytes(b"this is not an sqlite database" * 100)
    ctx = context(ledger()[:2]).model_copy(update={"state_dir": str(tmp_path)})
    p = get_advisor("optuna").propose(ctx)
    assert any("in-memory study rebuilt from the ledger (optuna.db could not be opened" in r for r in p.rationale)
    assert any("told the study 2 trusted run(s)" in r for r in p.rationale)
    accepted(ctx, p)


def test_k_asks_differ_and_each_passes_the_guard_without_a_state_dir():
    ctx = context(ledger()[:2])
    assert ctx.state_dir is None  # in memory: rebuilt from the ledger
    props = get_advisor("optuna").propose_many(ctx, 3)
    assert len({tuple(sorted(p.changes.items())) for p in props}) == 3
    for p in props:
        accepted(ctx, p)
        for key, value in p.changes.items():
            assert ctx.space[key].contains(value), (key, value)
    # Deterministic for a given ledger and seed.
    again = get_advisor("optuna").propose_many(ctx, 3)
    assert [p.changes for p in again] == [p.changes for p in props]


def test_random_sampler_proposes_valid_configs():
    ctx = context(ledger()[:2])
    p = get_advisor("optuna-random").propose(ctx)
    assert p.advisor == "optuna-random" and p.changes
    accepted(ctx, p)


@pytest.mark.parametrize("name,package", [("optuna-cmaes", "cmaes"), ("optuna-qmc", "scipy")])
def test_optional_samplers_work_or_say_which_package_to_install(name, package):
    ctx = context(ledger()[:2])
    if importlib.util.find_spec(package) is None:
        with pytest.raises(ConfigError, match=f"sampler {name[7:]} needs the {package} package.*pip install {package}"):
            get_advisor(name).propose(ctx)
    else:
        accepted(ctx, get_advisor(name).propose(ctx))


def test_a_loop_session_persists_the_study_in_the_workspace(fake_ws):
    assert fake_ws.run(runs=3, advisor="optuna") == 0
    fake_ws.assert_complete(3)
    db = fake_ws.root / "advisors" / STORAGE_FILE
    assert db.is_file()
    summaries = fake_ws.summaries()
    names = optuna.get_all_study_names(storage=f"sqlite:///{db}")
    assert len(names) == 1
    study = optuna.load_study(study_name=names[0], storage=f"sqlite:///{db}")
    told = {k[4:]: v for k, v in study.user_attrs.items() if k.startswith("run:")}
    assert set(told) == {s["run_id"] for s in summaries}
    # Runs 2 and 3 completed the trials asked for them: 3 runs + the pending ask, no duplicates.
    assert len(study.trials) == 4 and study.trials[-1].state == TrialState.RUNNING
    for s in summaries:
        trial = study.trials[told[s["run_id"]]]
        assert trial.state == TrialState.COMPLETE and math.isclose(trial.value, s["score"])
