import pytest
from ledgers import make_config, make_record, rid

from autopilot.config import resolve_config
from autopilot.config.load import config_space
from autopilot.decide.guard import TRUST, guard
from autopilot.decide.records import Proposal

BASE = make_config({"train.ent_coef": 0.12})


def history(**kw):
    kw.setdefault("metrics", {"success_rate": 0.10})
    return [make_record(rid(0), {"train.ent_coef": 0.01}, metrics={"success_rate": 0.31}),
            make_record(rid(1), {"train.ent_coef": 0.12}, **kw)]


def run(changes, *, base=BASE, hist=None, best="first", sps=125_000.0, **fields):
    hist = hist if hist is not None else history()
    best_rec = hist[0] if best == "first" else best
    return guard(Proposal(changes=changes, **fields), base=base, history=hist, space=config_space(base),
                 sps=sps, best=best_rec)


def failing(verdict):
    return {c.name for c in verdict.checks if not c.ok}


def test_accepts_a_sane_proposal_with_every_check_shown():
    v = run({"train.ent_coef": 0.06, "train.update_epochs": 16})
    assert v.accepted, v.reasons
    assert v.config.train.ent_coef == 0.06 and v.config.train.batch_size == 28_672
    names = [c.name for c in v.checks]
    for name in ("whitelist", "trust region", "ranges", "divisibility", "segments", "minibatch", "timesteps",
                 "device", "runtime", "no repeat", "resume"):
        assert name in names
    assert all(c.line().startswith("✓") for c in v.checks)


def test_unknown_key_is_rejected_with_a_suggestion():
    v = run({"train.ent_coeff": 0.05})
    assert not v.accepted and failing(v) == {"whitelist"}
    assert "train.ent_coeff is not a known key" in v.reasons[0] and "train.ent_coef" in v.reasons[0]


def test_non_tunable_key_is_rejected():
    v = run({"vec.num_envs": 112})
    assert not v.accepted and "vec.num_envs=112 is not tunable" in v.reasons[0]
    assert "train.learning_rate" in v.reasons[0]  # lists the tunable keys


def test_invalid_value_is_rejected():
    v = run({"train.optimizer": "sgd"})
    assert not v.accepted and "train.optimizer='sgd' is not a valid value" in v.reasons[0]
    assert "adam, adamw" in v.reasons[0]
    assert not run({"train.learning_rate": "fast"}).accepted


def test_out_of_range_number_is_clamped_and_recorded():
    v = run({"train.ent_coef": 0.9}, base=make_config({"train.ent_coef": 0.3}))
    assert v.accepted and v.proposal.changes["train.ent_coef"] == 0.5
    assert any("clamped to 0.5" in r for r in v.repairs)
    # A negative ent_coef clamps to 0 (off); from 0.12 that is more than one log step, so the trust region refuses.
    v = run({"train.ent_coef": -0.01})
    assert any("clamped to 0" in r for r in v.repairs)
    assert not v.accepted and failing(v) == {"trust region"}


def test_trust_region_rejects_then_override_allows():
    v = run({"train.learning_rate": 0.02})  # 0.0025 × 8
    assert not v.accepted and failing(v) == {"trust region"}
    assert "×2/÷2 per step (log scale)" in v.reasons[0] and "[0.00125, 0.005]" in v.reasons[0]
    beyond = run({"env.num_drones": 12}, base=make_config({"sweep.env.num_drones": {
        "distribution": "int_uniform", "min": 1, "max": 16}}))
    assert not beyond.accepted and "use a value in [5, 11]" in beyond.reasons[0]
    lin = run({"env.penalty_collision": 1.8})  # ±25% of [0, 2] = ±0.5 around 1.0
    assert not lin.accepted and "±25% of the range = ±0.5" in lin.reasons[0]
    log0 = run({"train.ent_coef": 0.40})  # 0.12 × 2 = 0.24 at most
    assert not log0.accepted and "×2/÷2 per step (log0 scale" in log0.reasons[0] and "[0.06, 0.24]" in log0.reasons[0]
    ok = run({"train.learning_rate": 0.02}, trust_region_override="revert to the best-known lr")
    assert ok.accepted and "override" in next(c.detail for c in ok.checks if c.name == "trust region")


