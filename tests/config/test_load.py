"""Loading: JSON round trip, profiles, overrides, diffs, one-line errors."""

from __future__ import annotations

import json

import pytest

from autopilot.config import (
    apply_overrides,
    config_from_dict,
    diff_configs,
    flatten,
    load_config,
    load_profile,
    parse_assignment,
    save_config,
)
from autopilot.config.model import Config
from autopilot.errors import ConfigError


def test_json_round_trip(tmp_path):
    c = load_profile("quick", {"train.ent_coef": 0.05, "vec.backend": "Multiprocessing"})
    path = save_config(c, tmp_path / "c.json")
    again = load_config(path)
    assert again == c
    assert again.vec.backend == "multiprocessing"
    assert json.loads(path.read_text())["train"]["ent_coef"] == 0.05


@pytest.mark.parametrize("name", ["quick", "full"])
def test_profiles_are_valid_drone_delivery_configs(name):
    from autopilot.config import ensure_valid

    c = ensure_valid(load_profile(name))
    assert c.env_name == "drone_delivery"
    assert isinstance(c.train.batch_size, int)


def test_override_merge_and_diff():
    base = load_profile("quick")
    new = config_from_dict(base.model_dump(), {"train.ent_coef": 0.12, "train.update_epochs": 8})
    changes = [str(c) for c in diff_configs(base, new)]
    assert changes == [f"train.ent_coef: {base.train.ent_coef:g} -> 0.12",
                       f"train.update_epochs: {base.train.update_epochs} -> 8"]
    assert diff_configs(base, base) == []


def test_overrides_into_a_scalar_are_rejected():
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"train": {"seed": 1}}, {"train.seed.x": 2})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("train.ent_coef=0.05", 0.05), ("train.total_timesteps=100_000_000", 100_000_000),
     ("train.anneal_lr=True", True), ("train.anneal_lr=false", False), ("train.batch_size=auto", "auto"),
     ("train.learning_rate=3e-4", 3e-4)],
)
def test_assignments_parse_like_pufferlib(text, expected):
    assert parse_assignment(text)[1] == expected


def test_assignment_without_equals_is_a_clear_error():
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignment("train.ent_coef")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"train": {"nosuchkey": 1}}, "train.nosuchkey is not a known key"),
        ({"nosuchsection": {}}, "nosuchsection is not a known key"),
        ({"env": {"warp_drive": 1}}, "env.warp_drive is not a known key"),
        ({"train": {"learning_rate": "fast"}}, "train.learning_rate='fast' is invalid"),
        ({"train": {"optimizer": "sgd"}}, "train.optimizer='sgd' is invalid"),
        ({"env_name": "nope"}, "env_name='nope' is not a registered environment; use one of"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_configs_give_one_line_errors(data, needle):
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_malformed_json_names_file_line_and_column(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"train": {"ent_coef": 0.1,}')
    with pytest.raises(ConfigError, match=r"bad.json is malformed JSON at line 1 column \d+"):
        load_config(p)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.json")


def test_flatten_names_every_key():
    flat = flatten(Config().model_dump())
    assert flat["train.ent_coef"] == 0.01 and flat["vec.num_workers"] == 1 and "env.num_drones" in flat
