import pytest
from ledgers import SEEDS_TRAINER, ent_coef_ledger, make_record, rid

from autopilot.config.load import config_space
from autopilot.decide.advisors import Advisor, available_advisors, get_advisor, register_advisor
from autopilot.decide.attribution import change_effect
from autopilot.decide.diagnose import diagnose
from autopilot.decide.guard import TRUST, guard
from autopilot.decide.records import AdvisorContext, NoiseBand, Proposal
from autopilot.decide.sanity import best_of
from autopilot.decide.trends import knob_trends, noise_band
from autopilot.errors import ConfigError

SPS = 125_000.0


def context(history, *, band=None, best="auto", seed=0, remaining_runs=None, sps=SPS, best_resumable=True):
    best = best_of(history, "success_rate") if best == "auto" else best
    noise = band if band is not None else noise_band(history, "success_rate", reference=best and best.score)
    space = config_space(history[-1].config)
    return AdvisorContext(history=history, findings=diagnose(history, best=best, noise=noise),
                          trends=knob_trends(history, space, "success_rate", anchor=best, band=noise.value),
                          space=space, base_config=history[-1].config, best=best, noise_band=noise.value,
                          noise=noise, sps=sps, remaining_runs=remaining_runs, seed=seed,
                          best_resumable=best_resumable,
                          effect=change_effect(history, "success_rate", noise.value, space))


def accepted(ctx, proposal):
    v = guard(proposal, base=ctx.base_config, history=ctx.history, space=ctx.space, sps=ctx.sps, best=ctx.best)
    assert v.accepted, v.reasons
    return v


def rules(ctx):
    return get_advisor("rules").propose(ctx)


# -- registry ------------------------------------------------------------------------------------------
def test_registry_builtins_and_plugins():
    assert {"rules", "random"} <= set(available_advisors())
    assert get_advisor("rules").name == "rules"

    @register_advisor("test-constant")
    class Constant(Advisor):
        def propose(self, ctx):
            return Proposal(advisor=self.name, changes={"train.gamma": 0.98})

    adv = get_advisor("test-constant")
    assert isinstance(adv, Constant) and adv.name == "test-constant"
    assert "test-constant" in available_advisors()
    register_advisor("test-factory", lambda: Constant())
    assert get_advisor("test-factory").propose(None).changes == {"train.gamma": 0.98}
    with pytest.raises(ConfigError, match="advisor 'nope' is not registered; use one of .*rules"):
        get_advisor("nope")


# -- rules: findings → moves -----------------------------------------------------------------------
def test_tiny_updates_and_high_entropy_answer_the_knobs_at_fault():
    """The seeds' situation: ent_coef 0.12 sits 2.6 doublings above its typical range, so entropy_too_high
    moves it into that range in one step; updates_too_small is answered on the learning rate, not on
    update_epochs, which at 12 is already above its own typical range (the seeds raised it to 16)."""
    hist = [make_record(rid(0), {"train.ent_coef": 0.12}, metrics={"success_rate": 0.0}, trainer=SEEDS_TRAINER)]
    ctx = context(hist)
    p = rules(ctx)
    assert p.changes == {"train.ent_coef": 0.01, "train.learning_rate": 0.005}
    assert any("0.12 lies 2.6 doublings above the typical range [0, 0.02]" in r for r in p.rationale)
    assert any("approx_kl 0.0002 < 0.001" in r and "one ×2 step" in r for r in p.rationale)
    assert p.trust_region_override.startswith("prior: train.ent_coef")
    # σ 866: the latest checkpoint's policy is noise, so no warm start from it.
    assert p.resume_mode == "fresh" and any("policy is noise (equivalent σ 866 > 3" in r for r in p.rationale)
    v = accepted(ctx, p)
    assert v.config.train.batch_size == 28_672 and all(c.ok for c in v.checks)


def test_regression_reverts_ent_coef_to_best_and_resumes_from_best():
    hist = ent_coef_ledger()
    ctx = context(hist)
    p = rules(ctx)
    assert p.changes["train.ent_coef"] == 0.01 and p.changes["train.learning_rate"] == 0.002
    assert (p.resume_mode, p.resume_from, p.save_strategy) == ("continue", "best", "best")
    assert "revert to best" in p.headline
    assert any("back to best run" in r and "0.31" in r for r in p.rationale)
    accepted(ctx, p)


