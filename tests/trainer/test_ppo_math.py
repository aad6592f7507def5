"""The PPO math on tiny tensors: GAE by hand, clipping, advantage normalisation, accumulation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from autopilot.config.model import TrainConfig
from autopilot.trainer.optim import make_optimizer
from autopilot.trainer.policy import ActorCritic
from autopilot.trainer.ppo import (
    SHUFFLE_TILE_ROWS,
    STAT_KEYS,
    Batch,
    PackedBatch,
    compute_gae,
    explained_variance,
    learning_rate,
    minibatch_step,
    normalize_advantages,
    ppo_loss,
    ppo_update,
    shuffle_tile_rows,
)


def test_gae_matches_a_hand_computed_case():
    # One agent, three steps; the episode ends after step 1 (so obs[2] starts a new one).
    gamma, lam = 0.9, 0.5
    r = torch.tensor([[1.0], [2.0], [3.0]])
    v = torch.tensor([[0.5], [1.0], [2.0]])
    dones = torch.tensor([[0.0], [0.0], [1.0]])
    next_v, next_done = torch.tensor([4.0]), torch.tensor([0.0])
    adv, ret = compute_gae(r, v, dones, next_v, next_done, gamma, lam)
    d2 = 3.0 + 0.9 * 4.0 - 2.0  # 4.6, bootstraps from next_value
    a2 = d2
    d1 = 2.0 + 0.0 - 1.0  # the episode ended: no bootstrap, no carry
    a1 = d1
    d0 = 1.0 + 0.9 * 1.0 - 0.5  # 1.4
    a0 = d0 + 0.9 * 0.5 * a1  # 1.85
    assert adv.squeeze(1).tolist() == pytest.approx([a0, a1, a2])
    assert ret.squeeze(1).tolist() == pytest.approx([a0 + 0.5, a1 + 1.0, a2 + 2.0])


def test_gae_with_lambda_one_is_the_discounted_return_minus_value():
    T, N, gamma = 5, 3, 0.97
    g = torch.Generator().manual_seed(0)
    r, v = torch.rand(T, N, generator=g), torch.rand(T, N, generator=g)
    next_v = torch.rand(N, generator=g)
    adv, ret = compute_gae(r, v, torch.zeros(T, N), next_v, torch.zeros(N), gamma, 1.0)
    expected = next_v.clone()
    for t in reversed(range(T)):
        expected = r[t] + gamma * expected
        assert torch.allclose(ret[t], expected, atol=1e-5)
    assert torch.allclose(adv, ret - v)


def test_gae_terminal_on_the_last_step_does_not_bootstrap():
    adv, _ = compute_gae(torch.tensor([[1.0]]), torch.tensor([[0.25]]), torch.zeros(1, 1), torch.tensor([100.0]),
                         torch.tensor([1.0]), 0.99, 0.95)
    assert adv.item() == pytest.approx(0.75)


def test_advantage_normalisation():
    a = torch.tensor([1.0, 2.0, 3.0, 10.0])
    n = normalize_advantages(a)
    assert n.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert n.std().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.argsort(n).tolist() == torch.argsort(a).tolist()


class _Stub(torch.nn.Module):
    """A 'policy' whose evaluate returns fixed new log-probs and values (as leaves with gradients)."""

    def __init__(self, new_logprob, new_value, entropy):
        super().__init__()
        self.lp = torch.nn.Parameter(torch.tensor(new_logprob))
        self.v = torch.nn.Parameter(torch.tensor(new_value))
        self.ent = torch.tensor(entropy)

    def evaluate(self, obs, actions):
        return self.lp, self.ent, self.v


def test_clipped_surrogate_value_clipping_and_stats_by_hand():
    hp = TrainConfig(clip_coef=0.2, vf_clip_coef=0.5, vf_coef=0.5, ent_coef=0.01)
    old_lp = torch.tensor([0.0, 0.0, 0.0])
    new_lp = [math.log(1.5), math.log(0.5), math.log(1.1)]  # ratios 1.5 (clipped), 0.5 (clipped), 1.1
    adv = torch.tensor([1.0, -1.0, 2.0])
    old_v, ret = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([2.0, 1.0, 0.0])
    new_v = [1.0, 1.2, 2.1]
    mb = Batch(torch.zeros(3, 1), torch.zeros(3, 1), old_lp, old_v, adv, ret)
    stub = _Stub(new_lp, new_v, [0.3, 0.3, 0.3])
    loss, stats = ppo_loss(stub, mb, adv, hp)
    s = dict(zip(STAT_KEYS, stats.tolist(), strict=True))
    # Surrogate per sample: max(-A r, -A clip(r)).
    pg = [max(-1.0 * 1.5, -1.0 * 1.2), max(1.0 * 0.5, 1.0 * 0.8), max(-2.0 * 1.1, -2.0 * 1.1)]
    assert s["policy_loss"] == pytest.approx(sum(pg) / 3, rel=1e-5)
    # Value: v_clipped = old + clip(new - old, ±0.5) -> [0.5, 1.2, 2.1]; max of squared errors.
    vl = [max((1.0 - 2.0) ** 2, (0.5 - 2.0) ** 2), max(0.2**2, 0.2**2), max(2.1**2, 2.1**2)]
    assert s["value_loss"] == pytest.approx(0.5 * sum(vl) / 3, rel=1e-5)
    assert s["entropy"] == pytest.approx(0.3)
    assert s["clipfrac"] == pytest.approx(2 / 3)
    logratio = torch.tensor(new_lp)
    assert s["old_approx_kl"] == pytest.approx(float((-logratio).mean()), rel=1e-5)
    assert s["approx_kl"] == pytest.approx(float(((logratio.exp() - 1) - logratio).mean()), rel=1e-5)
    assert loss.item() == pytest.approx(s["policy_loss"] - 0.01 * 0.3 + 0.5 * s["value_loss"], rel=1e-5)
    # The clipped samples carry no policy gradient; the unclipped one does. The value of sample 0 is
    # clipped (its clipped error is the larger), so it gets no value gradient either.
    loss.backward()
    g = stub.lp.grad.tolist()
    assert g[0] == 0.0 and g[1] == 0.0 and g[2] != 0.0
    assert stub.v.grad[0].item() == 0.0 and stub.v.grad[2].item() != 0.0


def _policy(discrete=False, seed=0):
    torch.manual_seed(seed)
    act = spaces.Discrete(4) if discrete else spaces.Box(-1, 1, (2,), np.float32)
    return ActorCritic(spaces.Box(-1, 1, (5,), np.float32), act, hidden_size=16, num_layers=2)


def _batch(n=64, discrete=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    actions = torch.randint(0, 4, (n,), generator=g) if discrete else torch.randn(n, 2, generator=g)
    return Batch(torch.randn(n, 5, generator=g), actions, torch.randn(n, generator=g) - 2.0,
                 torch.randn(n, generator=g), torch.randn(n, generator=g) * 3.0 + 1.0, torch.randn(n, generator=g))


@pytest.mark.parametrize("discrete", [False, True])
def test_accumulation_equals_one_big_minibatch(discrete):
    mb = _batch(64, discrete)
    results = []
    for chunk in (64, 16):  # one pass vs four accumulated chunks
        policy = _policy(discrete)
        hp = TrainConfig(max_minibatch_size=chunk, minibatch_size=64, batch_size=64, bptt_horizon=16)
        opt = make_optimizer(policy, hp)
        stats = minibatch_step(policy, opt, mb, hp)
        results.append(([p.detach().clone() for p in policy.parameters()], stats))
    (p_one, s_one), (p_acc, s_acc) = results
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(p_one, p_acc, strict=True))
    assert torch.allclose(s_one, s_acc, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(p_one, _policy(discrete).parameters(), strict=True))


def test_accumulation_normalises_advantages_over_the_whole_minibatch():
    # A chunk-wise normalisation would differ: shifting one chunk's advantages changes the result.
    mb = _batch(32)
    hp = TrainConfig(max_minibatch_size=8, minibatch_size=32, batch_size=32, bptt_horizon=8)
    p1, p2 = _policy(), _policy()
    minibatch_step(p1, make_optimizer(p1, hp), mb, hp)
    big = TrainConfig(max_minibatch_size=32, minibatch_size=32, batch_size=32, bptt_horizon=8)
    minibatch_step(p2, make_optimizer(p2, big), mb, big)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(p1.parameters(), p2.parameters(), strict=True))


@pytest.mark.parametrize("discrete", [False, True])
def test_packed_batch_take_equals_plain_indexing(discrete):
    b = _batch(20, discrete)
    idx = torch.tensor([3, 0, 19, 7])
    got, want = PackedBatch(b).take(idx), b.take(idx)
    for name in ("obs", "actions", "logprobs", "values", "advantages", "returns"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert got.actions.dtype == want.actions.dtype


@pytest.mark.parametrize("discrete", [False, True])
def test_packed_batch_take_tiles_equals_taking_their_rows(discrete):
    b = _batch(24, discrete)
    packed = PackedBatch(b)
    got, want = packed.take_tiles(torch.tensor([5, 0, 2]), 4), b.take(torch.tensor([20, 21, 22, 23, 0, 1, 2, 3,
                                                                                   8, 9, 10, 11]))
    for name in ("obs", "actions", "logprobs", "values", "advantages", "returns"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


def test_a_packed_batch_in_an_order_holds_the_samples_in_that_order():
    b = _batch(10)
    order = torch.randperm(10)
    packed = PackedBatch(b, order=order)
    got, want = packed.take(torch.arange(10)), b.take(order)
    for name in ("obs", "actions", "logprobs", "values", "advantages", "returns"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


def _sampled_minibatches(n: int, mb: int, tile: int, epochs: int, seed: int) -> list[list[torch.Tensor]]:
    """The sample indices of each epoch's minibatches, written out: the batch shuffled once, cut into tiles
    of `tile` consecutive rows, the tiles dealt out in a fresh random order each epoch."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    epochs_out = []
    for _ in range(epochs):
        tiles = torch.randperm(n // tile, generator=gen)
        rows = order.view(-1, tile)[tiles].reshape(-1)
        epochs_out.append([rows[s:s + mb] for s in range(0, n, mb)])
    return epochs_out


def test_tiles_are_at_most_64_rows_and_a_256th_of_a_minibatch():
    assert shuffle_tile_rows(65536, 16384) == 64
    assert shuffle_tile_rows(65536, 8192) == 32
    assert shuffle_tile_rows(2048, 1024) == 4
    assert shuffle_tile_rows(1024, 512) == 2
    assert shuffle_tile_rows(512, 256) == 1  # small minibatches: the per-sample shuffle
    assert shuffle_tile_rows(3 * 2**20, 2**20) == SHUFFLE_TILE_ROWS
    assert shuffle_tile_rows(4 * 4100, 4100) == 4  # it divides both sizes: 4100 = 4 * 1025


@pytest.mark.parametrize("discrete", [False, True])
def test_the_update_steps_on_minibatches_of_tiles_of_a_once_shuffled_batch(discrete):
    """The batch shuffled once, its tiles dealt out afresh each epoch (`_sampled_minibatches`): the same
    minibatches, and so the same update, as gathering each minibatch's rows from the plain batch."""
    n, mb = 1024, 512
    b = _batch(n, discrete)
    hp = TrainConfig(minibatch_size=mb, batch_size=n, bptt_horizon=16, update_epochs=2)
    p_new, p_ref = _policy(discrete), _policy(discrete)
    stats = ppo_update(p_new, make_optimizer(p_new, hp), b, hp, torch.Generator().manual_seed(5))
    opt = make_optimizer(p_ref, hp)
    assert shuffle_tile_rows(n, mb) == 2
    for minibatches in _sampled_minibatches(n, mb, shuffle_tile_rows(n, mb), 2, seed=5):
        for idx in minibatches:
            minibatch_step(p_ref, opt, b.take(idx), hp)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(p_new.parameters(), p_ref.parameters(), strict=True))
    assert set(stats) == set(STAT_KEYS)


