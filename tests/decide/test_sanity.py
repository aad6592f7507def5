import math

import pytest
from ledgers import make_record, rid

from autopilot.decide.sanity import best_of, is_suspect, record_score, sanity_reasons, score_of, trusted_score
from autopilot.summary import parse_summary


def summary(**sections):
    return parse_summary({"schema": 1, **sections})


def test_clean_summary_has_no_reasons():
    s = summary(metrics={"success_rate": 0.3, "collision_rate": 0.0, "oob_rate": 1.0, "episodes": 10,
                         "mean_reward": -5.0, "episode_length": 150.0},
                trainer={"approx_kl": 0.01, "clipfrac": 0.1, "entropy": -3.0, "explained_var": -2.0,
                         "value_loss": 0.1, "policy_loss": -0.2},
                throughput={"sps": 1000.0, "agent_steps": 10, "epoch": 1, "wall_s": 1.0},
                utilisation={"cpu_pct": 355.0, "gpu_pct": None, "dram_pct": 33.0, "vram_pct": 0.0})
    assert sanity_reasons(s) == []


@pytest.mark.parametrize("section,key,value,expect", [
    ("metrics", "success_rate", 9.38, "metrics.success_rate=9.38 is outside [0, 1]"),
    ("metrics", "success_rate", 1.26e3, "metrics.success_rate=1260 is outside [0, 1]"),
    ("metrics", "oob_rate", -0.1, "metrics.oob_rate=-0.1 is outside [0, 1]"),
    ("metrics", "delivered_frac", 1.5, "metrics.delivered_frac=1.5 is outside [0, 1]"),
    ("metrics", "mean_reward", math.nan, "metrics.mean_reward=nan is not finite"),
    ("trainer", "entropy", math.inf, "trainer.entropy=inf is not finite"),
    ("metrics", "episodes", -3, "metrics.episodes=-3 is not a non-negative whole number"),
    ("metrics", "episodes", 2.5, "metrics.episodes=2.5 is not a non-negative whole number"),
    ("trainer", "clipfrac", 1.2, "trainer.clipfrac=1.2 is outside [0, 1]"),
    ("trainer", "explained_var", 1.5, "trainer.explained_var=1.5 is above 1"),
    ("trainer", "value_loss", -0.5, "trainer.value_loss=-0.5 is negative"),
    ("trainer", "approx_kl", -0.05, "trainer.approx_kl=-0.05 is below"),
    ("utilisation", "gpu_pct", 140.0, "utilisation.gpu_pct=140 is outside [0, 100]"),
    ("throughput", "sps", -1.0, "throughput.sps=-1 is negative"),
    ("throughput", "agent_steps", -10, "throughput.agent_steps=-10 is not a non-negative whole number"),
])
def test_each_broken_definition_is_named(section, key, value, expect):
    reasons = sanity_reasons(summary(**{section: {key: value}}))
    assert len(reasons) == 1 and reasons[0].startswith(expect), reasons


def test_eval_block_and_small_negative_kl():
    assert sanity_reasons(summary(eval={"episodes": 4, "success_rate": 2.0})) == [
        "eval.success_rate=2 is outside [0, 1] (a rate)"]
    # The k1 estimator of approx_kl dips slightly below zero from sampling noise: not a glitch.
    assert sanity_reasons(summary(trainer={"approx_kl": -1e-4})) == []


def test_score_of():
    s = summary(metrics={"success_rate": 0.25, "mean_reward": math.nan}, eval={"success_rate": 0.5})
    assert score_of(s, "success_rate") == 0.25
    assert score_of(s, "eval.success_rate") == 0.5
    assert score_of(s, "mean_reward") is None  # not finite
    assert score_of(s, "missing") is None
    assert score_of(None, "success_rate") is None


def test_record_views_and_best_of_skip_suspect():
    good = make_record(rid(0), metrics={"success_rate": 0.31})
    glitched = make_record(rid(1), metrics={"success_rate": 9.38})
    crashed = make_record(rid(2), status="crashed")
    assert is_suspect(glitched) and not is_suspect(good)
    assert record_score(glitched, "success_rate") == 9.38
    assert trusted_score(glitched, "success_rate") is None
    assert record_score(crashed, "success_rate") is None
    assert best_of([good, glitched, crashed], "success_rate") is good
    # A run the runner marked suspect (e.g. for a reason outside the summary) stays suspect.
    flagged = make_record(rid(3), metrics={"success_rate": 0.9}, suspect=True)
    assert is_suspect(flagged) and best_of([good, flagged], "success_rate") is good
