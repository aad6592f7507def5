"""The data-parallel update: helper processes compute parts of each minibatch; the result is the serial one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

from autopilot.config.model import TrainConfig
from autopilot.trainer.optim import make_optimizer
from autopilot.trainer.policy import ActorCritic
from autopilot.trainer.ppo import Batch, PackedBatch, ppo_update
from autopilot.trainer.update_helpers import MIN_PART_ROWS, UpdateHelperError, UpdateHelpers, parts_for


def _spec(discrete: bool) -> tuple:
    act = spaces.Discrete(3) if discrete else spaces.Box(-1, 1, (2,), np.float32)
    return (spaces.Box(-1, 1, (7,), np.float32), act, 32, 2)


def _batch(n: int, discrete: bool, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    actions = torch.randint(0, 3, (n,), generator=g) if discrete else torch.randn(n, 2, generator=g)
    return Batch(torch.randn(n, 7, generator=g), actions, torch.randn(n, generator=g) - 1.5,
                 torch.randn(n, generator=g), torch.randn(n, generator=g) * 2.0 + 0.5, torch.randn(n, generator=g))


@pytest.fixture(autouse=True)
def one_thread():
    """As in the trainer: with helpers, every process computes on one thread (the same kernels everywhere)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _policy(spec: tuple) -> ActorCritic:
    torch.manual_seed(0)
    return ActorCritic(*spec)


def test_parts_are_one_per_core_with_at_least_a_block_of_rows_each():
    assert parts_for(1, 1 << 20) == 1
    assert parts_for(2, 2 * MIN_PART_ROWS) == 2
    assert parts_for(2, 2 * MIN_PART_ROWS - 1) == 1
    assert parts_for(16, 4 * MIN_PART_ROWS) == 4
    assert parts_for(4, 1 << 20) == 4


