"""PPO, top to bottom (the CleanRL reading order).

1. GAE: advantages and returns from one rollout of `T = bptt_horizon` steps by `N` agents.
2. The loss on one minibatch: clipped surrogate, value loss clipped by `vf_clip_coef`, entropy bonus.
3. The update: `update_epochs` passes over the batch in shuffled minibatches; advantages normalised per
   minibatch; a minibatch larger than `max_minibatch_size` is accumulated in chunks, each chunk's loss
   weighted by its share, so the gradient (and the single optimizer step) equals the one-big-minibatch
   one; gradients clipped to `max_grad_norm`. The batch is shuffled once per update and cut into tiles
   of a few consecutive rows; each epoch deals the tiles out to minibatches in a fresh random order (see
   `ppo_update` for why). A minibatch is two copies from the packed batch into reused
   buffers, the first of which the policy's first layer reads as it is; the clipping and the optimizer
   run as multi-tensor / fused kernels (one call over all parameters, not a loop over them), called
   directly (`optim.clip_and_step`). On a CPU with several cores, helper processes compute parts of each
   minibatch (`update_helpers`): the same update as chunks of `max_minibatch_size` = one part.
4. The learning-rate schedule (`anneal_lr`: linear to zero over the run's epochs).

Episode ends (`terminated | truncated`) cut the bootstrap, as in CleanRL and PufferLib.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from autopilot.config.model import TrainConfig
from autopilot.trainer.optim import clip_and_step, zero_grads

if TYPE_CHECKING:
    from autopilot.trainer.update_helpers import UpdateHelpers

# --------------------------------------------------------------------------------------------------
# 1. Generalised advantage estimation


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, next_value: torch.Tensor,
                next_done: torch.Tensor, gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns, all (T, N).

    `dones[t]` says whether obs[t] began a new episode (the step before it ended one); `next_value` and
    `next_done` describe the observation after the last step. Then, backwards over t:
        delta_t = r_t + gamma * V(s_{t+1}) * (1 - done_{t+1}) - V(s_t)
        A_t     = delta_t + gamma * lambda * (1 - done_{t+1}) * A_{t+1}
    """
    T = rewards.shape[0]
    advantages = torch.empty_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(T)):
        if t == T - 1:
            not_done, v_next = 1.0 - next_done, next_value
        else:
            not_done, v_next = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * v_next * not_done - values[t]
        last = delta + gamma * gae_lambda * not_done * last
        advantages[t] = last
    return advantages, advantages + values


