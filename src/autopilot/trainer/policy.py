"""The MLP actor-critic: a Gaussian policy for Box actions, a categorical one for Discrete actions.

A shared MLP trunk (`policy.num_layers` hidden layers of `policy.hidden_size`, tanh) feeds a policy
head and a value head, as PufferLib's default policy does: half the compute of separate actor and
critic networks of the same width, which on a CPU is most of the update's time. Initialised as in
CleanRL (orthogonal, gain sqrt(2); 0.01 on the policy head, 1.0 on the value head).
The Gaussian has a state-independent log-std. Log-probabilities and entropies are written out by hand
(no `torch.distributions` objects on the hot path: they validate and allocate on every call).

The trunk and heads run as ONE autograd node (`TanhMLP`) with a hand-written backward: the same
matmuls and tanh derivative autograd would run, without its per-layer glue (transposes, bias-broadcast
bookkeeping, the zero-filled gradient buffers of the slices into the heads' output). On a CPU with a
64-wide MLP that glue is a large share of the update; the gradients are the same (tested against
autograd). Under `inference_mode` (rollouts) `forward` calls the MLP directly: no node, nothing saved.

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


def activation_buffers(x: torch.Tensor, weights) -> list[torch.Tensor]:
    """One buffer per layer for its input (x, then each tanh output), with a trailing column of ones: so a
    layer's bias rides in its matmul, [a | 1] [W | b]^T, and its gradient comes out of the weight-gradient
    matmul, instead of a bias broadcast before every matmul and a column sum after."""
    bufs = [x.new_empty(x.shape[0], w.shape[1] + 1) for w in weights]
    for buf in bufs:
        buf[:, -1] = 1.0
    return bufs


def mlp_forward(x: torch.Tensor, weights, biases, block_rows: int,
                acts: list[torch.Tensor] | None = None) -> torch.Tensor:
    """out = heads(tanh(... tanh(x W1^T + b1) ...)); with `acts` (from `activation_buffers`), each layer's
    input is kept there for the backward.

    The rows go through in blocks of `block_rows`, every layer per block, so a block's activations stay in
    the core's cache between the matmul that writes them and the tanh / next matmul that reads them."""
    n = x.shape[0]
    out = x.new_empty(n, weights[-1].shape[0])
    last = len(weights) - 1
    if acts is None:  # inference: nothing kept
        for lo in range(0, n, block_rows):
            a = x[lo:lo + block_rows]
            for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
                a = torch.addmm(b, a, w.t(), out=out[lo:lo + block_rows] if i == last else None)
                if i < last:
                    a.tanh_()
        return out
    wb = [torch.cat([w, b[:, None]], 1) for w, b in zip(weights, biases, strict=True)]  # [W | b]
    for lo in range(0, n, block_rows):
        hi = min(lo + block_rows, n)
        acts[0][lo:hi, :-1] = x[lo:hi]
        for i, w in enumerate(wb):
            if i == last:
                torch.mm(acts[i][lo:hi], w.t(), out=out[lo:hi])
                continue
            block = acts[i + 1][lo:hi]
            torch.mm(acts[i][lo:hi], w.t(), out=block[:, :-1])
            block.tanh_()  # the whole block, contiguous (vectorised); then the ones column back
            block[:, -1] = 1.0
    return out


def mlp_backward(acts: list[torch.Tensor], weights, grad_out: torch.Tensor, block_rows: int,
                 grad_w: list[torch.Tensor], grad_b: list[torch.Tensor]) -> None:
    """Add d loss / d (W_i, b_i) into `grad_w`, `grad_b`, given d loss / d out and the `acts` the forward kept.

    Per layer, from the heads down: d[W | b] += g^T [a | 1], then g <- (g W) * (1 - a^2) through the tanh
    that produced `a`: the matmuls and tanh derivative autograd would run, without its glue."""
    grad_wb = [w.new_zeros(w.shape[0], w.shape[1] + 1) for w in weights]
    n = grad_out.shape[0]
    for lo in range(0, n, block_rows):
        hi = min(lo + block_rows, n)
        g = grad_out[lo:hi]  # d loss / d (this layer's pre-activation), rows lo:hi
        for i in reversed(range(len(weights))):
            grad_wb[i].addmm_(g.t(), acts[i][lo:hi])
            if i > 0:
                g = torch.ops.aten.tanh_backward(g.mm(weights[i]), acts[i][lo:hi, :-1])
    for gw, gb, gwb in zip(grad_w, grad_b, grad_wb, strict=True):
        gw.add_(gwb[:, :-1])
        gb.add_(gwb[:, -1])


