"""The MLP actor-critic: a Gaussian policy for Box actions, a categorical one for Discrete actions.

A shared MLP trunk (`policy.num_layers` hidden layers of `policy.hidden_size`, tanh) feeds a policy
head and a value head, as PufferLib's default policy does: half the compute of separate actor and
critic networks of the same width, which on a CPU is most of the update's time. Initialised as in
CleanRL (orthogonal, gain sqrt(2); 0.01 on the policy head, 1.0 on the value head).
The Gaussian has a state-independent log-std. Log-probabilities and entropies are written out by hand
(no `torch.distributions` objects on the hot path: they validate and allocate on every call).

The network is written out by hand, as matmuls over blocks of rows (`mlp_forward`, `mlp_backward`): each
layer's bias rides in its matmul (inputs carry a column of ones), the heads come out as rows (heads × n:
each output one contiguous vector for the loss), activation and gradient buffers are reused call after
call. The PPO update differentiates it by hand (`evaluate_for_backward`, `backward_into_grads`); with
autograd on, `forward` runs it as ONE autograd node (`TanhMLP`) with the same backward; under
`inference_mode` (rollouts) it runs without a node. The gradients are autograd's (tested); what is gone is
autograd's per-layer glue, which on a CPU with a 64-wide MLP is a large share of the update.

    action, logprob, value = policy.act(obs)                  # sampling, for rollouts
    logprob, entropy, value = policy.evaluate(obs, action)    # for the PPO loss
    action = policy.deterministic(obs)                        # mean action / argmax, for evaluation
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _layer(n_in: int, n_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def trunk(n_in: int, hidden: int, num_layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(num_layers):
        mods += [_layer(width, hidden, math.sqrt(2.0)), nn.Tanh()]
        width = hidden
    return nn.Sequential(*mods)


# Rows per block on a CPU with one thread: a 64-wide float32 activation block is 0.5 MB, and a few fit a
# 2 MB L2. With more threads, each matmul must be large enough to split; on a GPU, blocks would only
# multiply the kernel launches: one block of all rows in both cases.
CPU_BLOCK_ROWS = 2048


def block_rows_for(x: torch.Tensor) -> int:
    if x.device.type == "cpu" and torch.get_num_threads() == 1:
        return CPU_BLOCK_ROWS
    return max(1, x.shape[0])


def activation_buffers(rows: int, weights, like: torch.Tensor) -> list[torch.Tensor]:
    """One buffer per layer for its input (x, then each tanh output), with a trailing column of ones: so a
    layer's bias rides in its matmul, [a | 1] [W | b]^T, and its gradient comes out of the weight-gradient
    matmul, instead of a bias broadcast before every matmul and a column sum after."""
    bufs = [like.new_empty(rows, w.shape[1] + 1) for w in weights]
    for buf in bufs:
        buf[:, -1] = 1.0
    return bufs


def _row_blocks(t: torch.Tensor, block_rows: int) -> tuple:
    """Per block of rows: (the block, its transpose)."""
    return tuple((b, b.t()) for b in t.split(block_rows))


def _activation_blocks(t: torch.Tensor, block_rows: int) -> tuple:
    """Per block of an activation buffer [a | 1]: (the block, its transpose, a, the ones column)."""
    return tuple((b, b.t(), b[:, :-1], b.select(1, -1)) for b in t.split(block_rows))


def _column_blocks(t: torch.Tensor, block_rows: int) -> tuple:
    """Per block of columns of a heads × n tensor: (the block, its transpose)."""
    return tuple((b, b.t()) for b in t.split(block_rows, dim=1))


def layer_blocks(acts: list[torch.Tensor], block_rows: int) -> list[tuple]:
    """Each layer's input (acts[0], then acts[1:]) as block views: what `mlp_forward` and `mlp_backward` read."""
    return [_row_blocks(acts[0], block_rows), *(_activation_blocks(h, block_rows) for h in acts[1:])]


