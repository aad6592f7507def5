"""Every invariant, valid and invalid, with the exact rule and alternative in its error text."""

from __future__ import annotations

import pytest

from autopilot.config import check_config, config_from_dict, derive_batch, ensure_valid, resolve_config
from autopilot.config.invariants import derive_minibatch_size, divisors
from autopilot.errors import ConfigError

SEEDS = {
    "env_name": "drone_delivery",
    "env": {"num_envs": 4, "num_drones": 8},
    "vec": {"num_envs": 56, "num_workers": 28},
    "train": {"bptt_horizon": 16, "total_timesteps": 20_000_000, "minibatch_size": 28672,
              "max_minibatch_size": 28672},
}


def cfg(**overrides):
    return config_from_dict(SEEDS, overrides)


def failures(c, sps=None):
    return {ch.name: ch.violations for ch in check_config(c, sps=sps) if ch.status == "fail"}


def test_seeds_topology_passes_with_its_arithmetic():
    c = cfg()
    assert failures(c) == {}
    assert str(derive_batch(c)) == "4×8×56×16 = 28,672"
    assert resolve_config(c).train.batch_size == 28672


@pytest.mark.parametrize(
    ("overrides", "check", "needles"),
    [
        ({"vec.num_workers": 24}, "divisibility",
         ["vec.num_workers=24", "vec.num_envs=56", "vec.num_envs % vec.num_workers == 0",
          "use one of 1, 2, 4, 7, 8, 14, 28, 56"]),
        ({"train.batch_size": 10000}, "segments",
         ["train.batch_size=10000", "segments rule", "4×8×56×16 = 28,672", "use 28672 or \"auto\""]),
        ({"train.minibatch_size": 65536}, "minibatch", ["minibatch ≤ batch", "28,672"]),
        ({"train.minibatch_size": 3000}, "minibatch", ["batch % minibatch == 0", "use one of"]),
        ({"train.minibatch_size": 28672 // 7 * 1, "train.bptt_horizon": 16}, None, []),  # 4096: valid
        ({"train.max_minibatch_size": 5000}, "minibatch", ["whole chunks", "max_minibatch_size 4096"]),
        ({"train.total_timesteps": 1000}, "timesteps", ["train.total_timesteps=1000", "use at least 28672"]),
        ({"train.ent_coef": -1}, "ranges", ["train.ent_coef=-1", "0 or [0.0001, 0.5]", "use e.g. 0"]),
        ({"train.learning_rate": 5.0}, "ranges", ["train.learning_rate=5", "log scale", "use e.g. 0.1"]),
        ({"train.update_epochs": 0}, "ranges", ["train.update_epochs=0", "integer"]),
        ({"train.bptt_horizon": 24}, "ranges", ["train.bptt_horizon=24", "power of two"]),
        ({"vec.num_workers": 0}, "ranges", ["vec.num_workers=0"]),
    ],
)
def test_each_invariant_reports_key_value_rule_and_alternative(overrides, check, needles):
    fails = failures(cfg(**overrides))
    if check is None:
        assert fails == {}
        return
    assert check in fails, fails
    text = " ".join(fails[check])
    for needle in needles:
        assert needle in text, (needle, text)


def test_device_that_does_not_exist_is_an_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fails = failures(cfg(**{"train.device": "cuda"}))
    assert "device" in fails and "use cpu, or auto" in fails["device"][0]


def test_runtime_budget_uses_measured_sps():
    c = cfg(**{"autopilot.max_run_seconds": 100})
    assert "runtime" not in failures(c, sps=1_000_000)  # 20 s
    fails = failures(c, sps=100_000)  # 200 s > 100 s
    assert "use at most 10000000" in fails["runtime"][0]
    skipped = {ch.name: ch.status for ch in check_config(c)}
    assert skipped["runtime"] == "skip"


def test_ensure_valid_raises_every_violation_at_once():
    with pytest.raises(ConfigError) as exc:
        ensure_valid(cfg(**{"vec.num_workers": 24, "train.total_timesteps": 5}))
    assert len(exc.value.violations) == 2


def test_auto_minibatch_is_whole_segments_dividing_the_batch():
    for batch, bptt, mmb in [(28672, 16, 32768), (8192, 32, 32768), (64, 16, 64), (16, 16, 8)]:
        mb = derive_minibatch_size(batch, bptt, mmb)
        assert batch % mb == 0 and mb % bptt == 0 and mb <= batch
    assert derive_minibatch_size(28672, 16, 32768) == 7168  # four minibatches


def test_divisors():
    assert divisors(56) == [1, 2, 4, 7, 8, 14, 28, 56]
