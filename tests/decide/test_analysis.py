import pytest
from ledgers import SEEDS_TRAINER, ent_coef_ledger, make_record, rid, seeds_ledger

from autopilot.config.load import config_space
from autopilot.decide.advisors import Advisor, register_advisor
from autopilot.decide.analysis import analyse_and_propose
from autopilot.decide.guard import TRUST
from autopilot.decide.records import Proposal
from autopilot.errors import ConfigError

SPS = 125_000.0


def codes(decision):
    return {f.code for f in decision.findings}


def test_acceptance_tiny_updates_high_entropy():
    hist = [make_record(rid(0), {"train.ent_coef": 0.12}, metrics={"success_rate": 0.0}, trainer=SEEDS_TRAINER)]
    d = analyse_and_propose(hist, sps=SPS, remaining_runs=4, repro_command="autopilot run -n 5")
    assert {"updates_too_small", "entropy_too_high"} <= codes(d)
    p = d.proposal
    lowered = p.changes.get("train.ent_coef", 0.12) < 0.12
    raised = p.changes.get("train.update_epochs", 12) > 12 or p.changes.get("train.learning_rate", 0.0025) > 0.0025
    assert lowered and raised
    # every invariant passes on the accepted proposal; batch sizes derived
    assert d.verdict.accepted and all(c.ok for c in d.verdict.checks)
    assert d.verdict.config.train.batch_size == 28_672 and d.verdict.config.train.minibatch_size == 7_168
    space = config_space(hist[0].config)
    for key, new in p.changes.items():
        spec = space[key]
        section, name = key.split(".")
        old = hist[0].config.model_dump()[section][name]
        # within the trust region, or beyond it only with the prior named as the reason
        assert TRUST.allows(spec, old, new) or (spec.prior_distance(old) != 0 and "prior" in p.trust_region_override)
    assert d.advisor_used == "rules" and d.rejected == []


def test_acceptance_ent_coef_trend_reverts_and_resumes_from_best():
    hist = ent_coef_ledger()
    d = analyse_and_propose(hist, sps=SPS, best=hist[0])
    assert "regression_vs_best" in codes(d)
    assert d.proposal.changes["train.ent_coef"] == 0.01
    assert (d.proposal.resume_mode, d.proposal.resume_from) == ("continue", "best")
    trend = next(t for t in d.trends if t.key == "train.ent_coef")
    assert trend.best_value == 0.01


def test_acceptance_glitched_success_rate_is_suspect_and_never_best():
    hist = [make_record(rid(0), metrics={"success_rate": 0.2}),
            make_record(rid(1), {"train.ent_coef": 0.12}, metrics={"success_rate": 9.38})]
    assert hist[1].suspect
    d = analyse_and_propose(hist, sps=SPS)
    glitch = next(f for f in d.findings if f.code == "metric_glitch")
    assert "metrics.success_rate=9.38 is outside [0, 1]" in glitch.evidence["reasons"]
    assert d.proposal.resume_from == "best"  # not the suspect latest
    assert f"- {rid(0)}: completed, success_rate 0.2 [best]" in d.notes_md
    assert f"{rid(1)}: completed, success_rate 9.38 [suspect, this run]" in d.notes_md
    assert "SUSPECT: metrics.success_rate=9.38 is outside [0, 1]" in d.notes_md


def test_suspect_best_pointer_is_neither_compared_nor_resumed_from():
    good = make_record(rid(0), metrics={"success_rate": 0.2})
    glitched = make_record(rid(1), {"train.ent_coef": 0.05}, metrics={"success_rate": 1.26e3})
    latest = make_record(rid(2), {"train.ent_coef": 0.02}, metrics={"success_rate": 0.1})
    d = analyse_and_propose([good, glitched, latest], sps=SPS, best=glitched)
    reg = next(f for f in d.findings if f.code == "regression_vs_best")
    assert reg.evidence["best_run"] == rid(0)
    assert d.proposal is not None and d.proposal.resume_from != "best"


def test_noise_band_reported_only_when_measured():
    assert analyse_and_propose(ent_coef_ledger(), sps=SPS).noise_band is None
    hist = [make_record(rid(i), {"train.seed": i}, metrics={"success_rate": s}) for i, s in enumerate((0.2, 0.3))]
    d = analyse_and_propose(hist, sps=SPS)
    assert d.noise_band == pytest.approx(2 * 0.0707107, abs=1e-6) and d.noise.measured


class _Bold(Advisor):
    def propose(self, ctx):
        return Proposal(advisor="bold", changes={"vec.num_envs": 512}, headline="bigger topology")


class _Broken(Advisor):
    def propose(self, ctx):
        raise ConfigError("endpoint unreachable")


register_advisor("test-bold", _Bold)
register_advisor("test-broken", _Broken)


def test_rejected_advisor_falls_back_to_rules():
    hist = [make_record(rid(0), {"train.ent_coef": 0.12}, trainer=SEEDS_TRAINER)]
    d = analyse_and_propose(hist, advisor="test-bold", sps=SPS)
    assert d.advisor_used == "rules" and d.proposal is not None
    (name, verdict), = d.rejected
    assert name == "test-bold" and "vec.num_envs=512 is not tunable" in verdict.reasons[0]
    assert "✗ rejected test-bold proposal (bigger topology)" in d.notes_md
    assert "after test-bold was rejected" in d.notes_md