def test_each_epoch_is_a_partition_into_uniform_minibatches_regrouped_every_epoch():
    """Every epoch uses each sample once; minibatch-mates change from epoch to epoch beyond a tile (here
    tiles of 64 in minibatches of 1,024, a coarser grouping than `shuffle_tile_rows` allows)."""
    n, mb, tile = 4096, 1024, 64
    epochs = _sampled_minibatches(n, mb, tile, 3, seed=0)
    for minibatches in epochs:
        assert torch.equal(torch.cat(minibatches).sort().values, torch.arange(n))
    group = torch.empty(n, dtype=torch.long)
    for e, minibatches in enumerate(epochs):
        for j, idx in enumerate(minibatches):
            group[idx] = j
        if e == 0:
            first = group.clone()
    # Two samples share a minibatch in epoch 0 and again in the last epoch about (tile - 1) / (mb - 1) + 1/4 of
    # the time (tile-mates always, the rest by chance); a fixed grouping would give 1.
    same_first = first[:, None] == first[None, :]
    again = (group[:, None] == group[None, :])[same_first].float().mean().item()
    assert 0.2 < again < 0.35


def test_sizes_that_share_no_tile_fall_back_to_a_per_sample_shuffle():
    b = _batch(45)
    hp = TrainConfig(minibatch_size=15, batch_size=45, bptt_horizon=9, update_epochs=1)
    p_new, p_ref = _policy(), _policy()
    assert shuffle_tile_rows(45, 15) == 1
    ppo_update(p_new, make_optimizer(p_new, hp), b, hp, torch.Generator().manual_seed(3))
    gen, opt = torch.Generator().manual_seed(3), make_optimizer(p_ref, hp)
    perm = torch.randperm(45, generator=gen)
    for start in range(0, 45, 15):
        minibatch_step(p_ref, opt, b.take(perm[start:start + 15]), hp)
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(p_new.parameters(), p_ref.parameters(), strict=True))