def _entropy_high(i, ent, score, entropy=4.2, **over):
    # 4.2 nats over 2 dims is σ ≈ 2.0: too high, but not the "policy is noise" width (σ > 3).
    return make_record(rid(i), {"train.ent_coef": ent, **over}, metrics={"success_rate": score},
                       trainer={"entropy": entropy, "act_dim": 2})


def test_move_goes_toward_the_best_known_value_when_the_trend_says_so():
    hist = [_entropy_high(0, 0.02, 0.30), _entropy_high(1, 0.20, 0.10), _entropy_high(2, 0.12, 0.29)]
    band = NoiseBand(value=0.02, measured=True)
    ctx = context(hist, band=band)
    assert "regression_vs_best" not in {f.code for f in ctx.findings}
    p = rules(ctx)
    assert p.changes["train.ent_coef"] == 0.02
    assert any("to the best-known 0.02 of the controlled trend lower is better" in r for r in p.rationale)


def test_move_steps_past_the_best_edge_inside_the_typical_range():
    hist = [_entropy_high(0, 0.02, 0.10), _entropy_high(1, 0.015, 0.20)]
    p = rules(context(hist, band=NoiseBand(value=0.02, measured=True)))
    # entropy_too_high fired in both runs although ent_coef was lowered in between: the step expands
    assert p.changes["train.ent_coef"] == 0.00375  # ×0.5² past the best-known 0.015
    assert any("entropy_too_high persisted after 1 move(s) of train.ent_coef this way: a bolder step (×0.5^2, "
               "at most to the edge of its typical range)" in r for r in p.rationale)


def test_a_persistent_finding_escalates_its_step():
    """updates_too_small fires run after run while the learning rate is raised: the next step is ×2, then
    ×4 — never the same step that has not worked — but an expanded step stops at the edge of the
    prior's typical range (1e-2); from there only plain ×2 steps go on."""
    tiny = {"approx_kl": 0.0002, "clipfrac": 0.0004}
    lrs = [0.001, 0.002, 0.004]
    hist = []
    for i, lr in enumerate(lrs[:1]):
        hist.append(make_record(rid(i), {"train.learning_rate": lr, "train.update_epochs": 4}, trainer=tiny))
    assert rules(context(hist)).changes["train.learning_rate"] == 0.002  # first: one ×2 step
    hist.append(make_record(rid(1), {"train.learning_rate": 0.002, "train.update_epochs": 4}, trainer=tiny))
    p = rules(context(hist))
    assert p.changes["train.learning_rate"] == 0.008 and "persisted after 1 step" in p.trust_region_override
    hist.append(make_record(rid(2), {"train.learning_rate": 0.008, "train.update_epochs": 4}, trainer=tiny))
    assert rules(context(hist)).changes["train.learning_rate"] == 0.01  # ×8 would be 0.064: stops at the edge
    accepted(context(hist), rules(context(hist)))
    hist.append(make_record(rid(3), {"train.learning_rate": 0.01, "train.update_epochs": 4}, trainer=tiny))
    assert rules(context(hist)).changes["train.learning_rate"] == 0.02  # at the edge: one plain step


def test_a_move_that_hurt_is_not_repeated_the_finding_goes_to_another_knob():
    tiny = {"approx_kl": 0.0002, "clipfrac": 0.0004}
    hist = [make_record(rid(0), {"train.learning_rate": 0.001}, metrics={"success_rate": 0.5}, trainer=tiny),
            make_record(rid(1), {"train.learning_rate": 0.002}, metrics={"success_rate": 0.1}, trainer=tiny)]
    ctx = context(hist)
    p = rules(ctx)
    assert "train.learning_rate" not in p.changes or p.changes["train.learning_rate"] == 0.001  # never up again
    assert any("train.learning_rate: unchanged" in r and "hurt" in r for r in p.rationale)
    assert p.changes.get("train.update_epochs", 12) != 12 or p.changes.get("train.clip_coef", 0.2) != 0.2
    assert (p.resume_mode, p.resume_from) == ("continue", "best")


def test_one_gradient_step_per_batch_is_answered_with_more_epochs():
    """update_epochs 1 and one minibatch: approx_kl and clipfrac are 0 by construction, so the finding
    says so and only more passes can help (the clip and the learning rate act after the first step)."""
    rec = make_record(rid(0), {"train.update_epochs": 1, "train.minibatch_size": 28_672, "train.clip_coef": 0.05},
                      trainer={"approx_kl": 0.0, "clipfrac": 0.0})
    f = next(f for f in diagnose([rec]) if f.code == "updates_too_small")
    assert f.evidence["gradient_steps_per_batch"] == 1 and [m.key for m in f.moves] == ["train.update_epochs", "train.clip_coef"]
    assert f.moves[0].required
    p = rules(context([rec]))
    assert p.changes["train.update_epochs"] == 4 and p.changes["train.clip_coef"] == 0.2  # clip 0.05: outside its prior too