def normalize_advantages(adv: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean, scale = advantage_moments(adv, eps)
    return (adv - mean) / scale


def advantage_moments(adv: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std + eps): what `normalize_advantages` shifts by and divides by."""
    return adv.mean(), adv.std() + eps


# --------------------------------------------------------------------------------------------------
# 2. The loss on one minibatch


@dataclass
class Batch:
    """One epoch's experience, flattened to (T*N, ...)."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    obs_with_ones: torch.Tensor | None = None  # [obs | 1], where a packed batch has it (saves the policy a copy)

    def __len__(self) -> int:
        return self.obs.shape[0]

    def take(self, idx: torch.Tensor) -> Batch:
        return Batch(*(t[idx] for t in (self.obs, self.actions, self.logprobs, self.values, self.advantages,
                                          self.returns)))

    def rows(self, sl: slice) -> Batch:
        """A slice of the samples, as views."""
        return Batch(self.obs[sl], self.actions[sl], self.logprobs[sl], self.values[sl], self.advantages[sl],
                     self.returns[sl], None if self.obs_with_ones is None else self.obs_with_ones[sl])


class PackedBatch:
    """A `Batch` packed into two float tensors, so that a minibatch is two copies instead of six: the rows
    of observations with a column of ones, (n, obs + 1), and the per-sample values as rows, (4 + act, n):
    logprobs, values, advantages, returns, then the actions (one row per action dimension). A minibatch's
    [obs | 1] is what the policy's first matmul reads (the bias rides in the matmul), and its per-sample
    values are contiguous rows, which the loss's elementwise arithmetic reads fastest.

    `order`, a permutation of the samples, packs them in that order (one gather, here, for the update's
    pre-shuffle); `into`, two tensors of those shapes, packs into them (the update helpers' shared memory).
    `take` gathers samples by index, `take_tiles` whole tiles of consecutive packed rows."""

    def __init__(self, batch: Batch, order: torch.Tensor | None = None,
                 into: tuple[torch.Tensor, torch.Tensor] | None = None):
        n = len(batch)
        act = batch.actions.reshape(n, -1).to(torch.float32)  # discrete ids < 2**24 are exact in float32
        if batch.obs_with_ones is not None:
            data = batch.obs_with_ones
        else:
            data = torch.cat([batch.obs, batch.obs.new_ones(n, 1)], dim=1)
        scalars = torch.cat([torch.stack([batch.logprobs, batch.values, batch.advantages, batch.returns]), act.t()])
        if order is not None:
            data = torch.index_select(data, 0, order, out=None if into is None else into[0])
            scalars = torch.index_select(scalars, 1, order, out=None if into is None else into[1])
        elif into is not None:
            data, scalars = into[0].copy_(data), into[1].copy_(scalars)
        self._set(data, scalars, batch.actions.shape[1:], batch.actions.dtype)

    @classmethod
    def over(cls, data: torch.Tensor, scalars: torch.Tensor, act_shape: tuple[int, ...], act_dtype: torch.dtype
             ) -> PackedBatch:
        """A packed batch already laid out in `data` and `scalars` (another process's, in shared memory)."""
        packed = cls.__new__(cls)
        packed._set(data, scalars, act_shape, act_dtype)
        return packed

    def _set(self, data: torch.Tensor, scalars: torch.Tensor, act_shape, act_dtype: torch.dtype) -> None:
        self.data, self.scalars, self.act_shape, self.act_dtype = data, scalars, tuple(act_shape), act_dtype
        self._gathered: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.data.shape[0]

    def take(self, idx: torch.Tensor) -> Batch:
        """The samples `idx`, gathered into buffers this batch reuses for every minibatch of the same size
        (no fresh memory per minibatch): the result is valid until the next `take` or `take_tiles`."""
        rows, scalars = self._buffers(idx.shape[0])
        torch.index_select(self.data, 0, idx, out=rows)
        torch.index_select(self.scalars, 1, idx, out=scalars)
        return self._minibatch(rows, scalars)

    def take_tiles(self, tiles: torch.Tensor, tile_rows: int) -> Batch:
        """Packed rows [t * tile_rows, (t + 1) * tile_rows) for each t in `tiles`, in that order: `take` of
        those rows, as one contiguous copy per tile (valid until the next `take` or `take_tiles`). Tiles of
        one row are samples: `take`."""
        if tile_rows == 1:
            return self.take(tiles)
        k = tiles.shape[0]
        rows, scalars = self._buffers(k * tile_rows)
        torch.index_select(self.data.view(-1, tile_rows * self.data.shape[1]), 0, tiles,
                           out=rows.view(k, -1))
        torch.index_select(self.scalars.view(self.scalars.shape[0], -1, tile_rows), 1, tiles,
                           out=scalars.view(scalars.shape[0], k, tile_rows))
        return self._minibatch(rows, scalars)

    def advantages(self, tiles: torch.Tensor, tile_rows: int) -> torch.Tensor:
        """The advantages of `take_tiles(tiles, tile_rows)`'s samples, in its order (a fresh tensor)."""
        return self.scalars[2].view(-1, tile_rows).index_select(0, tiles).reshape(-1)

    def _buffers(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        if m not in self._gathered:
            self._gathered[m] = (self.data.new_empty(m, self.data.shape[1]),
                                 self.scalars.new_empty(self.scalars.shape[0], m))
        return self._gathered[m]

    def _minibatch(self, rows: torch.Tensor, scalars: torch.Tensor) -> Batch:
        actions = scalars[4:].t().reshape(-1, *self.act_shape).to(self.act_dtype)
        return Batch(rows[:, :-1], actions, *scalars[:4], obs_with_ones=rows)


STAT_KEYS = ("policy_loss", "value_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac")


def ppo_loss(policy, mb: Batch, advantages: torch.Tensor, hp: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, stats) for one minibatch whose `advantages` are already normalised.

    stats is a tensor in the order of STAT_KEYS (kept as a tensor: no device sync per minibatch)."""
    new_logprob, entropy, new_value = policy.evaluate(mb.obs, mb.actions)
    terms = LossTerms.of(new_logprob, entropy, new_value, mb, advantages, hp)
    return terms.loss, terms.stats


@dataclass
class LossTerms:
    """PPO's loss on one minibatch, and what its derivative by hand needs."""

    loss: torch.Tensor
    stats: torch.Tensor
    surrogate: torch.Tensor
    clipped_surrogate: torch.Tensor
    value_error: torch.Tensor
    clipped_value_error: torch.Tensor
    squared_error: torch.Tensor
    clipped_squared_error: torch.Tensor
    value_in_clip: torch.Tensor

    @classmethod
    def of(cls, new_logprob: torch.Tensor, entropy: torch.Tensor, new_value: torch.Tensor, mb: Batch,
           advantages: torch.Tensor, hp: TrainConfig) -> LossTerms:
        logratio = new_logprob - mb.logprobs
        ratio = logratio.exp()

        # Clipped surrogate objective (we minimise its negative).
        neg_advantages = -advantages
        surrogate = neg_advantages * ratio
        clipped_surrogate = neg_advantages * ratio.clamp(1.0 - hp.clip_coef, 1.0 + hp.clip_coef)
        pg_loss = torch.max(surrogate, clipped_surrogate).mean()

        # Value loss, clipped around the rollout's value estimate.
        value_step = new_value - mb.values
        v_clipped = mb.values + value_step.clamp(-hp.vf_clip_coef, hp.vf_clip_coef)
        value_error, clipped_value_error = new_value - mb.returns, v_clipped - mb.returns
        squared_error, clipped_squared_error = value_error.square(), clipped_value_error.square()
        v_loss = 0.5 * torch.max(squared_error, clipped_squared_error).mean()

        entropy = entropy.mean()
        loss = pg_loss - hp.ent_coef * entropy + hp.vf_coef * v_loss

        with torch.no_grad():
            old_approx_kl = -logratio.mean()
            ratio_step = ratio - 1.0
            approx_kl = (ratio_step - logratio).mean()
            clipfrac = (ratio_step.abs() > hp.clip_coef).float().mean()
            stats = torch.stack([pg_loss, v_loss, entropy, old_approx_kl, approx_kl, clipfrac]).detach()
            value_in_clip = value_step.abs() <= hp.vf_clip_coef
        return cls(loss, stats, surrogate, clipped_surrogate, value_error, clipped_value_error, squared_error,
                   clipped_squared_error, value_in_clip)

    def derivatives(self, hp: TrainConfig, weight: float) -> tuple[torch.Tensor, float, torch.Tensor]:
        """d (weight * loss) / d (each sample's new log-probability, entropy, new value): what autograd
        would send back, written out. Each max() passes the gradient to the branch it picked; a clamp
        passes it only inside its range (outside, the clipped branch is flat):
            d surrogate / d logprob = -A * ratio = surrogate        (d ratio / d logprob = ratio)
            d (0.5 * error^2) / d value = error
        The surrogate's clipped branch never passes any: inside the clip range the clamp returns the ratio
        itself, so the two branches are equal and max() has picked the unclipped one. The value's clipped
        branch can: `values + (new_value - values)` need not round back to new_value."""
        n = self.surrogate.shape[0]
        zero = self.surrogate.new_zeros(())
        d_pg = torch.where(self.surrogate >= self.clipped_surrogate, self.surrogate, zero)
        d_v = torch.where(self.squared_error >= self.clipped_squared_error, self.value_error,
                          torch.where(self.value_in_clip, self.clipped_value_error, zero))
        return d_pg * (weight / n), -hp.ent_coef * weight / n, d_v * (hp.vf_coef * weight / n)


# --------------------------------------------------------------------------------------------------
# 3. The update


def minibatch_step(policy, optimizer: torch.optim.Optimizer, mb: Batch, hp: TrainConfig) -> torch.Tensor:
    """One optimizer step on one minibatch, accumulating gradients over chunks of `max_minibatch_size`.

    A policy with `evaluate_for_backward` (the built-in one) is differentiated by hand: the loss's
    derivative from `LossTerms.derivatives`, then the network's own backward; the same gradients as
    autograd's (tested), without building a graph per minibatch. Any other policy goes through autograd."""
    advantages = normalize_advantages(mb.advantages)  # over the whole minibatch, before chunking
    n = len(mb)
    if hasattr(policy, "evaluate_for_backward"):
        zero_grads(optimizer)  # kept allocated: the backward adds into them
    else:
        optimizer.zero_grad(set_to_none=True)
    stats = part_gradients(policy, mb, advantages, hp, n)
    clip_and_step(optimizer, hp.max_grad_norm)
    return stats


def part_gradients(policy, part: Batch, advantages: torch.Tensor, hp: TrainConfig, minibatch_rows: int
                   ) -> torch.Tensor:
    """`chunk_gradients` over `part` (a whole minibatch, or an update helper's share of one) in chunks of at
    most `max_minibatch_size` rows; the sum of their stats."""
    n = len(part)
    chunk = min(n, max(1, int(hp.max_minibatch_size)))
    stats = None
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        part_stats = chunk_gradients(policy, part if chunk == n else part.rows(sl), advantages[sl], hp,
                                     minibatch_rows)
        stats = part_stats if stats is None else stats + part_stats
    return stats


def chunk_gradients(policy, part: Batch, advantages: torch.Tensor, hp: TrainConfig, minibatch_rows: int
                    ) -> torch.Tensor:
    """Add d (weight * loss on `part`) / d parameter into each `.grad`, weight = the part's share of its
    minibatch's rows (so the parts' gradients sum to the whole minibatch's); return the part's stats, also
    weighted (unweighted when the part is the whole minibatch). `advantages`: the part's, normalised over
    the whole minibatch."""
    rows = len(part)
    weight = rows / minibatch_rows
    if hasattr(policy, "evaluate_for_backward"):
        with torch.no_grad():
            new_logprob, entropy, new_value, saved = policy.evaluate_for_backward(
                part.obs, part.actions, obs_with_ones=part.obs_with_ones)
            terms = LossTerms.of(new_logprob, entropy, new_value, part, advantages, hp)
            policy.backward_into_grads(saved, *terms.derivatives(hp, weight))
        stats = terms.stats
    else:
        loss, stats = ppo_loss(policy, part, advantages, hp)
        (loss * weight).backward()
    return stats if rows == minibatch_rows else stats * weight


# Consecutive rows of the once-shuffled batch that stay together in a minibatch (see `ppo_update`): at most
# this many, and at most 1/MIN_TILES_PER_MINIBATCH of a minibatch.
SHUFFLE_TILE_ROWS = 64
MIN_TILES_PER_MINIBATCH = 256


def shuffle_tile_rows(batch_size: int, minibatch_size: int) -> int:
    """The tile size `ppo_update` uses: the largest power of two up to SHUFFLE_TILE_ROWS that divides both
    sizes and leaves at least MIN_TILES_PER_MINIBATCH tiles per minibatch; 1 (no tiles) where none does."""
    tile = math.gcd(SHUFFLE_TILE_ROWS, batch_size, minibatch_size)  # a power of two: SHUFFLE_TILE_ROWS is one
    while tile > 1 and minibatch_size // tile < MIN_TILES_PER_MINIBATCH:
        tile //= 2
    return tile


def ppo_update(policy, optimizer: torch.optim.Optimizer, batch: Batch, hp: TrainConfig,
               generator: torch.Generator | None = None, helpers: UpdateHelpers | None = None
               ) -> dict[str, float]:
    """`update_epochs` shuffled passes of `minibatch_size` samples; returns the mean of each stat.

    The batch is shuffled once, into tiles of consecutive rows (`shuffle_tile_rows`), and each epoch deals
    the tiles to its minibatches in a fresh random order. Each minibatch is then still a uniformly random
    subset of the batch and each epoch a partition of it, as with a fresh per-sample shuffle every epoch;
    what differs is that a sample's tile-mates, at most 1/256 of its minibatch, share its minibatch in
    every epoch (with minibatches of 16,384 of a batch of 65,536: 63 of its 16,383 minibatch-mates; a fresh
    shuffle would have it meet a quarter of them again anyway). What it buys: a minibatch is one contiguous copy
    per tile instead of a random gather per sample, which on a CPU waits on memory for every row and took
    about a tenth of the update at that size. Small minibatches (under 512) get the plain per-sample
    shuffle: their tile would be a single row.

    `helpers` (`update_helpers.UpdateHelpers`): other processes that each compute a part of every
    minibatch's gradient on a core of their own; the same sampling, and the serial update's result with
    `max_minibatch_size` = one part."""
    n, mb_size = len(batch), int(hp.minibatch_size)
    device = batch.obs.device
    tile = shuffle_tile_rows(n, mb_size)
    tiles, per_minibatch = n // tile, mb_size // tile
    order = torch.randperm(n, generator=generator).to(device) if tile > 1 else None
    packed = PackedBatch(batch, order=order, into=None if helpers is None else helpers.packed_buffers())
    if helpers is not None:
        helpers.begin(hp, tile)
    total = torch.zeros(len(STAT_KEYS), device=device)
    steps = 0
    for _ in range(hp.update_epochs):
        perm = torch.randperm(tiles, generator=generator).to(device)
        for start in range(0, tiles, per_minibatch):
            ids = perm[start:start + per_minibatch]
            if helpers is not None:
                total += helpers.minibatch_step(policy, optimizer, packed, ids, hp)
            else:
                total += minibatch_step(policy, optimizer, packed.take_tiles(ids, tile), hp)
            steps += 1
    means = (total / max(steps, 1)).tolist()
    return dict(zip(STAT_KEYS, means, strict=True))


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 - Var[returns - values] / Var[returns]; NaN when the returns do not vary."""
    var = returns.var()
    if not torch.isfinite(var) or var.item() == 0.0:
        return float("nan")
    return float(1.0 - (returns - values).var() / var)


# --------------------------------------------------------------------------------------------------
# 4. The learning-rate schedule


def learning_rate(hp: TrainConfig, epoch_in_schedule: int, epochs_in_schedule: int) -> float:
    """CleanRL's linear anneal: epoch 0 of the schedule trains at the full rate, the last at lr/epochs."""
    if not hp.anneal_lr or epochs_in_schedule <= 0:
        return hp.learning_rate
    frac = 1.0 - min(epoch_in_schedule, epochs_in_schedule - 1) / epochs_in_schedule
    return hp.learning_rate * frac
