"""The decision core's contracts, one ledger fixture per defect it must not have (see the README's
"How the default advisor decides")."""

from ledgers import make_record, rid

from autopilot.config.load import config_space
from autopilot.decide.advisors.base import step
from autopilot.decide.analysis import analyse_and_propose
from autopilot.decide.attribution import change_effect
from autopilot.decide.trends import knob_trends, noise_band

SPS = 125_000.0
CHAIN = {"autopilot.resume_mode": "continue", "autopilot.resume_from": "latest"}


def _curve(start: float, end: float, steps: int, n: int = 16, key: str = "success_rate") -> list[dict]:
    return [{"epoch": i, "agent_steps": steps * (i + 1) // n, key: start + (end - start) * i / (n - 1),
             "entropy": 9.6} for i in range(n)]


def _chain(values: list[tuple[float, float, float]], **over) -> list:
    """A warm-start chain: each run continues the previous one's checkpoint. (ent_coef, start, end)."""
    out = []
    for i, (ent, a, b) in enumerate(values):
        resume = {"mode": "continue", "from": "latest", "source_run": rid(i - 1)} if i else {"mode": "fresh"}
        cfg = {"train.ent_coef": ent, "train.total_timesteps": 4_000_000, **(CHAIN if i else {}), **over}
        out.append(make_record(rid(i), cfg, metrics={"success_rate": b}, curve=_curve(a, b, 4_000_000),
                               resume=resume))
    return out


def test_a_trend_along_a_warm_start_chain_claims_no_direction():
    """Each later run scored higher, but each also trained 4M steps more: no evidence about ent_coef."""
    hist = _chain([(0.01, 0.0, 0.5), (0.005, 0.5, 0.7), (0.0025, 0.7, 0.85)])
    space = config_space(hist[0].config)
    band = noise_band(hist, "success_rate").value
    trends = knob_trends(hist, space, "success_rate", anchor=hist[-1], band=band)
    assert [t.direction for t in trends if t.key == "train.ent_coef"] == ["confounded"]


def test_a_chained_run_is_judged_against_continuing():
    hist = _chain([(0.01, 0.0, 0.4), (0.005, 0.4, 0.5)])
    space = config_space(hist[0].config)
    e = change_effect(hist, "success_rate", 0.05, space)
    assert e.comparison == "continuation" and e.expected_low == 0.4
    # run 0's late slope carried over run 1's 4M steps predicts up to ~0.67: 0.5 is inconclusive, not "better"
    assert 0.6 < e.expected_high <= 1.0 and e.verdict == "inconclusive"
    assert "vs continuing run " + rid(0) in e.detail and "ent_coef" in e.detail
    worse = _chain([(0.01, 0.0, 0.4), (0.005, 0.4, 0.2)])
    assert change_effect(worse, "success_rate", 0.05, space).verdict == "hurt"


def test_healthy_still_improving_start_keeps_the_config():
    """From a healthy start nothing is broken and the curve still rises: the default advisor keeps the
    config and continues from latest instead of halving ent_coef every run."""
    hist = _chain([(0.01, 0.0, 0.5), (0.01, 0.5, 0.7)])
    d = analyse_and_propose(hist, sps=SPS, remaining_runs=3)
    p = d.proposal
    assert d.findings == [] or all(f.severity != "error" for f in d.findings)
    assert set(p.changes) <= {"train.total_timesteps"}  # the budget may be extended, no knob moves
    assert (p.resume_mode, p.resume_from) == ("continue", "latest")
    assert "Last change:" in d.notes_md


def test_external_ledger_without_act_dim_keeps_warm_starting_from_best():
    """An external trainer's ledger (no act_dim): entropy 9.5 nats is judged relative to the run's own
    start, never as "σ = 10⁴, the policy is noise", so a regression still warm-starts from best."""
    trainer = {"entropy": 9.5, "act_dim": None}
    best = make_record(rid(0), {"train.ent_coef": 0.01}, metrics={"success_rate": 0.6}, trainer=trainer,
                       curve=_curve(0.1, 0.6, 4_000_000))
    latest = make_record(rid(1), {"train.ent_coef": 0.02, **CHAIN}, metrics={"success_rate": 0.2},
                         trainer=trainer, curve=_curve(0.6, 0.2, 4_000_000),
                         resume={"mode": "continue", "from": "latest", "source_run": rid(0)})
    d = analyse_and_propose([best, latest], sps=SPS, best=best)
    assert all(f.severity != "error" for f in d.findings if f.code.startswith("entropy"))
    p = d.proposal
    assert (p.resume_mode, p.resume_from) == ("continue", "best"), p.rationale
    assert p.changes.get("train.ent_coef") == 0.01  # reverted to best's value
    assert not any("policy is noise" in r for r in p.rationale)