def test_the_optimizer_runs_fused():
    opt = make_optimizer(_policy(), TrainConfig())
    assert opt.defaults.get("fused") is True  # one kernel for every parameter, on CPU and CUDA


def test_update_improves_the_surrogate_and_reports_every_stat():
    policy = _policy()
    b = _batch(256)
    with torch.no_grad():
        lp, _, v = policy.evaluate(b.obs, b.actions)
    b = Batch(b.obs, b.actions, lp, v, b.advantages, b.returns)
    hp = TrainConfig(update_epochs=4, minibatch_size=64, batch_size=256, bptt_horizon=8, learning_rate=1e-2)
    opt = make_optimizer(policy, hp)
    stats = ppo_update(policy, opt, b, hp)
    assert set(stats) == set(STAT_KEYS) and all(math.isfinite(x) for x in stats.values())
    with torch.no_grad():
        new_lp, _, _ = policy.evaluate(b.obs, b.actions)
    adv = normalize_advantages(b.advantages)
    # The probability of actions with positive advantage went up on average, negative ones down.
    assert float(((new_lp - lp) * adv).mean()) > 0
    assert stats["approx_kl"] > 0 and 0 <= stats["clipfrac"] <= 1


def test_learning_rate_schedule():
    hp = TrainConfig(learning_rate=1.0, anneal_lr=True)
    assert [learning_rate(hp, e, 4) for e in range(4)] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert learning_rate(hp, 10, 4) == pytest.approx(0.25)  # never below the last epoch's rate
    assert learning_rate(TrainConfig(learning_rate=0.3, anneal_lr=False), 3, 4) == 0.3