def mlp_forward(acts: list[torch.Tensor], weights, biases, block_rows: int, out_t: torch.Tensor,
                blocks: list[tuple] | None = None, out_blocks: tuple | None = None) -> torch.Tensor:
    """out^T = heads(tanh(... tanh([x | 1] [W1 | b1]^T) ...))^T, the heads' outputs as rows (out_t, heads × n),
    given acts[0] = [x | 1]; each hidden layer's output is kept in acts[1:] (`activation_buffers`) for the
    backward. The heads come out transposed because each output (a mean, a logit, the value) is then one
    contiguous row for the loss's elementwise arithmetic, and a 3-row matmul runs faster that way round.

    The rows go through in blocks of `block_rows`, every layer per block, so a block's activations stay in
    the core's cache between the matmul that writes them and the tanh / next matmul that reads them.
    `blocks` (`layer_blocks`) and `out_blocks` (`_column_blocks` of out_t): those views, where the caller
    keeps them from call to call (its buffers are reused: making a hundred-odd views anew in Python on
    every call cost more than some of the kernels they feed)."""
    last = len(weights) - 1
    wb = [torch.cat([w, b[:, None]], 1) for w, b in zip(weights, biases, strict=True)]  # [W | b]
    wb_t = [x.t().contiguous() for x in wb[:last]]  # [W | b]^T, contiguous: MKL's faster layout here
    heads_w = wb[last]
    blocks = layer_blocks(acts, block_rows) if blocks is None else blocks
    out_blocks = _column_blocks(out_t, block_rows) if out_blocks is None else out_blocks
    for b, (out_block, _) in enumerate(out_blocks):
        a, a_t = blocks[0][b]
        for i in range(last):
            block, block_t, pre_activation, ones = blocks[i + 1][b]
            torch.mm(a, wb_t[i], out=pre_activation)
            block.tanh_()  # the whole block, contiguous (vectorised); then the ones column back
            ones.fill_(1.0)  # (`block[:, -1] = 1.0` costs a scalar tensor and a copy per call)
            a, a_t = block, block_t
        torch.mm(heads_w, a_t, out=out_block)
    return out_t


def gradient_buffers(block_rows: int, weights, like: torch.Tensor) -> list[torch.Tensor]:
    """One buffer per hidden layer for the backward's running gradient over a block of rows: allocated once
    and reused (a fresh multi-megabyte buffer per minibatch costs its page faults every time)."""
    return [like.new_empty(block_rows, w.shape[0]) for w in weights[:-1]]


def mlp_backward(acts: list[torch.Tensor], weights, grad_out_t: torch.Tensor, block_rows: int,
                 grad_w: list[torch.Tensor], grad_b: list[torch.Tensor], g_bufs: list[torch.Tensor],
                 blocks: list[tuple] | None = None, grad_blocks: tuple | None = None) -> None:
    """Add d loss / d (W_i, b_i) into `grad_w`, `grad_b`, given d loss / d out^T and the `acts` the forward
    kept: per layer, from the heads down, d[W | b] += g^T [a | 1], then g <- (g W) * (1 - a^2) through the
    tanh that produced `a`; the matmuls and tanh derivative autograd would run, without its glue. A hidden
    layer's gradient accumulates transposed, [a | 1]^T g (the faster way round for these shapes), and the
    running g lives in `g_bufs` (`gradient_buffers`). `blocks`, `grad_blocks`: the views, as in
    `mlp_forward`."""
    last = len(weights) - 1
    grad_heads = weights[last].new_zeros(weights[last].shape[0], weights[last].shape[1] + 1)
    grad_hidden_t = [w.new_zeros(w.shape[1] + 1, w.shape[0]) for w in weights[:last]]  # [dW | db]^T
    blocks = layer_blocks(acts, block_rows) if blocks is None else blocks
    grads = _column_blocks(grad_out_t, block_rows) if grad_blocks is None else grad_blocks
    for b, (g_t, g) in enumerate(grads):  # d loss / d (heads' outputs): heads × rows, and rows × heads
        rows = g_t.shape[1]
        grad_heads.addmm_(g_t, blocks[last][b][0])
        w_above = weights[last]
        for i in reversed(range(last)):  # g: d loss / d (layer i's output), then its pre-activation
            g = torch.mm(g, w_above, out=g_bufs[i] if rows == block_rows else g_bufs[i][:rows])
            torch.ops.aten.tanh_backward.grad_input(g, blocks[i + 1][b][2], grad_input=g)
            grad_hidden_t[i].addmm_(blocks[i][b][1], g)
            w_above = weights[i]
    for gw, gb, gt in zip(grad_w[:last], grad_b[:last], grad_hidden_t, strict=True):
        gw.add_(gt[:-1].t())
        gb.add_(gt[-1])
    grad_w[last].add_(grad_heads[:, :-1])
    grad_b[last].add_(grad_heads[:, -1])


