"""The `constant` advisor: the null hypothesis (keep the config, keep training)."""

import pytest
from ledgers import make_record, rid
from test_advisors import accepted, context

from autopilot.decide.advisors import available_advisors, get_advisor


def constant(ctx, k=None):
    adv = get_advisor("constant")
    return adv.propose(ctx) if k is None else adv.propose_many(ctx, k)


def test_registered_and_changes_only_the_seed_continuing_from_latest():
    assert "constant" in available_advisors()
    hist = [make_record(rid(0), {"train.seed": 3}, metrics={"success_rate": 0.2}),
            make_record(rid(1), {"train.seed": 7, "train.ent_coef": 0.05}, metrics={"success_rate": 0.4})]
    ctx = context(hist)
    p = constant(ctx)
    assert p.advisor == "constant"
    assert p.changes == {"train.seed": 8}  # above every seed of the ledger, nothing else moves
    assert (p.resume_mode, p.resume_from) == ("continue", "latest")
    v = accepted(ctx, p)
    assert v.config.train.ent_coef == 0.05 and v.config.train.learning_rate == hist[-1].config.train.learning_rate
    assert not p.trust_region_override and not p.seed_repeat


@pytest.mark.parametrize("latest", [
    {"status": "diverged", "metrics": {"success_rate": 0.0}},
    {"status": "completed", "metrics": {"success_rate": 1.5}},  # a glitched rate: suspect
])
def test_broken_or_suspect_latest_warm_starts_from_the_trusted_best(latest):
    hist = [make_record(rid(0), metrics={"success_rate": 0.5}),
            make_record(rid(1), {"train.seed": 2}, status=latest["status"], metrics=latest["metrics"])]
    ctx = context(hist)
    p = constant(ctx)
    assert (p.resume_mode, p.resume_from) == ("continue", "best")
    assert any(f"best {rid(0)}" in r for r in p.rationale)
    accepted(ctx, p)


def test_fresh_start_when_the_only_run_is_broken():
    hist = [make_record(rid(0), status="crashed")]
    p = constant(context(hist))
    assert p.resume_mode == "fresh" and p.changes == {"train.seed": 2}


def test_propose_many_gives_k_seeds_of_the_same_config():
    hist = [make_record(rid(0), {"train.seed": 4}, metrics={"success_rate": 0.3})]
    ctx = context(hist)
    props = constant(ctx, 3)
    assert [p.changes for p in props] == [{"train.seed": 5}, {"train.seed": 6}, {"train.seed": 7}]
    for p in props:
        accepted(ctx, p)
    with pytest.raises(ValueError, match="k >= 1"):
        constant(ctx, 0)