def test_optimizer_choice():
    p = _policy()
    assert type(make_optimizer(p, TrainConfig(optimizer="adam"))) is torch.optim.Adam
    assert type(make_optimizer(p, TrainConfig(optimizer="adamw"))) is torch.optim.AdamW


def test_explained_variance():
    ret = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(ret, ret) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), ret) == pytest.approx(0.0)
    assert math.isnan(explained_variance(ret, torch.ones(4)))


def test_max_grad_norm_bounds_the_step():
    mb = _batch(64)
    moves = []
    for clip in (1e-6, 10.0):
        policy = _policy()
        before = copy.deepcopy(list(policy.parameters()))
        hp = TrainConfig(max_grad_norm=clip, minibatch_size=64, batch_size=64, bptt_horizon=8, optimizer="adam")
        opt = torch.optim.SGD(policy.parameters(), lr=1.0)
        minibatch_step(policy, opt, mb, hp)
        moves.append(sum(float((a.detach() - b.detach()).norm() ** 2) for a, b in zip(policy.parameters(), before, strict=True)) ** 0.5)
    assert moves[0] == pytest.approx(1e-6, rel=1e-2)  # clip_grad_norm_ divides by (norm + 1e-6)
    assert moves[1] > 1e-3


class _AutogradOnly(torch.nn.Module):
    """The same ActorCritic seen without `evaluate_for_backward`: minibatch_step differentiates it by autograd."""

    def __init__(self, policy: ActorCritic):
        super().__init__()
        self.inner = policy

    def evaluate(self, obs, action):
        return self.inner.evaluate(obs, action)