@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize("cores, minibatch, tile_rows", [(2, 4096, 16384), (3, 6144, 12288)])
def test_helpers_give_the_serial_update_with_parts_as_chunks_to_the_bit(discrete, cores, minibatch, tile_rows):
    """Two epochs over a batch, with 1 or 2 helpers: the same parameters, optimizer state and stats, bit for bit,
    as the one-process update accumulating chunks of one part's rows (`max_minibatch_size`)."""
    spec = _spec(discrete)
    batch = _batch(tile_rows, discrete)
    parts = parts_for(cores, minibatch)
    hp = TrainConfig(batch_size=tile_rows, minibatch_size=minibatch, bptt_horizon=16, update_epochs=2,
                     max_minibatch_size=minibatch // parts)
    serial, parallel = _policy(spec), _policy(spec)
    serial_opt, parallel_opt = make_optimizer(serial, hp), make_optimizer(parallel, hp)
    helpers = UpdateHelpers.start(parallel, spec, cores, tile_rows, minibatch)
    assert helpers is not None and helpers.count == parts - 1
    try:
        for seed in (3, 4):  # two updates: the helpers see the first one's optimizer steps
            want = ppo_update(serial, serial_opt, batch, hp, torch.Generator().manual_seed(seed))
            got = ppo_update(parallel, parallel_opt, batch, hp, torch.Generator().manual_seed(seed), helpers=helpers)
            assert got == want
    finally:
        helpers.close()
    for a, b in zip(serial.parameters(), parallel.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(serial_opt.state.values(), parallel_opt.state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_helpers_for_one_core_or_small_minibatches():
    spec = _spec(False)
    assert UpdateHelpers.start(_policy(spec), spec, 1, 8192, 8192) is None
    assert UpdateHelpers.start(_policy(spec), spec, 8, 8192, MIN_PART_ROWS) is None


def test_a_helper_that_fails_is_reported_with_its_traceback():
    spec = _spec(False)
    hp = TrainConfig(batch_size=8192, minibatch_size=4096, bptt_horizon=16, update_epochs=1)
    helpers = UpdateHelpers.start(_policy(spec), spec, 2, 8192, 4096)
    try:
        helpers.begin(hp, 3)  # tiles of 3 rows do not divide the batch: the helper's copy of its part fails
        helpers._conns[0].send_bytes(b"g")
        with pytest.raises(UpdateHelperError, match="(?s)update helper failed.*Traceback"):
            helpers._expect(helpers._conns[0], b"d")
    finally:
        helpers.close()


def test_a_helper_that_dies_is_reported():
    spec = _spec(False)
    helpers = UpdateHelpers.start(_policy(spec), spec, 2, 8192, 4096)
    try:
        helpers._procs[0].kill()
        helpers._procs[0].join()
        with pytest.raises(UpdateHelperError, match="exited unexpectedly"):
            helpers._expect(helpers._conns[0], b"d")
    finally:
        helpers.close()


def test_the_trainer_updates_with_a_helper_on_two_cores_and_closes_it(tmp_path, monkeypatch):
    """Two threads and minibatches of two blocks: the trainer's update runs on two processes, learns the same
    way (finite losses, a full run), and leaves no helper behind however the run ends."""
    import psutil

    from autopilot.config import config_from_dict, ensure_valid
    from autopilot.trainer.train import Trainer

    monkeypatch.setenv("AUTOPILOT_TORCH_THREADS", "2")
    monkeypatch.setenv("AUTOPILOT_LOG_CAPTURED", "1")
    cfg = ensure_valid(config_from_dict({
        "env_name": "drone_delivery", "env": {"num_envs": 32, "num_drones": 8}, "vec": {"num_envs": 2},
        "train": {"total_timesteps": 3 * 8192, "bptt_horizon": 16, "minibatch_size": 4096},
        "autopilot": {"eval_episodes": 0}}))
    seen: list[tuple[int, list[int], int]] = []

    def on_epoch(trainer: Trainer, row: dict) -> None:
        helpers = trainer.update_helpers
        seen.append((helpers.count, helpers.pids, torch.get_num_threads()))

    summary = Trainer(cfg, tmp_path / "run", on_epoch=on_epoch).run(dashboard=False)
    assert summary.status == "completed"
    assert [s[0] for s in seen] == [1, 1, 1]
    assert all(s[2] == 1 for s in seen)  # the trainer's own update thread: one, as each helper's
    pid = seen[0][1][0]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(np.isfinite(r["policy_loss"]) and np.isfinite(r["value_loss"]) for r in rows)


def test_parts_larger_than_max_minibatch_size_give_the_same_update():
    """Parts of 4,096 rows in chunks of 2,048: the same update as the serial one (summed in another grouping,
    so to float tolerance)."""
    spec = _spec(False)
    batch = _batch(16384, False)
    hp = TrainConfig(batch_size=16384, minibatch_size=8192, bptt_horizon=16, update_epochs=1, max_minibatch_size=2048)
    serial, parallel = _policy(spec), _policy(spec)
    serial_opt, parallel_opt = make_optimizer(serial, hp), make_optimizer(parallel, hp)
    helpers = UpdateHelpers.start(parallel, spec, 2, 16384, 8192)
    try:
        want = ppo_update(serial, serial_opt, batch, hp, torch.Generator().manual_seed(3))
        got = ppo_update(parallel, parallel_opt, batch, hp, torch.Generator().manual_seed(3), helpers=helpers)
    finally:
        helpers.close()
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    for a, b in zip(serial.parameters(), parallel.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_part_gradients_computes_at_most_max_minibatch_size_rows_at_once(monkeypatch):
    from autopilot.trainer import ppo

    sizes: list[int] = []
    real = ppo.chunk_gradients

    def spy(policy, part, *args):
        sizes.append(len(part))
        return real(policy, part, *args)

    monkeypatch.setattr(ppo, "chunk_gradients", spy)
    spec = _spec(False)
    part = _batch(4096, False)
    hp = TrainConfig(batch_size=16384, minibatch_size=8192, bptt_horizon=16, max_minibatch_size=1500)
    with torch.no_grad():
        ppo.part_gradients(_policy(spec), part, part.advantages, hp, 8192)
    assert sizes == [1500, 1500, 1096]


def test_helpers_that_cannot_start_leave_the_update_in_one_process(tmp_path, monkeypatch):
    from autopilot.config import config_from_dict, ensure_valid
    from autopilot.trainer import train as train_module

    def refuse(*args, **kwargs):
        raise UpdateHelperError("an update helper process exited unexpectedly while starting")

    monkeypatch.setattr(train_module.UpdateHelpers, "start", refuse)
    monkeypatch.setenv("AUTOPILOT_TORCH_THREADS", "2")
    cfg = ensure_valid(config_from_dict({
        "env_name": "drone_delivery", "env": {"num_envs": 32, "num_drones": 8}, "vec": {"num_envs": 2},
        "train": {"total_timesteps": 8192, "bptt_horizon": 16, "minibatch_size": 4096},
        "autopilot": {"eval_episodes": 0}}))
    trainer = train_module.Trainer(cfg, tmp_path / "run")
    assert trainer.run(dashboard=False).status == "completed"
    assert trainer.update_helpers is None and trainer.update_threads == 2
    assert "update helpers did not start, so the update runs in this process" in \
        (tmp_path / "run" / "train.log").read_text()


def test_an_update_whose_helper_died_raises_and_leaves_none_mid_step():
    """Two helpers, the second killed after the update began: the minibatch raises (no hang); the first
    helper's answer is taken, so it exits cleanly when closed."""
    spec = _spec(False)
    batch = _batch(12288, False)
    hp = TrainConfig(batch_size=12288, minibatch_size=6144, bptt_horizon=16, update_epochs=1)
    policy = _policy(spec)
    helpers = UpdateHelpers.start(policy, spec, 3, 12288, 6144)
    try:
        packed = PackedBatch(batch, order=torch.randperm(12288), into=helpers.packed_buffers())
        helpers.begin(hp, 64)
        helpers._procs[1].kill()
        helpers._procs[1].join()
        with pytest.raises(UpdateHelperError, match="exited unexpectedly"):
            helpers.minibatch_step(policy, make_optimizer(policy, hp), packed, torch.randperm(192)[:96], hp)
        assert not helpers._conns[0].poll(1.0)  # its answer already taken: nothing arrives out of turn
    finally:
        helpers.close()
    assert helpers._procs[0].exitcode == 0