def test_a_knob_outside_its_prior_moves_into_it_in_one_step():
    hist = [_entropy_high(0, 0.12, 0.10), _entropy_high(1, 0.06, 0.20)]
    p = rules(context(hist))
    assert p.changes["train.ent_coef"] == 0.01
    assert any("0.06 lies 1.6 doublings above the typical range" in r for r in p.rationale)


def test_revert_never_undoes_a_move_a_still_firing_finding_asks_for():
    """The seeds' failure: ent_coef 0.12 → 0.06 scored lower (both near 0) and a revert to 0.12 would
    undo the one move entropy_too_high still asks for; the entropy step continues instead, fresh."""
    hist = [_entropy_high(0, 0.12, 0.069, entropy=5.85), _entropy_high(1, 0.06, 0.030, entropy=8.0)]
    ctx = context(hist)
    assert {"regression_vs_best", "entropy_too_high"} <= {f.code for f in ctx.findings}
    p = rules(ctx)
    assert p.changes["train.ent_coef"] == 0.01
    assert any("not reverted to best's 0.12: entropy_too_high still fires" in r for r in p.rationale)
    assert any("is overruled: a severe entropy_too_high" in r for r in p.rationale)
    assert p.resume_mode == "fresh"


def test_healthy_best_is_still_reverted_to():
    hist = [make_record(rid(0), {"train.ent_coef": 0.01}, metrics={"success_rate": 0.6}),
            make_record(rid(1), {"train.ent_coef": 0.02}, metrics={"success_rate": 0.2})]
    p = rules(context(hist))
    assert p.changes == {"train.ent_coef": 0.01} and (p.resume_mode, p.resume_from) == ("continue", "best")


def test_move_contradicted_by_the_trend_is_skipped():
    hist = [_entropy_high(0, 0.01, 0.10), _entropy_high(1, 0.05, 0.30)]
    p = rules(context(hist))
    assert p.changes.get("train.ent_coef", 0.05) >= 0.05
    assert any("unchanged" in r and "trend says higher is better" in r for r in p.rationale)


def test_plateau_without_a_band_spends_a_run_on_a_seed_repeat():
    hist = [make_record(rid(i), {"train.ent_coef": e, "autopilot.resume_mode": "fresh"},
                        metrics={"success_rate": 0.0}) for i, e in enumerate((0.01, 0.02, 0.03))]
    ctx = context(hist, remaining_runs=3)
    assert "plateau" in {f.code for f in ctx.findings}
    p = rules(ctx)
    assert p.seed_repeat and p.resume_mode == "fresh"
    assert p.changes == {"train.seed": 2}
    assert "noise band" in p.expected_effect
    accepted(ctx, p)
    # With one run left, a repeat is not worth it: explore instead.
    assert not rules(context(hist, remaining_runs=1)).seed_repeat


def test_healthy_run_without_evidence_keeps_training():
    """Nothing broken, nothing measured flat: the null hypothesis (keep the config, continue) stands."""
    ctx = context([make_record(rid(0))])
    p = rules(ctx)
    assert p.changes == {} and (p.resume_mode, p.resume_from) == ("continue", "latest")
    assert p.headline.startswith("keep the config") and p.rationale[0].startswith("keep:")
    accepted(ctx, p)


def test_healthy_rising_curve_keeps_the_config_and_watches_warnings():
    curve = [{"epoch": i, "agent_steps": 1000 * (i + 1), "success_rate": 0.03 * i} for i in range(16)]
    hist = [make_record(rid(0), {"train.total_timesteps": 10_000_000}, curve=curve,
                        trainer={"explained_var": 0.1})]  # value_fit_poor fires, vf_coef 2.0 inside its range
    p = rules(context(hist))
    assert set(p.changes) <= {"train.total_timesteps"}
    assert p.rationale[0].startswith("keep: the curve still rises")
    assert any("watched, not acted on" in r and "value_fit_poor" in r for r in p.rationale)


