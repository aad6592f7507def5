"""PufferLib .ini import: values parse as PufferLib parses them; sweep sections become the search space."""

from __future__ import annotations

import pytest

from autopilot.config import config_space, load_config
from autopilot.errors import ConfigError

INI = """\
[base]
backend = builtin
package = ocean
env_name = puffer_drone_delivery
policy_name = Policy

[vec]
num_envs = 56
num_workers = 28
backend = Multiprocessing

[env]
num_envs = 4
num_drones = 8

[train]
total_timesteps = 100_000_000
learning_rate = 0.0025
anneal_lr = True
bptt_horizon = 16
batch_size = auto
ent_coef = 0.12

[sweep]
method = Protein
metric = success_rate

[sweep.train.learning_rate]
distribution = log_normal
min = 0.0001
mean = 0.003
max = 0.01
scale = auto

[sweep.train.update_epochs]
distribution = int_uniform
min = 1
max = 8
"""


def test_pufferlib_ini_maps_values_and_sweep(tmp_path):
    p = tmp_path / "drone.ini"
    p.write_text(INI)
    c = load_config(p)
    assert c.env_name == "drone_delivery"
    assert c.train.total_timesteps == 100_000_000
    assert c.train.anneal_lr is True and c.train.batch_size == "auto"
    assert c.vec.backend == "multiprocessing"
    space = config_space(c)
    lr = space["train.learning_rate"]
    assert (lr.scale, lr.low, lr.high) == ("log", 0.0001, 0.01)
    assert space["train.update_epochs"].scale == "int" and space["train.update_epochs"].high == 8


def test_ini_sweep_range_is_enforced(tmp_path):
    p = tmp_path / "drone.ini"
    p.write_text(INI.replace("learning_rate = 0.0025", "learning_rate = 0.05"))
    from autopilot.config import check_config

    bad = [v for ch in check_config(load_config(p)) for v in ch.violations]
    assert any("train.learning_rate=0.05 is outside its range [0.0001, 0.01]" in v for v in bad)


@pytest.mark.parametrize(
    ("text", "needle"),
    [("[base]\nbackend = builtin\n[weird]\nx = 1\n", "section [weird] is not known"),
     ("[base]\nbackend = builtin\n[train]\nwarp = 1\n", "train.warp is not a known key"),
     ("[base]\nbackend = builtin\nfoo = 1\n", "[base] foo is not a known key"),
     ("[base]\nenv_name = my_env\n[train]\nlearning_rate = fast\n", "train.learning_rate='fast' is invalid"),
     ("[base]\npackage = ocean\n", "[base] env_name is not set"),
     ("[train\nx=1", "not a valid .ini file")],
)
def test_bad_ini_is_a_one_line_error(tmp_path, text, needle):
    p = tmp_path / "bad.ini"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert needle in str(exc.value)
