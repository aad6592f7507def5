import math

import pytest
from ledgers import SEEDS_TRAINER, make_record, rid

from autopilot.decide.diagnose import THRESHOLDS, UNIT_GAUSSIAN_ENTROPY, Thresholds, diagnose, policy_std
from autopilot.decide.records import NoiseBand

BAND = NoiseBand(value=0.05, measured=True, detail="test")


def codes(history, **kw):
    kw.setdefault("noise", BAND)
    return {f.code: f for f in diagnose(history, **kw)}


def test_healthy_run_has_no_findings():
    assert codes([make_record(rid(0))]) == {}


def test_unit_gaussian_constant():
    assert UNIT_GAUSSIAN_ENTROPY == pytest.approx(1.4189, abs=1e-4)


def test_seeds_run_fires_updates_too_small_and_entropy_too_high_with_thresholds():
    found = codes([make_record(rid(0), {"train.ent_coef": 0.12}, metrics={"success_rate": 0.0},
                               trainer=SEEDS_TRAINER)])
    small = found["updates_too_small"]
    assert small.evidence["approx_kl"] == 0.0002 and small.evidence["kl_small"] == THRESHOLDS.kl_small
    assert small.evidence["clipfrac_small"] == THRESHOLDS.clipfrac_small
    assert {m.key for m in small.moves} == {"train.update_epochs", "train.learning_rate", "train.clip_coef"}
    high = found["entropy_too_high"]
    assert high.evidence["act_dim"] == 4 and high.evidence["per_dim"] == pytest.approx(8.182, abs=1e-3)
    assert high.evidence["per_dim_limit"] == pytest.approx(1.419, abs=1e-3)
    assert "8.18 nats/dim > 1.419" in high.evidence["rule"]
    assert high.moves[0].key == "train.ent_coef" and high.moves[0].direction == "down"
    assert "updates_too_large" not in found and "entropy_collapsed" not in found


@pytest.mark.parametrize("kl,cf,expect", [
    (0.0005, 0.005, "updates_too_small"),
    (0.0005, 0.05, None),  # clipfrac alone is not near zero
    (0.01, 0.1, None),
    (0.08, 0.1, "updates_too_large"),
    (0.01, 0.45, "updates_too_large"),
])
def test_update_size(kl, cf, expect):
    found = codes([make_record(rid(0), trainer={"approx_kl": kl, "clipfrac": cf})])
    got = {"updates_too_small", "updates_too_large"} & set(found)
    assert got == ({expect} if expect else set())


def test_entropy_is_judged_per_action_dimension():
    # 6 nats is diffuse for one action dim (σ ≈ 98) but tight for 8 dims (0.75 nats/dim, σ ≈ 0.51).
    assert "entropy_too_high" in codes([make_record(rid(0), trainer={"entropy": 6.0, "act_dim": 1})])
    assert "entropy_too_high" not in codes([make_record(rid(0), trainer={"entropy": 6.0, "act_dim": 8})])


def test_entropy_collapsed_fires_per_dimension():
    found = codes([make_record(rid(0), trainer={"entropy": -12.0, "act_dim": 4})])
    assert found["entropy_collapsed"].moves[0].direction == "up"


def _entropy_curve(start: float, end: float, n: int = 16) -> list[dict]:
    return [{"epoch": i, "agent_steps": 1000 * (i + 1), "entropy": start + (end - start) * i / (n - 1),
             "success_rate": 0.0} for i in range(n)]


def test_missing_act_dim_never_gives_a_severe_entropy_verdict():
    """An external trainer's summary without act_dim: 9.5 nats is not "σ = 10⁴, the policy is noise"."""
    no_curve = make_record(rid(0), trainer={"entropy": 9.5, "act_dim": None})
    assert "entropy_too_high" not in codes([no_curve])  # nothing to judge it against: no verdict
    flat = make_record(rid(0), trainer={"entropy": 9.5, "act_dim": None}, curve=_entropy_curve(9.6, 9.5))
    f = codes([flat])["entropy_too_high"]
    assert f.severity == "warn" and f.assumed and "act_dim is missing" in f.assumed[0]
    assert "relative" in f.evidence["rule"] and abs(f.evidence["entropy_start"] - 9.59) < 0.01
    narrowing = make_record(rid(0), trainer={"entropy": 6.0, "act_dim": None}, curve=_entropy_curve(9.6, 6.0))
    assert "entropy_too_high" not in codes([narrowing])
    assert policy_std(flat.trainer_summary) is None  # so no checkpoint is refused as "noise"


def test_an_assumed_fact_caps_a_finding_at_warning():
    from autopilot.decide.records import Finding

    assert Finding(code="x", severity="error", assumed=["act_dim"]).severity == "warn"
    assert Finding(code="x", severity="error").severity == "error"


def test_discrete_entropy_relative_to_ln_n():
    n = 6
    assert "entropy_too_high" in codes([make_record(rid(0), trainer={"entropy": 0.99 * math.log(n), "act_n": n})])
    assert "entropy_collapsed" in codes([make_record(rid(0), trainer={"entropy": 0.01 * math.log(n), "act_n": n})])
    assert not {"entropy_too_high", "entropy_collapsed"} & set(
        codes([make_record(rid(0), trainer={"entropy": 0.5 * math.log(n), "act_n": n})]))