def test_trust_region_intervals():
    space = config_space(BASE)
    assert TRUST.interval(space["train.learning_rate"], 0.0025) == (0.00125, 0.005)
    assert TRUST.interval(space["train.ent_coef"], 0.01) == (0.005, 0.02)  # log scale: ×2/÷2
    assert TRUST.interval(space["train.ent_coef"], 0.0) == (0.0, 0.01)  # from off: only to the standard value
    assert TRUST.interval(space["train.ent_coef"], 0.00015) == (0.0, 0.0003)  # below the smallest on-value: off
    assert TRUST.interval(space["train.update_epochs"], 12) == (6, 24)  # intlog: ×2/÷2
    assert TRUST.interval(space["train.update_epochs"], 1) == (1, 2)
    lo, hi = TRUST.interval(space["train.gamma"], 0.99)  # log1m: 1 - gamma ×2/÷2
    assert abs(lo - 0.98) < 1e-12 and abs(hi - 0.995) < 1e-12
    assert TRUST.interval(space["train.optimizer"], "adam") is None


def test_invariant_violation_is_rejected_with_its_text():
    base = make_config({"sweep.vec.num_workers": {"distribution": "int_uniform", "min": 1, "max": 64}})
    v = run({"vec.num_workers": 24}, base=base)
    assert not v.accepted and "divisibility" in failing(v)
    assert any("vec.num_workers=24 does not divide vec.num_envs=56" in r and "use one of" in r for r in v.reasons)


def test_config_model_error_is_rejected():
    v = run({"autopilot.resume_mode": "sometimes"})
    assert not v.accepted and failing(v) >= {"config"}


def test_batch_sizes_are_derived_never_guessed():
    v = run({"train.batch_size": 30_000, "train.ent_coef": 0.06})
    assert v.accepted and v.proposal.changes["train.batch_size"] == "auto"
    assert any("batch sizes are derived" in r for r in v.repairs)
    # A topology change (env.num_drones made tunable by a sweep) on a resolved base re-derives both sizes.
    base = resolve_config(make_config({"sweep.env.num_drones": {"distribution": "int_uniform",
                                                                "min": 1, "max": 16}}))
    assert base.train.batch_size == 28_672
    v = run({"env.num_drones": 11}, base=base)
    assert v.accepted, v.reasons
    assert v.config.train.batch_size == 4 * 11 * 56 * 16
    assert {"train.batch_size", "train.minibatch_size"} <= set(v.proposal.changes)
    assert any("re-derived" in r and "4×11×56×16 = 39,424" in r for r in v.repairs)


def test_runtime_budget_shrinks_total_timesteps_or_rejects():
    v = run({"train.ent_coef": 0.06, "train.total_timesteps": 1_000_000_000})
    assert v.accepted
    fit = v.proposal.changes["train.total_timesteps"]
    assert fit % 28_672 == 0 and fit <= 125_000 * 3600 and fit > 125_000 * 3600 - 28_672
    assert any("is over autopilot.max_run_seconds=3,600" in r for r in v.repairs)
    tight = run({"train.ent_coef": 0.06}, sps=1.0)
    assert not tight.accepted and failing(tight) == {"budget", "runtime"}
    assert "even one batch of 28,672" in tight.reasons[0]


def test_accidental_repeat_is_rejected_and_seed_repeat_allowed():
    hist = history()
    v = run({"train.ent_coef": 0.01, "train.learning_rate": 0.0025}, hist=hist, resume_mode="fresh",
            trust_region_override="back to run 0")  # = run 0's config, fresh like it
    assert not v.accepted and failing(v) == {"no repeat"}
    assert f"repeats run {rid(0)} exactly" in v.reasons[0] and "seed_repeat=true with train.seed=2" in v.reasons[0]
    ok = run({"train.seed": 2}, hist=hist, seed_repeat=True, resume_mode="fresh")
    assert ok.accepted, ok.reasons


