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
autograd). `forward` works unchanged under `inference_mode` (nothing is saved then).

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


class TanhMLP(torch.autograd.Function):
    """out = heads(tanh(... tanh(x W1^T + b1) ...)); params = (W1, b1, ..., Wh, bh), hidden layers first.

    Both passes go through the rows in blocks of `block_rows`, every layer per block, so a block's
    activations and gradients stay in the core's cache between the matmul that writes them and the
    tanh / next matmul that reads them; weight and bias gradients accumulate over the blocks."""

    block_rows = 2048  # a 64-wide float32 activation block is 0.5 MB: a few of them fit a 2 MB L2

    @staticmethod
    def forward(ctx, x: torch.Tensor, block_rows: int, *params: torch.Tensor) -> torch.Tensor:
        weights, biases = params[0::2], params[1::2]
        n = x.shape[0]
        acts = [x] + [x.new_empty(n, w.shape[0]) for w in weights[:-1]]  # the tanh outputs, per layer
        out = x.new_empty(n, weights[-1].shape[0])
        for lo in range(0, n, block_rows):
            hi = min(lo + block_rows, n)
            for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
                dst = acts[i + 1][lo:hi] if i + 1 < len(weights) else out[lo:hi]
                torch.addmm(b, acts[i][lo:hi], w.t(), out=dst)
                if i + 1 < len(weights):
                    dst.tanh_()
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
        grad_out = grad_out.contiguous()
        n = grad_out.shape[0]
        for lo in range(0, n, ctx.block_rows):
            hi = min(lo + ctx.block_rows, n)
            g = grad_out[lo:hi]  # d loss / d (this layer's pre-activation), rows lo:hi
            for i in reversed(range(layers)):
                a = acts[i][lo:hi]
                grad_w[i].addmm_(g.t(), a)
                grad_b[i] += g.sum(0)
                if i > 0:  # back through the tanh that produced `a`: g W * (1 - a^2)
                    g = torch.ops.aten.tanh_backward(g.mm(weights[i]), a)
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

    # -- distributions, by hand ------------------------------------------------------------------
    def _gaussian_logprob(self, mean: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        z = (action - mean) * torch.exp(-self.log_std)
        return (-0.5 * z.square() - self.log_std - _LOG_SQRT_2PI).sum(-1)

    def _gaussian_entropy(self, batch: int) -> torch.Tensor:
        return (0.5 + _LOG_SQRT_2PI + self.log_std).sum().expand(batch)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy head output: Gaussian mean or logits, value)."""
        # Blocks pay on a CPU (cache); on a GPU they would only multiply the kernel launches.
        block_rows = TanhMLP.block_rows if obs.device.type == "cpu" else max(1, obs.shape[0])
        out = TanhMLP.apply(obs, block_rows, *self._mlp_params())
        return out[:, : self.act_dim], out[:, self.act_dim]

    def _mlp_params(self) -> list[torch.Tensor]:
        return [t for m in self._linears for t in (m.weight, m.bias)]

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs)[1]

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample an action; return (action, its log-probability, the state value)."""
        out, value = self(obs)
        if self.continuous:
            action = out + torch.randn_like(out) * torch.exp(self.log_std)
            logprob = self._gaussian_logprob(out, action)
        else:
            logits = out - out.logsumexp(-1, keepdim=True)
            action = torch.multinomial(logits.exp(), 1).squeeze(-1)
            logprob = logits.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        return action, logprob, value

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-probability of `action`, entropy, value) under the current parameters, with gradients."""
        out, value = self(obs)
        if self.continuous:
            logprob = self._gaussian_logprob(out, action)
            entropy = self._gaussian_entropy(out.shape[0])
        else:
            logits = out - out.logsumexp(-1, keepdim=True)
            logprob = logits.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
            entropy = -(logits.exp() * logits).sum(-1)
        return logprob, entropy, value

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        out = self(obs)[0]
        return out if self.continuous else out.argmax(-1)

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """What the env receives, on the policy's device: continuous actions clipped to the space's bounds
        (the buffer keeps the unclipped sample, so its log-probability stays exact), discrete as int64."""
        if self.continuous:
            return torch.maximum(torch.minimum(action, self.high), self.low)
        return action.to(torch.int64)

    def to_env_action(self, action: torch.Tensor) -> np.ndarray:
        """`env_action` as a host numpy array, for numpy envs."""
        return self.env_action(action).to("cpu").numpy()
