"""Every .ini PufferLib 3.0.0 ships validates under the pufferlib backend, or fails with PufferLib's reason.

The sdist is fetched from the package index once and kept in pytest's cache folder. PufferLib itself is
treated as not installed (the CI case): agent counting is then a named, skipped check.
"""

from __future__ import annotations

import configparser
import hashlib
import re
import tarfile
import urllib.request
from pathlib import Path

import pytest

from autopilot.backends import pufferlib as backend
from autopilot.config import check_config, load_config
from autopilot.errors import ConfigError

SDIST = "pufferlib-3.0.0.tar.gz"
SHA256 = "7df3a3e3f5f894d78d2a1f5374097890aec01473183e748abefe4f3faa10eaa9"
# Files PufferLib 3.0.0 itself cannot load or train, with the reason it gives.
PUFFERLIB_FAILS = {
    "default.ini": "pufferlib.environments.None",
    "starcraft.ini": "No config for env_name",
    "crafter.ini": "batch_size=6144 must be >= minibatch_size 8192",
    "open_spiel.ini": "batch_size=4096 must be >= minibatch_size 8192",
    # [sweep.metric] beside default.ini's [sweep] metric: PufferLib's load_config raises AttributeError.
    **{name: "section [sweep.metric] collides with the key metric of [sweep]"
       for name in ("gpudrive.ini", "gvgai.ini", "kinetix.ini", "ocean/oldgrid.ini")},
}


def _sdist(cache_dir: Path) -> Path:
    path = cache_dir / SDIST
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != SHA256:
        page = urllib.request.urlopen("https://pypi.org/simple/pufferlib/", timeout=60).read().decode()
        url = re.search(r'href="([^"#]*/' + re.escape(SDIST) + ')', page).group(1)
        urllib.request.urlretrieve(url, path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    return path


@pytest.fixture(scope="module")
def config_tree(request, tmp_path_factory) -> Path:
    # pytest's cache keeps the download between runs; with the cache plugin off, a temp folder does.
    store = getattr(request.config, "cache", None)
    cache = Path(store.mkdir("pufferlib-sdist")) if store is not None else tmp_path_factory.mktemp("pufferlib-sdist")
    tree = cache / "config"
    if not (tree / "default.ini").exists():
        with tarfile.open(_sdist(cache)) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".ini") and "/pufferlib/config/" in member.name:
                    member.name = member.name.split("/pufferlib/config/", 1)[1]
                    tar.extract(member, tree, filter="data")
    return tree


def test_every_shipped_ini_validates_or_fails_as_pufferlib_does(config_tree, monkeypatch):
    monkeypatch.setattr(backend, "pufferlib_installed", lambda: False)
    files = sorted(config_tree.rglob("*.ini"))
    assert len(files) == 67
    outcomes: dict[str, str] = {}
    for path in files:
        try:
            cfg = load_config(path, {"train.device": "cpu"})  # this machine has no GPU
        except ConfigError as exc:
            outcomes[path.relative_to(config_tree).as_posix()] = str(exc)
            continue
        parser = configparser.ConfigParser()
        parser.read(path)
        assert cfg.backend == "pufferlib" and cfg.env_name == parser["base"]["env_name"].split()[0], path
        checks = check_config(cfg)
        failed = [v for c in checks for v in c.violations]
        outcomes[path.relative_to(config_tree).as_posix()] = "; ".join(failed) if failed else "ok"
        skipped = {c.name for c in checks if c.status == "skip"}
        if cfg.train.batch_size == "auto":
            assert "segments" in skipped and "needs PufferLib installed" in next(c.detail for c in checks
                                                                                 if c.name == "segments")
    bad = {name: why for name, why in outcomes.items() if why != "ok"}
    assert set(bad) == set(PUFFERLIB_FAILS), bad
    for name, reason in PUFFERLIB_FAILS.items():
        assert reason in bad[name], (name, bad[name])


def test_defaults_come_from_pufferlibs_default_ini(config_tree):
    cfg = load_config(config_tree / "ocean" / "squared.ini")
    assert cfg.env_name == "puffer_squared"
    assert cfg.train.update_epochs == 1 and cfg.train.optimizer == "muon"  # default.ini, not ours
    assert cfg.train.learning_rate == 0.05 and cfg.env["num_envs"] == 4096  # the file's own
    assert cfg.vec.num_workers == "auto" and cfg.train.model_extra["adam_beta1"] == 0.95
    assert cfg.extras["rnn_name"] == "Recurrent"
    assert cfg.autopilot.objective == "score"  # default.ini's [sweep] metric
    cartpole = load_config(config_tree / "ocean" / "cartpole.ini")
    assert cartpole.autopilot.objective == "episode_length"  # the file's own [sweep] metric


def test_sweep_blocks_are_priors_not_limits(config_tree, monkeypatch):
    monkeypatch.setattr(backend, "pufferlib_installed", lambda: False)
    # cartpole.ini's learning_rate 0.05 lies outside its own sweep block [0.0001, 0.001].
    cfg = load_config(config_tree / "ocean" / "cartpole.ini", {"train.device": "cpu"})
    assert cfg.sweep["train.learning_rate"].max == 0.001 and cfg.train.learning_rate == 0.05
    assert not [v for c in check_config(cfg) for v in c.violations]
    from autopilot.config import config_space

    lr = config_space(cfg)["train.learning_rate"]
    assert (lr.prior.low, lr.prior.high, lr.prior.center) == (0.0001, 0.001, 0.00025)  # the advisors' prior
    assert lr.high == 0.1  # the limit stays the knob's own


def test_pufferlib_rules_name_key_value_and_alternative(config_tree, monkeypatch):
    monkeypatch.setattr(backend, "pufferlib_installed", lambda: False)
    cfg = load_config(config_tree / "ocean" / "squared.ini",
                      {"train.device": "cpu", "vec.num_envs": 6, "vec.num_workers": 4, "train.optimizer": "adamw",
                       "train.precision": "float16"})
    failed = " | ".join(v for c in check_config(cfg) for v in c.violations)
    assert "vec.num_workers=4 does not divide vec.num_envs=6" in failed and "use one of 1, 2, 3, 6" in failed
    assert "Unknown optimizer: adamw" in failed and "Invalid precision" in failed
    with pytest.raises(ConfigError, match=r"train.adam_beta1='x' must be float"):
        load_config(config_tree / "ocean" / "squared.ini", {"train.adam_beta1": "x"})