def test_a_warm_start_is_not_a_repeat():
    """Same knobs from a newer checkpoint is a new experiment: keep training, or revert to the best
    run's config and warm-start from its checkpoint (issue: the guard turned that into a fresh seed repeat)."""
    best = make_record(rid(0), {"train.ent_coef": 0.01, "autopilot.resume_mode": "continue",
                                "autopilot.resume_from": "best"}, metrics={"success_rate": 0.31},
                       resume={"mode": "continue", "from": "best", "source_run": "2025-01-01T000000Z"})
    latest = make_record(rid(1), {"train.ent_coef": 0.02, "autopilot.resume_mode": "continue",
                                  "autopilot.resume_from": "best"}, metrics={"success_rate": 0.10},
                         resume={"mode": "continue", "from": "best", "source_run": rid(0)})
    base = make_config({"train.ent_coef": 0.02, "autopilot.resume_mode": "continue",
                        "autopilot.resume_from": "best"})
    revert = run({"train.ent_coef": 0.01}, base=base, hist=[best, latest], best=best, resume_from="best")
    assert revert.accepted, revert.reasons
    assert "a warm start from run " + rid(0) in next(c.detail for c in revert.checks if c.name == "no repeat")
    keep = run({}, base=base, hist=[best, latest], best=best, resume_from="latest")
    assert keep.accepted, keep.reasons
    # The same knobs from the same checkpoint again is a repeat.
    again = run({}, base=base, hist=[best, latest], best=best, resume_from="best")
    assert not again.accepted and f"repeats run {rid(1)} exactly" in again.reasons[0]


def test_seed_repeat_must_repeat_a_ledger_config():
    v = run({"train.seed": 7, "train.ent_coef": 0.07}, seed_repeat=True)
    assert not v.accepted and "matches no run in the ledger apart from train.seed" in v.reasons[0]
    same_seed = run({}, seed_repeat=True, resume_mode="fresh")  # same seed, same start as the latest run: a repeat
    assert not same_seed.accepted and "use train.seed=2" in same_seed.reasons[0]


def test_resume_from_best_needs_a_trusted_best():
    v = run({"train.ent_coef": 0.06}, best=None, resume_from="best")
    assert not v.accepted and "there is no best run yet" in v.reasons[0]
    glitched = make_record(rid(0), {"train.ent_coef": 0.01}, metrics={"success_rate": 9.38})
    v = run({"train.ent_coef": 0.06}, best=glitched, resume_from="best")
    assert not v.accepted and "is suspect (metrics.success_rate=9.38 is outside [0, 1]" in v.reasons[0]


def test_resume_from_latest_refuses_suspect_or_broken_runs():
    v = run({"train.ent_coef": 0.06}, hist=history(metrics={"success_rate": 9.38}), resume_from="latest")
    assert not v.accepted and "is suspect" in v.reasons[0]
    v = run({"train.ent_coef": 0.06}, hist=history(status="diverged"), resume_from="latest")
    assert not v.accepted and "diverged (rule: never resume from a broken run)" in v.reasons[0]
    ok = run({"train.ent_coef": 0.06}, hist=history(status="diverged"), resume_mode="fresh")
    assert ok.accepted


def test_resume_from_missing_path(tmp_path):
    v = run({"train.ent_coef": 0.06}, resume_from=str(tmp_path / "nope.pt"))
    assert not v.accepted and "does not exist" in v.reasons[0]
    (tmp_path / "ok.pt").write_bytes(b"x")
    assert run({"train.ent_coef": 0.06}, resume_from=str(tmp_path / "ok.pt")).accepted


def test_resume_keys_in_changes_and_noops_are_normalised():
    v = run({"autopilot.resume_from": "best", "train.ent_coef": 0.12, "train.gamma": 0.98})
    assert v.accepted and v.proposal.resume_from == "best"
    assert v.proposal.changes == {"train.gamma": 0.98}
    assert any("dropped: already the current value" in r for r in v.repairs)


@pytest.mark.parametrize("changes", [{"train.update_epochs": 13}, {"train.anneal_lr": False}])
def test_small_moves_pass(changes):
    assert run(changes).accepted