def test_flat_run_explores_the_knob_farthest_from_its_prior_deterministically():
    flat = [{"epoch": i, "agent_steps": 1000 * (i + 1), "success_rate": 0.3} for i in range(16)]
    hist = [make_record(rid(0), curve=flat)]  # update_epochs 12: above its typical range [1, 10]
    ctx = context(hist, seed=3, remaining_runs=1)
    p1, p2 = rules(ctx), rules(context(hist, seed=3, remaining_runs=1))
    assert p1.changes == p2.changes == {"train.update_epochs": 5}
    assert any("plateau: explore the knob farthest from its prior" in r for r in p1.rationale)
    accepted(ctx, p1)


def test_crash_without_best_retries_with_another_seed():
    ctx = context([make_record(rid(0), status="crashed")])
    p = rules(ctx)
    assert p.seed_repeat and p.changes == {"train.seed": 2} and p.resume_mode == "fresh"
    accepted(ctx, p)


def test_crash_after_a_good_run_goes_back_to_best():
    hist = [make_record(rid(0), {"train.ent_coef": 0.01}), make_record(rid(1), {"train.ent_coef": 0.05},
                                                                       status="crashed")]
    p = rules(context(hist))
    assert p.changes == {"train.ent_coef": 0.01} and p.resume_from == "best"


def test_never_resumes_from_a_suspect_run():
    glitched = [make_record(rid(0), metrics={"success_rate": 9.38}, trainer=SEEDS_TRAINER)]
    p = rules(context(glitched))
    assert p.resume_mode == "fresh"
    hist = [make_record(rid(0), {"train.ent_coef": 0.01}),
            make_record(rid(1), {"train.ent_coef": 0.12}, metrics={"success_rate": 9.38}, trainer=SEEDS_TRAINER)]
    p = rules(context(hist))
    assert (p.resume_mode, p.resume_from) == ("continue", "best")
    # ... and not from a best whose pointer is suspect: latest if it is fine, else fresh.
    ok_latest = hist[:1] + [make_record(rid(1), {"train.ent_coef": 0.12}, trainer=SEEDS_TRAINER)]
    p = rules(context(ok_latest, best_resumable=False))
    assert p.resume_from != "best" or p.resume_mode == "fresh"


def test_total_timesteps_doubled_when_still_rising_and_shrunk_over_budget():
    curve = [{"epoch": i, "success_rate": 0.02 * i} for i in range(16)]
    hist = [make_record(rid(0), {"train.total_timesteps": 10_000_000}, curve=curve)]
    p = rules(context(hist))
    assert p.changes["train.total_timesteps"] == 20_000_000
    assert any("the curve was still rising" in r for r in p.rationale)
    flat_curve = [{"epoch": i, "success_rate": 0.3} for i in range(16)]
    hist = [make_record(rid(0), {"train.total_timesteps": 10_000_000}, curve=flat_curve)]
    assert "train.total_timesteps" not in rules(context(hist)).changes
    big = [make_record(rid(0), {"train.total_timesteps": 900_000_000})]
    p = rules(context(big))
    assert p.changes["train.total_timesteps"] <= SPS * 3600


# -- random ------------------------------------------------------------------------------------------
def test_random_advisor_samples_inside_the_trust_region():
    hist = [make_record(rid(0))]
    seen = set()
    for seed in range(8):
        ctx = context(hist, seed=seed)
        p = get_advisor("random").propose(ctx)
        assert p.advisor == "random" and 1 <= len(p.changes) <= 2
        base = ctx.base_config.model_dump()
        for key, new in p.changes.items():
            section, name = key.split(".")
            assert ctx.space[key].tunable and TRUST.allows(ctx.space[key], base[section][name], new)
        accepted(ctx, p)
        seen.add(tuple(sorted(p.changes.items())))
    assert len(seen) > 1  # different seeds, different samples
    again = get_advisor("random").propose(context(hist, seed=5))
    assert again.changes == get_advisor("random").propose(context(hist, seed=5)).changes


def test_diverged_first_run_halves_the_step_and_starts_fresh():
    ctx = context([make_record(rid(0), status="diverged", trainer={"approx_kl": 0.2})])
    p = rules(ctx)
    assert p.changes["train.learning_rate"] == 0.00125 and p.changes["train.max_grad_norm"] == 0.25
    assert p.resume_mode == "fresh"  # never from the diverged run's checkpoint
    accepted(ctx, p)