def test_failing_advisor_is_recorded_and_rules_used():
    d = analyse_and_propose([make_record(rid(0))], advisor="test-broken", sps=SPS)
    assert d.advisor_used == "rules"
    assert d.rejected[0][1].reasons == ["advisor test-broken failed: endpoint unreachable"]


def test_unknown_advisor_is_a_clear_error():
    with pytest.raises(ConfigError, match="not registered"):
        analyse_and_propose([make_record(rid(0))], advisor="nope")


def test_every_proposal_rejected_leaves_none_and_says_so():
    # At 1 SPS not even one batch fits the budget: rules, constant and the seed-repeat fallback are refused.
    d = analyse_and_propose([make_record(rid(0))], sps=1.0)
    assert d.proposal is None and d.verdict is None and d.advisor_used is None
    assert [a for a, _ in d.rejected] == ["rules", "constant", "fallback"]
    assert "no proposal: every advisor's proposal was rejected" in d.notes_md


def test_conservative_fallback_when_rules_is_rejected(monkeypatch):
    from autopilot.decide.advisors import rules

    monkeypatch.setattr(rules.RulesAdvisor, "propose",
                        lambda self, ctx: Proposal(changes={"train.learning_rate": 0.05}))  # ×20: trust region
    hist = [make_record(rid(0))]
    d = analyse_and_propose(hist, sps=SPS)
    # the null hypothesis first: keep the config and continue training
    assert d.advisor_used == "constant" and [a for a, _ in d.rejected] == ["rules"]
    assert set(d.proposal.changes) <= {"train.seed"}
    assert (d.proposal.resume_mode, d.proposal.resume_from) == ("continue", "latest")
    from autopilot.decide.advisors import constant

    monkeypatch.setattr(constant.ConstantAdvisor, "propose",
                        lambda self, ctx: Proposal(changes={"train.learning_rate": 0.05}))
    d = analyse_and_propose(hist, sps=SPS)
    assert d.advisor_used == "fallback" and d.proposal.seed_repeat
    assert d.proposal.changes == {"train.seed": 2} and d.proposal.resume_mode == "fresh"


def test_crashed_run_without_config_summary_still_gets_a_decision():
    hist = [make_record(rid(0)), make_record(rid(1), {"train.ent_coef": 0.05}, status="crashed",
                                             error="RuntimeError: CUDA out of memory")]
    d = analyse_and_propose(hist, sps=SPS)
    assert "crashed" in codes(d) and d.proposal.resume_from == "best"
    assert "no trainer_summary.json: status crashed; error: RuntimeError: CUDA out of memory" in d.notes_md


def test_seeds_scenario_end_to_end():
    d = analyse_and_propose(seeds_ledger(), sps=124_600.0, remaining_runs=5, repro_command="autopilot run")
    assert {"regression_vs_best", "updates_too_small", "entropy_too_high", "high_oob"} <= codes(d)
    # ent_coef goes back to the best's 0.01; learning_rate is NOT lowered back to 0.002, because
    # updates_too_small still fires and asks for larger steps (the revert would undo that).
    assert d.proposal.changes == {"train.ent_coef": 0.01}
    assert any("learning_rate: unchanged — not reverted to best's 0.002: updates_too_small still fires" in r
               for r in d.proposal.rationale)
    assert d.proposal.resume_from == "best"
    assert d.labbook_md.startswith(f"## Run {rid(3)} — ")


def test_latest_run_without_config_is_judged_against_the_last_config():
    hist = [make_record(rid(0)), make_record(rid(1), status="crashed")]
    hist[1].config = None
    d = analyse_and_propose(hist, sps=SPS)
    assert "crashed" in codes(d) and d.proposal.resume_from == "best"
    assert not d.proposal.headline.startswith("revert")  # nothing differed from the best's knobs
    assert not d.proposal.seed_repeat and "warm-start from best " + rid(0) in d.notes_md
    only = [make_record(rid(0), status="crashed")]
    only[0].config = None
    d = analyse_and_propose(only, sps=SPS)
    assert d.proposal is None and "no config.json recorded for this run" in d.notes_md


def test_advisor_seed_differs_between_ledgers_started_with_different_seeds():
    """Independent workspaces must not draw the same 'random' samples: the seed follows the ledger's first
    train.seed as well as its length (a re-analysis of one ledger draws the same)."""
    from autopilot.decide.analysis import advisor_seed

    a = [make_record(rid(0), {"train.seed": 1}), make_record(rid(1), {"train.seed": 1})]
    b = [make_record(rid(0), {"train.seed": 2}), make_record(rid(1), {"train.seed": 2})]
    assert advisor_seed(a) != advisor_seed(b)
    assert advisor_seed(a) == advisor_seed(list(a)) and advisor_seed(a[:1]) != advisor_seed(a)
    pa = analyse_and_propose(a, advisor="random", seed=advisor_seed(a)).proposal
    pb = analyse_and_propose(b, advisor="random", seed=advisor_seed(b)).proposal
    assert pa is not None and pb is not None and pa.changes != pb.changes