class ReusedBuffers:
    """One row count's buffers, reused call after call (no fresh pages to fault in): the activations
    (`activation_buffers`), and for the update also the heads' outputs and their gradient, as rows. With
    them, per block size: their block views (see `mlp_forward`) and the backward's running gradients
    (`gradient_buffers`). All live and die together."""

    def __init__(self, rows: int, weights, like: torch.Tensor, heads: int, update: bool):
        self.weights = list(weights)
        self.acts = activation_buffers(rows, weights, like)
        self.outputs = tuple(like.new_empty(heads, rows) for _ in range(2)) if update else ()
        self._per_block_size: dict[int, tuple] = {}

    def for_blocks(self, block_rows: int) -> tuple[list[tuple], tuple | None, tuple | None, list[torch.Tensor]]:
        """(the hidden layers' block views, the outputs' and their gradient's column blocks, the backward's
        gradient buffers): made at the first call with this block size."""
        if block_rows not in self._per_block_size:
            like = self.acts[0]
            hidden = [_activation_blocks(h, block_rows) for h in self.acts[1:]]
            columns = [_column_blocks(t, block_rows) for t in self.outputs] or [None, None]
            grads = gradient_buffers(min(block_rows, like.shape[0]), self.weights, like) if self.outputs else []
            self._per_block_size[block_rows] = (hidden, *columns, grads)
        return self._per_block_size[block_rows]