@pytest.mark.parametrize("action_space", [spaces.Box(-1, 1, (3,), np.float32), spaces.Discrete(5)],
                         ids=["gaussian", "categorical"])
@pytest.mark.parametrize("chunk", [64, 25])
def test_hand_written_gradients_equal_autograds(action_space, chunk):
    """Both clip branches and both value branches occur (old log-probs and values moved off the policy's), in
    one chunk and accumulated over uneven chunks; the gradients and stats must be autograd's."""
    torch.manual_seed(3)
    obs_space = spaces.Box(-1, 1, (6,), np.float32)
    by_hand = ActorCritic(obs_space, action_space, hidden_size=16, num_layers=2)
    with torch.no_grad():
        for p in by_hand.parameters():  # away from the init, so the heads' gradients are not tiny
            p.add_(0.3 * torch.randn_like(p))
    reference = _AutogradOnly(copy.deepcopy(by_hand))
    n = 64
    obs = torch.randn(n, 6)
    with torch.no_grad():
        actions, logprobs, values = by_hand.act(obs)
    mb = Batch(obs, actions, logprobs + 0.4 * torch.randn(n), values + 0.3 * torch.randn(n), torch.randn(n),
               values + torch.randn(n))
    hp = TrainConfig(clip_coef=0.1, vf_clip_coef=0.05, ent_coef=0.05, max_minibatch_size=chunk, max_grad_norm=1e9)
    stats_hand = minibatch_step(by_hand, torch.optim.SGD(by_hand.parameters(), lr=0.0), mb, hp)
    stats_ref = minibatch_step(reference, torch.optim.SGD(reference.parameters(), lr=0.0), mb, hp)
    assert 0.1 < stats_ref[STAT_KEYS.index("clipfrac")] < 0.9  # both branches of the surrogate are exercised
    assert torch.allclose(stats_hand, stats_ref, atol=1e-6)
    for (name, p), q in zip(by_hand.named_parameters(), reference.inner.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), name