def test_value_fit_poor():
    assert codes([make_record(rid(0), trainer={"explained_var": 0.05})])["value_fit_poor"].evidence[
        "explained_var_low"] == 0.2
    assert "value_fit_poor" in codes([make_record(rid(0), trainer={"value_loss": 50.0})])
    assert "value_fit_poor" not in codes([make_record(rid(0), trainer={"explained_var": 0.5, "value_loss": 1.0})])


def test_status_findings():
    assert codes([make_record(rid(0), status="diverged")])["diverged"].moves[0].key == "train.learning_rate"
    assert "stalled" in codes([make_record(rid(0), status="stalled")])
    crashed = codes([make_record(rid(0), status="crashed", error="Traceback ... OOM")])["crashed"]
    assert crashed.severity == "error" and "OOM" in crashed.evidence["error"]
    assert "crashed" in codes([make_record(rid(0), status="failed")])
    assert not {"diverged", "stalled", "crashed"} & set(codes([make_record(rid(0), status="interrupted")]))


def test_metric_glitch_fires_on_9_38_and_not_on_clean():
    found = codes([make_record(rid(0), metrics={"success_rate": 9.38})])
    assert "metric_glitch" in found and "9.38 is outside [0, 1]" in found["metric_glitch"].evidence["reasons"]
    assert "metric_glitch" not in codes([make_record(rid(0), metrics={"success_rate": 1.0})])


def test_regression_vs_best_respects_the_band():
    best = make_record(rid(0), {"train.ent_coef": 0.01}, metrics={"success_rate": 0.31})
    worse = make_record(rid(1), {"train.ent_coef": 0.06}, metrics={"success_rate": 0.20})
    near = make_record(rid(1), {"train.ent_coef": 0.06}, metrics={"success_rate": 0.28})
    found = codes([best, worse], best=best)["regression_vs_best"]
    assert found.evidence["gap"] == pytest.approx(0.11) and found.evidence["noise_band"] == 0.05
    assert [(m.key, m.direction, m.value) for m in found.moves] == [("train.ent_coef", "revert", 0.01)]
    assert "regression_vs_best" not in codes([best, near], best=best)
    # A suspect latest run is never judged against the best (metric_glitch says why instead).
    glitched = make_record(rid(1), metrics={"success_rate": 9.38})
    assert "regression_vs_best" not in codes([best, glitched], best=best)


def test_plateau_needs_k_runs_within_band():
    flat = [make_record(rid(i), {"train.seed": i}, metrics={"success_rate": 0.30 + 0.01 * i}) for i in range(3)]
    assert codes(flat)["plateau"].evidence["plateau_runs"] == THRESHOLDS.plateau_runs
    assert "plateau" not in codes(flat[:2])
    rising = [make_record(rid(i), {"train.seed": i}, metrics={"success_rate": 0.1 * i}) for i in range(3)]
    assert "plateau" not in codes(rising)
    assert "plateau" in codes(flat, thresholds=Thresholds(plateau_runs=2))


def test_throughput_drop_against_same_topology():
    hist = [make_record(rid(i), {"train.seed": i}, sps=125_000.0) for i in range(3)]
    slow = make_record(rid(3), {"train.seed": 3}, sps=80_000.0)
    ev = codes(hist + [slow])["throughput_drop"].evidence
    assert ev["median_sps"] == 125_000 and ev["drop_limit"] == THRESHOLDS.throughput_drop_frac
    assert "throughput_drop" not in codes(hist + [make_record(rid(3), {"train.seed": 3}, sps=110_000.0)])
    # A different topology is not compared (fewer envs is expected to be slower).
    other = make_record(rid(3), {"vec.num_envs": 28}, sps=60_000.0)
    assert "throughput_drop" not in codes(hist + [other])


def test_env_specific_findings():
    found = codes([make_record(rid(0), metrics={"oob_rate": 0.85, "collision_rate": 0.3})])
    oob = found["high_oob"]
    assert oob.evidence["oob_high"] == THRESHOLDS.oob_high
    assert oob.moves[0].key == "train.gamma" and oob.moves[0].value == pytest.approx(0.995)
    assert found["high_collisions"].evidence["collision_rate"] == 0.3
    quiet = codes([make_record(rid(0), metrics={"oob_rate": 0.2, "collision_rate": 0.01})])
    assert not {"high_oob", "high_collisions"} & set(quiet)
    # Env-specific codes do not fire when the env does not report the metric.
    rec = make_record(rid(0))
    rec.trainer_summary.metrics.pop("oob_rate")
    assert "high_oob" not in codes([rec])


def test_default_band_is_used_when_none_given():
    best = make_record(rid(0), metrics={"success_rate": 0.31})
    worse = make_record(rid(1), {"train.ent_coef": 0.06}, metrics={"success_rate": 0.25})
    found = {f.code: f for f in diagnose([best, worse], best=best)}
    # assumed band max(0.02, 10% of 0.31) = 0.031 < gap 0.06
    assert found["regression_vs_best"].evidence["band"] == "assumed"
    assert found["regression_vs_best"].evidence["noise_band"] == pytest.approx(0.031)
