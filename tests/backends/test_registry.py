"""Backends as plugins: selection, each backend's keys and errors, its launch argv."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autopilot.backends import BACKENDS, available_backends, get_backend
from autopilot.backends import pufferlib as puffer
from autopilot.backends.command import CommandBackend
from autopilot.config import check_config, config_from_dict, load_profile
from autopilot.errors import ConfigError
from autopilot.loop.launch import trainer_argv


def test_builtins_are_registered_and_unknown_names_list_them():
    assert {"builtin", "command", "pufferlib", "sb3"} <= set(available_backends())
    with pytest.raises(ConfigError, match=r"backend 'torchrl' is not registered; use one of builtin, command"):
        config_from_dict({"backend": "torchrl"})


def test_default_backend_is_builtin_and_round_trips():
    cfg = load_profile("quick")
    assert cfg.backend == "builtin" and cfg.extras == {}
    assert config_from_dict(cfg.model_dump()) == cfg


@pytest.mark.parametrize(("change", "needle"), [
    ({"vec": {"num_workers": "auto"}}, "vec.num_workers='auto' is PufferLib's"),
    ({"vec": {"backend": "Ray"}}, "vec.backend='ray' is PufferLib's"),
    ({"train": {"optimizer": "muon"}}, "train.optimizer='muon' is PufferLib's"),
    ({"extras": {"policy": "x"}}, "extras.policy is not a key the builtin backend knows"),
])
def test_builtin_rejects_what_only_pufferlib_understands(change, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        config_from_dict(change)


def test_command_backend_owns_a_foreign_env_and_its_keys():
    with pytest.raises(ConfigError, match="autopilot.trainer_command is not set"):
        config_from_dict({"backend": "command", "env_name": "my_env"})
    cfg = config_from_dict({"backend": "command", "env_name": "my_env", "env": {"walls": 3},
                            "train": {"my_knob": 0.5}, "extras": {"anything": [1]},
                            "autopilot": {"trainer_command": ["t", "--config", "{config}"]}})
    assert cfg.env == {"walls": 3} and cfg.train.model_extra == {"my_knob": 0.5}
    checks = {c.name: c for c in check_config(cfg)}
    assert checks["segments"].status == "skip" and "the trainer's own" in checks["segments"].detail
    assert all(c.ok for c in checks.values())


def test_a_plugin_backend_is_found_by_name():
    class Mine(CommandBackend):
        name = "mine"

    BACKENDS.register("mine", Mine())
    try:
        cfg = config_from_dict({"backend": "mine", "env_name": "x", "autopilot": {"trainer_command": ["t"]}})
        assert get_backend(cfg.backend).name == "mine"
    finally:
        BACKENDS._items.pop("mine")


def test_each_backend_decides_the_child_argv():
    def argv(data):
        cfg = config_from_dict(data)
        return trainer_argv(get_backend(cfg.backend).argv_template(cfg), config=Path("/c.json"), run_dir=Path("/r"),
                            resume=None)

    assert argv({})[1:4] == ["-m", "autopilot", "train"]
    assert argv({"autopilot": {"trainer_command": ["t", "{config}"]}}) == ["t", "/c.json"]
    assert argv({"backend": "sb3", "env_name": "CartPole-v1"})[:3] == [sys.executable, "-m", "autopilot.backends.sb3"]
    puffer_cfg = {"backend": "pufferlib", "env_name": "puffer_squared", "train": {"minibatch_size": 512}}
    assert argv(puffer_cfg)[2] == "autopilot.backends.pufferlib_driver"


def test_without_pufferlib_validation_names_what_it_skipped(monkeypatch):
    monkeypatch.setattr(puffer, "pufferlib_installed", lambda: False)
    puffer._AGENTS.clear()
    cfg = config_from_dict({"backend": "pufferlib", "env_name": "puffer_squared", "env": {"num_envs": 8},
                            "train": {"minibatch_size": 512}})
    checks = {c.name: c for c in check_config(cfg)}
    assert checks["segments"].status == "skip" and "needs PufferLib installed" in checks["segments"].detail
    assert checks["timesteps"].status == "skip"
    assert checks["vec"].status == "ok" and checks["minibatch"].status == "ok"
    # A JSON config has no default.ini under it: the keys PuffeRL reads must be spelled out.
    assert checks["trainer"].status == "fail" and "train.adam_beta1" in checks["trainer"].violations[0]
    with pytest.raises(ConfigError, match="cannot be derived: needs PufferLib installed"):
        get_backend("pufferlib").derive_batch(cfg)


def test_a_true_resume_needs_the_same_backend_settings():
    from autopilot.backends import resume_kind

    data = {"backend": "sb3", "env_name": "CartPole-v1", "extras": {"ppo": {"normalize_advantage": False}}}
    cfg = config_from_dict(data)
    ckpt = {"config": cfg.model_dump(), "resumable": True}
    assert resume_kind(ckpt, cfg) == "continue"
    assert resume_kind({**ckpt, "resumable": False}, cfg) == "warm"
    changed = config_from_dict({**data, "extras": {"ppo": {"normalize_advantage": True}}})
    assert resume_kind(ckpt, changed) == "warm"