def test_revert_to_best_warm_starts_from_its_checkpoint_not_a_seed_repeat():
    """Best was itself a warm start from best; reverting to its knobs from its own checkpoint is a new
    experiment, so the guard accepts it instead of turning it into a fresh seed repeat."""
    cont_best = {"autopilot.resume_mode": "continue", "autopilot.resume_from": "best"}
    b = make_record(rid(1), {"train.ent_coef": 0.01, **cont_best}, metrics={"success_rate": 0.7},
                    resume={"mode": "continue", "from": "best", "source_run": rid(0)})
    hist = [make_record(rid(0), {"train.ent_coef": 0.01}, metrics={"success_rate": 0.5}), b,
            make_record(rid(2), {"train.ent_coef": 0.02, **cont_best}, metrics={"success_rate": 0.3},
                        resume={"mode": "continue", "from": "best", "source_run": rid(1)})]
    d = analyse_and_propose(hist, sps=SPS, best=b)
    assert d.advisor_used == "rules" and d.rejected == []
    p = d.proposal
    assert p.changes == {"train.ent_coef": 0.01} and not p.seed_repeat
    assert (p.resume_mode, p.resume_from) == ("continue", "best")


def test_a_move_from_ent_coef_zero_lands_on_the_standard_value():
    space = config_space(make_record(rid(0)).config)
    spec = space["train.ent_coef"]
    assert step(spec, 0.0, "up") == 0.01 and step(spec, 0.0, "up", factor=2.0) == 0.01
    assert step(spec, 0.00015, "down") == 0.0  # below the smallest "on" value: off
    collapsed = make_record(rid(0), {"train.ent_coef": 0.0}, trainer={"entropy": -12.0, "act_dim": 4})
    d = analyse_and_propose([collapsed], sps=SPS)
    assert "entropy_collapsed" in {f.code for f in d.findings}
    assert d.proposal.changes["train.ent_coef"] == 0.01 and d.verdict.accepted


def test_a_checkpoint_trained_with_violent_updates_is_not_warm_started():
    """lr 0.03 + clip 1.0 left approx_kl at 1.3 and success at 0: the fix moves lr and clip into their
    typical ranges and starts fresh, since those weights are no head start."""
    rec = make_record(rid(0), {"train.learning_rate": 0.03, "train.clip_coef": 1.0},
                      metrics={"success_rate": 0.0}, trainer={"approx_kl": 1.3, "clipfrac": 0.05})
    d = analyse_and_propose([rec], sps=SPS)
    p = d.proposal
    assert p.changes["train.learning_rate"] == 0.005 and p.changes["train.clip_coef"] == 0.2
    assert p.resume_mode == "fresh" and any("violent updates (approx_kl 1.3 > 10 × 0.05)" in r for r in p.rationale)
    # The same fix after a run that did learn keeps its checkpoint.
    ok = make_record(rid(0), {"train.learning_rate": 0.03, "train.clip_coef": 1.0},
                     metrics={"success_rate": 0.4}, trainer={"approx_kl": 1.3, "clipfrac": 0.05})
    assert analyse_and_propose([make_record(rid(1), metrics={"success_rate": 0.1}), ok], sps=SPS,
                               ).proposal.resume_mode == "continue"


def test_a_fix_is_not_undone_back_into_values_outside_the_prior():
    """lr 0.1 (violent) was lowered to 0.005; the next run's updates are small. The change just before is
    not undone back to 0.1, a value far outside the typical range: the step goes up from 0.005 instead."""
    violent = make_record(rid(0), {"train.learning_rate": 0.1, "train.update_epochs": 4},
                          metrics={"success_rate": 0.1}, trainer={"approx_kl": 0.2, "clipfrac": 0.03})
    timid = make_record(rid(1), {"train.learning_rate": 0.005, "train.update_epochs": 4, **CHAIN},
                        metrics={"success_rate": 0.3}, trainer={"approx_kl": 0.0005, "clipfrac": 0.001},
                        resume={"mode": "continue", "from": "latest", "source_run": rid(0)})
    p = analyse_and_propose([violent, timid], sps=SPS).proposal
    assert p.changes.get("train.learning_rate", 0.005) <= 0.01
    assert not any("undo" in r for r in p.rationale)
