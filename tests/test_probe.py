"""`autopilot probe`: the sweep's grid, the choice of the winner, the proposal it writes, and one real
measurement with the built-in trainer."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from autopilot.config import check_config, config_from_dict, derive_batch, load_config
from autopilot.errors import ConfigError
from autopilot.probe import (
    Measurement,
    Topology,
    measure,
    pick,
    probe_command,
    probe_config,
    table,
    topologies,
    winning_override,
)
from autopilot.workspace.layout import init_workspace


def _tiny():
    return load_config("quick", {"env.num_envs": 8, "env.num_drones": 2, "vec.num_envs": 2, "train.bptt_horizon": 16})


def test_grid_respects_cores_and_divisibility():
    cfg = _tiny()
    grid = topologies(cfg, cores=6)
    assert {t.num_workers for t in grid} == {1, 2, 4, 6}
    assert all(t.num_envs % t.num_workers == 0 for t in grid)
    assert {t.arenas for t in grid} == {4, 8, 16}  # ½×, 1×, 2× the agents per env object
    assert len(grid) == 4 * 3 * 3
    assert {t.num_workers for t in topologies(cfg, cores=1)} == {1}


def test_probe_config_is_short_fresh_and_valid():
    cfg = probe_config(_tiny(), Topology(2, 4, 16), epochs=3)
    assert (cfg.vec.num_workers, cfg.vec.num_envs, cfg.env["num_envs"]) == (2, 4, 16)
    assert cfg.train.total_timesteps == 3 * derive_batch(cfg).batch == 3 * 4 * 16 * 2 * 16
    assert cfg.autopilot.eval_episodes == 0 and cfg.autopilot.resume_mode == "fresh"
    assert all(c.ok for c in check_config(cfg) if c.name != "runtime")


def _m(w, e, sps, spread, error=""):
    return Measurement(Topology(w, e, 8), agents=e * 16, sps=sps, spread=spread, error=error)


def test_pick_takes_the_highest_stable_sps():
    fast_unstable = _m(2, 4, 9000.0, 0.9)
    steady = _m(2, 2, 7000.0, 0.1)
    slower = _m(1, 1, 5000.0, 0.05)
    failed = _m(1, 2, 9500.0, 0.0, error="only 1 epoch(s) in 5s (exit 1)")
    assert pick([slower, fast_unstable, steady, failed]) is steady
    assert pick([fast_unstable, failed]) is None
    tie_a, tie_b = _m(2, 2, 7000.0, 0.1), _m(1, 1, 7000.0, 0.1)
    assert pick([tie_a, tie_b]) is tie_b  # fewer processes on a tie
    console = Console(record=True, width=160)
    console.print(table([slower, steady, fast_unstable], steady, "cpu"))
    text = console.export_text()
    assert "★ winner" in text and "7,000" in text and "90%" in text


def test_winning_override_passes_every_invariant_or_is_refused():
    base = _tiny()
    ok = winning_override(base, _m(2, 4, 8000.0, 0.1))
    assert ok == {"vec.num_workers": 2, "vec.num_envs": 4, "env.num_envs": 8}
    cfg = config_from_dict(base.model_dump(), ok | {"train.batch_size": "auto", "train.minibatch_size": "auto"})
    assert all(c.ok for c in check_config(cfg) if c.name != "runtime")
    with pytest.raises(ConfigError, match="vec.num_workers=3 does not divide vec.num_envs=4"):
        winning_override(base, Measurement(Topology(3, 4, 8), sps=1.0, spread=0.0))


def test_measure_trains_one_topology_with_the_real_trainer(tmp_path):
    m = measure(_tiny(), Topology(1, 2, 8), tmp_path, seconds=60)
    assert not m.error, m.error
    assert len(m.epochs) == 3  # four epochs, the first one is warm-up
    assert m.sps is not None and m.sps > 0 and m.agents == 2 * 8 * 2


def test_measure_reports_an_invalid_topology_without_running(tmp_path):
    m = measure(_tiny(), Topology(2, 3, 8), tmp_path, seconds=60)
    assert m.sps is None and m.error.startswith("invalid:") and "vec.num_workers=2" in m.error
    assert not list(tmp_path.iterdir())


def test_probe_command_rejects_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="--seconds"):
        probe_command(None, tmp_path / "ws", mode="quick", seconds=0, cores=None, console=Console())
    with pytest.raises(ConfigError, match="--cores"):
        probe_command(None, tmp_path / "ws", mode="quick", seconds=5, cores=0, console=Console())


@pytest.mark.slow
def test_probe_command_stages_the_winner(tmp_path):
    cfg_path = tmp_path / "tiny.json"
    cfg_path.write_text(json.dumps(_tiny().model_dump()))
    console = Console(record=True, width=200)
    winner = probe_command(str(cfg_path), tmp_path / "ws", mode="quick", seconds=60, cores=1, console=console)
    assert winner is not None and winner.stable
    ws = init_workspace(tmp_path / "ws")
    staged = json.loads(ws.next_config.read_text())
    assert staged == winner.topology.override()
    assert "★ winner" in console.export_text()