class TanhMLP(torch.autograd.Function):
    """`mlp_forward` / `mlp_backward` as one autograd node; params = (W1, b1, ..., Wh, bh), hidden first."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, block_rows: int, *params: torch.Tensor) -> torch.Tensor:
        weights, biases = params[0::2], params[1::2]
        acts = activation_buffers(x.shape[0], weights, x)
        acts[0][:, :-1] = x
        out_t = mlp_forward(acts, weights, biases, block_rows, x.new_empty(weights[-1].shape[0], x.shape[0]))
        ctx.block_rows = block_rows
        ctx.save_for_backward(*acts, *weights)
        return out_t.t()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        layers = len(saved) // 2  # hidden layers + the heads
        acts, weights = saved[:layers], saved[layers:]
        grad_w = [torch.zeros_like(w) for w in weights]
        grad_b = [w.new_zeros(w.shape[0]) for w in weights]
        mlp_backward(list(acts), weights, grad_out.t().contiguous(), ctx.block_rows, grad_w, grad_b,
                     gradient_buffers(min(ctx.block_rows, grad_out.shape[0]), weights, grad_out))
        return (None, None, *(t for pair in zip(grad_w, grad_b, strict=True) for t in pair))


class ActorCritic(nn.Module):
    def __init__(self, observation_space: spaces.Box, action_space: spaces.Space, hidden_size: int = 64,
                 num_layers: int = 2):
        super().__init__()
        obs_dim = int(np.prod(observation_space.shape))
        self.continuous = isinstance(action_space, spaces.Box)
        if self.continuous:
            self.act_dim = int(np.prod(action_space.shape))
            self.log_std = nn.Parameter(torch.zeros(self.act_dim))
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1))
        elif isinstance(action_space, spaces.Discrete):
            self.act_dim = int(action_space.n)
        else:
            raise TypeError(f"unsupported action space {action_space!r}: use Box or Discrete")
        self.trunk = trunk(obs_dim, hidden_size, num_layers)
        width = hidden_size if num_layers > 0 else obs_dim
        # Policy and value heads in one Linear (one matmul each way instead of two thin ones): rows
        # [:act_dim] are the policy head (gain 0.01), the last row the value head (gain 1.0).
        self.heads = nn.Linear(width, self.act_dim + 1)
        with torch.no_grad():
            self.heads.weight[: self.act_dim] = _layer(width, self.act_dim, 0.01).weight
            self.heads.weight[self.act_dim:] = _layer(width, 1, 1.0).weight
            self.heads.bias.zero_()
        # `trunk` and `heads` hold the parameters (and their state_dict names); TanhMLP runs them. A plain
        # list, so the layers are not registered twice.
        self._linears = [m for m in self.trunk if isinstance(m, nn.Linear)] + [self.heads]
        self._buffer_cache: dict[str, dict] = {}  # `_reused`
        # `parameters()` walks the module tree on every call; the update asks once per minibatch. (`.to()` and
        # `load_state_dict` change the parameters in place, so the list stays theirs.)
        self._parameters_list = list(self.parameters())

    # -- distributions, by hand ------------------------------------------------------------------
    # Written over the heads' outputs as rows (heads × n) and actions as rows (act_dim × n; a categorical's
    # ids as one vector): the layout the by-hand update works in. The (n × ...) callers pass `.t()` views.
    def _gaussian_logprob(self, mean_t: torch.Tensor, action_t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(log-probability, z = (action - mean) / std, z^2, 1 / std as a column)."""
        inv_std = torch.exp(-self.log_std)[:, None]
        z = (action_t - mean_t) * inv_std
        z_sq = z.square()
        return z_sq.sum(0).mul_(-0.5).sub_(self.log_std.sum() + self.act_dim * _LOG_SQRT_2PI), z, z_sq, inv_std

    def _logprob_entropy(self, head_t: torch.Tensor, action_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """(log-probability of the action, entropy, the terms `backward_into_grads` differentiates with)."""
        if self.continuous:
            logprob, z, z_sq, inv_std = self._gaussian_logprob(head_t, action_t)
            return logprob, self._gaussian_entropy(head_t.shape[1]), (z, z_sq, inv_std)
        logits = head_t - head_t.logsumexp(0, keepdim=True)
        action = action_t.long().reshape(1, -1)
        logprob = logits.gather(0, action).squeeze(0)
        probs = logits.exp()
        entropy = -(probs * logits).sum(0)
        return logprob, entropy, (logits, probs, entropy, action)

    def _gaussian_entropy(self, batch: int) -> torch.Tensor:
        return (0.5 + _LOG_SQRT_2PI + self.log_std).sum().expand(batch)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy head output: Gaussian mean or logits, value)."""
        if torch.is_inference_mode_enabled():  # rollouts: no graph, so no autograd node's overhead either
            out = self._heads_t(obs)[0].t()
        else:
            out = TanhMLP.apply(obs, block_rows_for(obs), *self._mlp_params())
        return out[:, : self.act_dim], out[:, self.act_dim]

    def _reused(self, use: str, obs: torch.Tensor) -> ReusedBuffers:
        """`ReusedBuffers` for `obs.shape[0]` rows: one set for the update's minibatches, one for rollouts,
        each for at most two row counts (a minibatch size and its last chunk's; the agents and an
        evaluation's)."""
        cache = self._buffer_cache.setdefault(use, {})
        key = (obs.shape[0], obs.device, obs.dtype)
        if key not in cache:
            if len(cache) >= 2:
                cache.clear()
            cache[key] = ReusedBuffers(obs.shape[0], self._weights_biases()[0], obs, self.act_dim + 1,
                                       update=use == "update")
        return cache[key]

    @torch.no_grad()
    def _heads_t(self, obs: torch.Tensor, obs_with_ones: torch.Tensor | None = None,
                 use: str = "rollout") -> tuple[torch.Tensor, ReusedBuffers, list[torch.Tensor], list[tuple]]:
        """(the heads' outputs as rows, heads × n; the buffers; every layer's input, whole and as block views),
        without autograd. The outputs are in fresh memory for rollouts, in a reused buffer for the update (valid
        until its next minibatch). `obs_with_ones`, [obs | 1] where the caller has it, saves copying obs."""
        bufs = self._reused(use, obs)
        block_rows = block_rows_for(obs)
        if obs_with_ones is None:
            obs_with_ones = bufs.acts[0]
            obs_with_ones[:, :-1] = obs
        hidden, out_blocks, _, _ = bufs.for_blocks(block_rows)
        blocks = [_row_blocks(obs_with_ones, block_rows), *hidden]
        out_t = bufs.outputs[0] if bufs.outputs else obs.new_empty(self.act_dim + 1, obs.shape[0])
        acts = [obs_with_ones, *bufs.acts[1:]]
        return mlp_forward(acts, *self._weights_biases(), block_rows, out_t, blocks, out_blocks), bufs, acts, blocks

    def _mlp_params(self) -> list[torch.Tensor]:
        return [t for m in self._linears for t in (m.weight, m.bias)]

    def _weights_biases(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [m.weight for m in self._linears], [m.bias for m in self._linears]

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs)[1]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, obs_with_ones: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample an action; return (action, its log-probability, the state value). `obs_with_ones`, [obs | 1]
        where the caller has it (a rollout buffer), saves copying obs."""
        out_t = self._heads_t(obs, obs_with_ones)[0]
        head_t = out_t[: self.act_dim]
        if self.continuous:
            action_t = head_t + torch.randn_like(head_t) * torch.exp(self.log_std)[:, None]
            logprob = self._gaussian_logprob(head_t, action_t)[0]
            action = action_t.t()
        else:
            logits_t = head_t - head_t.logsumexp(0, keepdim=True)
            action = torch.multinomial(logits_t.t().exp(), 1).squeeze(-1)
            logprob = logits_t.gather(0, action.unsqueeze(0)).squeeze(0)
        return action, logprob, out_t[self.act_dim]

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-probability of `action`, entropy, value) under the current parameters, with gradients."""
        out, value = self(obs)
        logprob, entropy, _ = self._logprob_entropy(out.t(), action.t() if self.continuous else action)
        return logprob, entropy, value

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        out = self(obs)[0]
        return out if self.continuous else out.argmax(-1)

    # -- the PPO update's hand-written backward ---------------------------------------------------
    def evaluate_for_backward(self, obs: torch.Tensor, action: torch.Tensor,
                              obs_with_ones: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """`evaluate` without autograd, plus what `backward_into_grads` needs: (logprob, entropy, value, saved).
        `obs_with_ones`, [obs | 1] where the caller has it (a packed batch), saves copying obs."""
        out_t, bufs, acts, blocks = self._heads_t(obs, obs_with_ones, use="update")
        logprob, entropy, dist = self._logprob_entropy(out_t[: self.act_dim], action.t() if self.continuous else action)
        return logprob, entropy, out_t[self.act_dim], (bufs, acts, blocks, block_rows_for(obs), dist)

    def backward_into_grads(self, saved: tuple, d_logprob: torch.Tensor, d_entropy: float,
                            d_value: torch.Tensor) -> None:
        """Add d loss / d parameter to every parameter's `.grad`, given d loss / d (each sample's logprob,
        value) and the loss's weight on each sample's entropy (the same for all).

        Gaussian, z = (a - mean) / std:  d logprob / d mean = z / std,  d logprob / d log_std = z^2 - 1,
                                         d entropy / d log_std = 1 (per sample).
        Categorical, l = log-softmax:    d logprob / d logits = onehot(a) - p,
                                         d entropy / d logits = -p (l + entropy)."""
        bufs, acts, blocks, block_rows, dist = saved
        _, _, grad_blocks, g_bufs = bufs.for_blocks(block_rows)
        grad_out_t = bufs.outputs[1]  # d loss / d (heads' outputs), as rows like the outputs
        for p in self._parameters_list:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.continuous:
            z, z_sq, inv_std = dist
            torch.mul(z, inv_std, out=grad_out_t[: self.act_dim]).mul_(d_logprob)
            # One add per chunk into .grad, as the update helpers add a chunk's gradient (`update_helpers`):
            # serial and parallel updates then agree to the bit.
            self.log_std.grad.add_((z_sq - 1.0).mul_(d_logprob).sum(1).add_(d_entropy * z.shape[1]))
        else:
            logits, probs, entropy, action = dist
            g = probs * (-d_logprob) - d_entropy * probs * (logits + entropy)
            g.scatter_add_(0, action, d_logprob.unsqueeze(0))
            grad_out_t[: self.act_dim] = g
        grad_out_t[self.act_dim] = d_value
        weights, biases = self._weights_biases()
        mlp_backward(acts, weights, grad_out_t, block_rows, [w.grad for w in weights],
                     [b.grad for b in biases], g_bufs, blocks, grad_blocks)

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """What the env receives, on the policy's device: continuous actions clipped to the space's bounds
        (the buffer keeps the unclipped sample, so its log-probability stays exact), discrete as int64."""
        if self.continuous:
            return torch.maximum(torch.minimum(action, self.high), self.low)
        return action.to(torch.int64)

    def to_env_action(self, action: torch.Tensor) -> np.ndarray:
        """`env_action` as a host numpy array, for numpy envs."""
        return self.env_action(action).to("cpu").numpy()
