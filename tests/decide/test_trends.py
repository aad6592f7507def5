import pytest
from ledgers import ent_coef_ledger, make_config, make_record, rid

from autopilot.config.load import config_space
from autopilot.decide.trends import (
    BAND,
    knob_trends,
    material_config,
    material_diff,
    noise_band,
    seed_groups,
    trend_line,
)

SPACE = config_space(make_config())


def test_material_config_ignores_bookkeeping_and_fresh_resume_source():
    a = make_config({"autopilot.save_strategy": "best", "autopilot.max_run_seconds": 100.0})
    b = make_config({"autopilot.save_strategy": "all", "autopilot.max_run_seconds": 900.0,
                     "train.checkpoint_interval": 5})
    assert material_diff(a, b) == {}
    fresh_a = make_config({"autopilot.resume_mode": "fresh", "autopilot.resume_from": "latest"})
    fresh_b = make_config({"autopilot.resume_mode": "fresh", "autopilot.resume_from": "best"})
    assert material_config(fresh_a) == material_config(fresh_b)
    assert material_diff(make_config(), make_config({"train.ent_coef": 0.05})) == {"train.ent_coef": (0.01, 0.05)}


def test_band_assumed_without_seed_repeats():
    band = noise_band(ent_coef_ledger(), "success_rate", reference=0.31)
    assert not band.measured and band.value == pytest.approx(0.031)
    assert "not yet measured" in band.detail and "10% of |best 0.31|" in band.detail
    empty = noise_band([], "success_rate")
    assert empty.value == BAND.default_abs and "no trusted best yet" in empty.detail


def test_band_measured_from_runs_differing_only_in_seed():
    runs = [make_record(rid(0), {"train.seed": 1}, metrics={"success_rate": 0.30}),
            make_record(rid(1), {"train.seed": 2}, metrics={"success_rate": 0.40}),
            make_record(rid(2), {"train.seed": 3, "train.ent_coef": 0.05}, metrics={"success_rate": 0.9}),
            # a seed repeat that is suspect does not count
            make_record(rid(3), {"train.seed": 4}, metrics={"success_rate": 9.38})]
    groups = seed_groups(runs, "success_rate")
    assert [[r.run_id for r, _ in g] for g in groups] == [[rid(0), rid(1)]]
    band = noise_band(runs, "success_rate")
    # σ of (0.30, 0.40) = 0.0707; band = 2σ
    assert band.measured and band.value == pytest.approx(2 * 0.070711, abs=1e-5)
    assert band.groups == 1 and band.runs == 2


def test_measured_band_has_a_floor():
    runs = [make_record(rid(i), {"train.seed": i}, metrics={"success_rate": 0.0}) for i in range(3)]
    band = noise_band(runs, "success_rate")
    assert band.measured and band.value == BAND.floor


def test_ent_coef_trend_lower_is_better():
    hist = ent_coef_ledger()
    trends = {t.key: t for t in knob_trends(hist, SPACE, "success_rate", anchor=hist[0], band=0.031)}
    t = trends["train.ent_coef"]
    assert [p["value"] for p in t.points] == [0.01, 0.06, 0.12]
    assert [p["score"] for p in t.points] == [0.31, 0.0, 0.12]
    assert t.best_value == 0.01 and t.best_score == 0.31
    # 0.06 scored below 0.12 beyond the band, so the curve is not monotone: best at the low edge, mixed.
    assert t.direction == "mixed"
    # Non-tunable differences (total_timesteps) are listed, not counted as confounders.
    assert t.points[1]["also"]["train.total_timesteps"] == 20_000_000


def test_monotone_trend_directions_and_flat():
    def ledger(scores):
        return [make_record(rid(i), {"train.ent_coef": v}, metrics={"success_rate": s})
                for i, (v, s) in enumerate(scores)]

    hist = ledger([(0.01, 0.40), (0.05, 0.20), (0.10, 0.10)])
    (t,) = knob_trends(hist, SPACE, "success_rate", anchor=hist[0], band=0.03)
    assert t.direction == "lower is better"
    hist = ledger([(0.01, 0.10), (0.05, 0.20), (0.10, 0.40)])
    (t,) = knob_trends(hist, SPACE, "success_rate", anchor=hist[2], band=0.03)
    assert t.direction == "higher is better" and t.best_value == 0.10
    hist = ledger([(0.01, 0.30), (0.05, 0.31), (0.10, 0.29)])
    (t,) = knob_trends(hist, SPACE, "success_rate", anchor=hist[1], band=0.03)
    assert t.direction == "flat"


def test_trend_points_exclude_confounded_and_suspect_runs():
    hist = [
        make_record(rid(0), {"train.ent_coef": 0.01}, metrics={"success_rate": 0.3}),
        make_record(rid(1), {"train.ent_coef": 0.05}, metrics={"success_rate": 0.2}),
        # differs from the anchor in ent_coef AND two other tunable knobs: not "mainly" in ent_coef
        make_record(rid(2), {"train.ent_coef": 0.10, "train.gamma": 0.95, "train.clip_coef": 0.3},
                    metrics={"success_rate": 0.5}),
        make_record(rid(3), {"train.ent_coef": 0.20}, metrics={"success_rate": 9.38}),  # suspect
    ]
    trends = {t.key: t for t in knob_trends(hist, SPACE, "success_rate", anchor=hist[0], band=0.02)}
    assert [p["run_id"] for p in trends["train.ent_coef"].points] == [rid(0), rid(1)]
    assert "train.gamma" not in trends  # its only other value comes from the confounded run


def test_repeated_values_are_averaged_and_no_trend_from_one_run():
    hist = [make_record(rid(0), {"train.update_epochs": 4, "train.seed": 1}, metrics={"success_rate": 0.2}),
            make_record(rid(1), {"train.update_epochs": 4, "train.seed": 2}, metrics={"success_rate": 0.4}),
            make_record(rid(2), {"train.update_epochs": 8}, metrics={"success_rate": 0.1})]
    (t,) = knob_trends(hist, SPACE, "success_rate", anchor=hist[1], band=0.05)
    assert t.best_value == 4 and t.best_score == pytest.approx(0.3)
    assert knob_trends(hist[:1], SPACE, "success_rate", anchor=hist[0], band=0.05) == []


def test_trend_confounded_when_no_two_runs_differ_in_the_knob_alone():
    # The seeds: the 0.01 run also used lr 0.002, every 0.12 run lr 0.0025: no clean comparison.
    hist = [make_record(rid(0), {"train.ent_coef": 0.01, "train.learning_rate": 0.002},
                        metrics={"success_rate": 0.31}),
            make_record(rid(1), {"train.ent_coef": 0.12}, metrics={"success_rate": 0.0})]
    trends = {t.key: t for t in knob_trends(hist, SPACE, "success_rate", anchor=hist[0], band=0.03)}
    assert trends["train.ent_coef"].direction == "confounded"
    assert trends["train.learning_rate"].direction == "confounded"
    assert "no direction is claimed" in trend_line(trends["train.ent_coef"], 0.03)
    # One more run that differs from run 1 in ent_coef alone makes the comparison clean.
    hist.append(make_record(rid(2), {"train.ent_coef": 0.06}, metrics={"success_rate": 0.1}))
    trends = {t.key: t for t in knob_trends(hist, SPACE, "success_rate", anchor=hist[0], band=0.03)}
    assert trends["train.ent_coef"].direction == "lower is better"
    assert trends["train.learning_rate"].direction == "confounded"