def test_updates_too_large_respects_a_contrary_learning_rate_trend():
    hist = [make_record(rid(0), {"train.learning_rate": 0.001}, metrics={"success_rate": 0.1}),
            make_record(rid(1), {"train.learning_rate": 0.002}, metrics={"success_rate": 0.3},
                        trainer={"approx_kl": 0.09})]
    p = rules(context(hist))
    assert "train.learning_rate" not in p.changes and p.changes["train.update_epochs"] == 5
    assert any("train.learning_rate: unchanged" in r and "higher is better" in r for r in p.rationale)
    assert any("12 lies 0.26 doublings above the typical range [1, 10]" in r for r in p.rationale)


def test_small_updates_of_a_confident_discrete_policy_are_answered_with_entropy_first():
    """A categorical policy at 17% of ln(2) moves its ratio little under any step (KL ∝ p(1 − p)): the
    small KL is its confidence, so the finding names the entropy bonus first and, from ent_coef 0, the
    move lands on the standard small value rather than doubling the learning rate."""
    trainer = {"approx_kl": 0.00046, "clipfrac": 0.0036, "entropy": 0.12, "act_n": 2}
    rec = make_record(rid(0), {"train.ent_coef": 0.0, "train.learning_rate": 0.005}, trainer=trainer)
    f = next(f for f in diagnose([rec]) if f.code == "updates_too_small")
    assert f.evidence["entropy_over_ln_n"] == pytest.approx(0.12 / 0.6931, abs=1e-3)
    assert [m.key for m in f.moves][:2] == ["train.ent_coef", "train.learning_rate"]
    p = rules(context([rec]))
    assert p.changes.get("train.ent_coef") == 0.01 and "train.learning_rate" not in p.changes
    # The same statistics from a policy that is still exploring (60% of ln 2): the step size is the suspect.
    rec = make_record(rid(0), {"train.ent_coef": 0.0, "train.learning_rate": 0.005},
                      trainer={**trainer, "entropy": 0.42})
    f = next(f for f in diagnose([rec]) if f.code == "updates_too_small")
    assert "entropy_over_ln_n" not in f.evidence and f.moves[0].key == "train.learning_rate"


def _collapsed(overrides, success, curve_from, curve_to):
    """A categorical policy at 1% of ln(4) with tiny updates: collapsed, or converged, as its curve says."""
    curve = [{"epoch": i, "agent_steps": 1000 * (i + 1), "success_rate": curve_from + (curve_to - curve_from) * i / 15}
             for i in range(16)]
    return make_record(rid(0), overrides, metrics={"success_rate": success}, curve=curve,
                       trainer={"approx_kl": 0.0001, "clipfrac": 0.0, "entropy": 0.014, "act_n": 4})


def test_a_policy_that_collapsed_before_learning_restarts_fresh_with_its_violent_knobs_fixed():
    """lr 0.1 and clip 1.0 drove the policy to determinism at the floor: entropy_collapsed names the step size
    as a cause, both knobs far outside their priors move into them, and the collapsed weights are dropped."""
    rec = _collapsed({"train.learning_rate": 0.1, "train.clip_coef": 1.0}, 0.0, 0.0, 0.0)
    ctx = context([rec])
    assert {"entropy_collapsed", "updates_too_small"} <= {f.code for f in ctx.findings}
    p = rules(ctx)
    assert p.changes["train.learning_rate"] < 0.01 and p.changes["train.clip_coef"] <= 0.3
    assert p.resume_mode == "fresh"
    assert any("trained under entropy_collapsed" in r and "no run's curve has risen" in r for r in p.rationale)
    accepted(ctx, p)


def test_a_converged_near_deterministic_policy_keeps_its_checkpoint():
    """The same entropy after a curve that climbed 0 → 0.9: convergence, not collapse; no fresh start."""
    p = rules(context([_collapsed({"train.learning_rate": 0.1, "train.clip_coef": 1.0}, 0.9, 0.0, 0.9)]))
    assert p.resume_mode == "continue"


def test_findings_pulling_a_knob_both_ways_leave_it_alone_inside_its_prior():
    """entropy_collapsed asks for a smaller learning rate, the confident policy's updates_too_small for a larger
    one: at 0.003 (inside its typical range) neither is evidence, so only the entropy bonus moves."""
    p = rules(context([_collapsed({"train.learning_rate": 0.003, "train.ent_coef": 0.0}, 0.0, 0.0, 0.0)]))
    assert "train.learning_rate" not in p.changes and p.changes["train.ent_coef"] == 0.01
    assert any("pull it in opposite directions" in s for s in p.next_steps)