class TanhMLP(torch.autograd.Function):
    """`mlp_forward` / `mlp_backward` as one autograd node; params = (W1, b1, ..., Wh, bh), hidden first."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, block_rows: int, *params: torch.Tensor) -> torch.Tensor:
        weights, biases = params[0::2], params[1::2]
        acts = activation_buffers(x, weights)
        out = mlp_forward(x, weights, biases, block_rows, acts)
        ctx.block_rows = block_rows
        ctx.save_for_backward(*acts, *weights)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        layers = len(saved) // 2  # hidden layers + the heads
        acts, weights = saved[:layers], saved[layers:]
        grad_w = [torch.zeros_like(w) for w in weights]
        grad_b = [w.new_zeros(w.shape[0]) for w in weights]
        mlp_backward(list(acts), weights, grad_out, ctx.block_rows, grad_w, grad_b)
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
        self._activation_cache: dict[tuple, list[torch.Tensor]] = {}  # evaluate_for_backward's buffers

    # -- distributions, by hand ------------------------------------------------------------------
    def _gaussian_logprob(self, mean: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(log-probability, z = (action - mean) / std, 1 / std)."""
        inv_std = torch.exp(-self.log_std)
        z = (action - mean) * inv_std
        return (-0.5 * z.square() - self.log_std - _LOG_SQRT_2PI).sum(-1), z, inv_std

    def _logprob_entropy(self, head: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """(log-probability of `action`, entropy, the terms `backward_into_grads` differentiates with)."""
        if self.continuous:
            logprob, z, inv_std = self._gaussian_logprob(head, action)
            return logprob, self._gaussian_entropy(head.shape[0]), (z, inv_std)
        logits = head - head.logsumexp(-1, keepdim=True)
        action = action.long()
        logprob = logits.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        probs = logits.exp()
        entropy = -(probs * logits).sum(-1)
        return logprob, entropy, (logits, probs, entropy, action)

    def _gaussian_entropy(self, batch: int) -> torch.Tensor:
        return (0.5 + _LOG_SQRT_2PI + self.log_std).sum().expand(batch)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy head output: Gaussian mean or logits, value)."""
        if torch.is_inference_mode_enabled():  # rollouts: no graph, so no autograd node's overhead either
            out = mlp_forward(obs, *self._weights_biases(), block_rows_for(obs))
        else:
            out = TanhMLP.apply(obs, block_rows_for(obs), *self._mlp_params())
        return out[:, : self.act_dim], out[:, self.act_dim]

    def _mlp_params(self) -> list[torch.Tensor]:
        return [t for m in self._linears for t in (m.weight, m.bias)]

    def _weights_biases(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [m.weight for m in self._linears], [m.bias for m in self._linears]

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs)[1]

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample an action; return (action, its log-probability, the state value)."""
        out, value = self(obs)
        if self.continuous:
            action = out + torch.randn_like(out) * torch.exp(self.log_std)
            logprob = self._gaussian_logprob(out, action)[0]
        else:
            logits = out - out.logsumexp(-1, keepdim=True)
            action = torch.multinomial(logits.exp(), 1).squeeze(-1)
            logprob = logits.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        return action, logprob, value

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-probability of `action`, entropy, value) under the current parameters, with gradients."""
        out, value = self(obs)
        logprob, entropy, _ = self._logprob_entropy(out, action)
        return logprob, entropy, value

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        out = self(obs)[0]
        return out if self.continuous else out.argmax(-1)

    # -- the PPO update's hand-written backward ---------------------------------------------------
    def evaluate_for_backward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`evaluate` without autograd, plus what `backward_into_grads` needs: (logprob, entropy, value, saved)."""
        block_rows = block_rows_for(obs)
        weights, biases = self._weights_biases()
        key = (obs.shape[0], obs.device, obs.dtype)
        if key not in self._activation_cache:  # reused minibatch after minibatch: no fresh pages to fault in
            if len(self._activation_cache) >= 2:  # a minibatch size and its last chunk's, at most
                self._activation_cache.clear()
            self._activation_cache[key] = activation_buffers(obs, weights)
        acts = self._activation_cache[key]
        out = mlp_forward(obs, weights, biases, block_rows, acts)
        logprob, entropy, dist = self._logprob_entropy(out[:, : self.act_dim], action)
        return logprob, entropy, out[:, self.act_dim], (acts, out, block_rows, dist)

    def backward_into_grads(self, saved: tuple, d_logprob: torch.Tensor, d_entropy: float,
                            d_value: torch.Tensor) -> None:
        """Add d loss / d parameter to every parameter's `.grad`, given d loss / d (each sample's logprob,
        value) and the loss's weight on each sample's entropy (the same for all).

        Gaussian, z = (a - mean) / std:  d logprob / d mean = z / std,  d logprob / d log_std = z^2 - 1,
                                         d entropy / d log_std = 1 (per sample).
        Categorical, l = log-softmax:    d logprob / d logits = onehot(a) - p,
                                         d entropy / d logits = -p (l + entropy)."""
        acts, out, block_rows, dist = saved
        for p in self.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grad_out = torch.empty_like(out)
        if self.continuous:
            z, inv_std = dist
            torch.mul(d_logprob[:, None], z * inv_std, out=grad_out[:, : self.act_dim])
            self.log_std.grad.add_((d_logprob[:, None] * (z.square() - 1.0)).sum(0)).add_(d_entropy * len(z))
        else:
            logits, probs, entropy, action = dist
            g = probs * (-d_logprob[:, None]) - d_entropy * probs * (logits + entropy[:, None])
            g.scatter_add_(-1, action.unsqueeze(-1), d_logprob.unsqueeze(-1))
            grad_out[:, : self.act_dim] = g
        grad_out[:, self.act_dim] = d_value
        weights, biases = self._weights_biases()
        mlp_backward(acts, weights, grad_out, block_rows, [w.grad for w in weights], [b.grad for b in biases])

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """What the env receives, on the policy's device: continuous actions clipped to the space's bounds
        (the buffer keeps the unclipped sample, so its log-probability stays exact), discrete as int64."""
        if self.continuous:
            return torch.maximum(torch.minimum(action, self.high), self.low)
        return action.to(torch.int64)

    def to_env_action(self, action: torch.Tensor) -> np.ndarray:
        """`env_action` as a host numpy array, for numpy envs."""
        return self.env_action(action).to("cpu").numpy()
