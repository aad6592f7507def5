"""The actor-critic's hand-written distributions agree with torch.distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.distributions import Categorical, Normal

from autopilot.trainer import policy as policy_module
from autopilot.trainer.policy import ActorCritic

OBS = spaces.Box(-1, 1, (6,), np.float32)


def test_gaussian_logprob_and_entropy_match_torch():
    torch.manual_seed(0)
    p = ActorCritic(OBS, spaces.Box(-2, 2, (3,), np.float32), hidden_size=8, num_layers=2)
    with torch.no_grad():
        p.log_std.copy_(torch.tensor([-0.5, 0.0, 0.7]))
    obs = torch.randn(10, 6)
    action, logprob, value = p.act(obs)
    mean, v2 = p(obs)
    dist = Normal(mean, p.log_std.exp())
    assert torch.allclose(logprob, dist.log_prob(action).sum(-1), atol=1e-5)
    lp, ent, v = p.evaluate(obs, action)
    assert torch.allclose(lp, logprob, atol=1e-6)
    assert torch.allclose(ent, dist.entropy().sum(-1), atol=1e-5)
    assert torch.allclose(v, value) and torch.allclose(v, v2) and v.shape == (10,)
    assert torch.equal(p.deterministic(obs), mean)


def test_categorical_logprob_and_entropy_match_torch():
    torch.manual_seed(0)
    p = ActorCritic(OBS, spaces.Discrete(5), hidden_size=8, num_layers=1)
    obs = torch.randn(10, 6)
    action, logprob, _ = p.act(obs)
    logits, _ = p(obs)
    dist = Categorical(logits=logits)
    assert action.dtype == torch.int64 and action.shape == (10,)
    assert torch.allclose(logprob, dist.log_prob(action), atol=1e-5)
    lp, ent, _ = p.evaluate(obs, action)
    assert torch.allclose(lp, logprob, atol=1e-6)
    assert torch.allclose(ent, dist.entropy(), atol=1e-5)
    assert torch.equal(p.deterministic(obs), logits.argmax(-1))


def test_env_actions_are_clipped_but_buffer_actions_are_not():
    p = ActorCritic(OBS, spaces.Box(-1, 1, (2,), np.float32), hidden_size=8, num_layers=1)
    raw = torch.tensor([[3.0, -0.5], [-7.0, 0.25]])
    env = p.to_env_action(raw)
    assert env.dtype == np.float32 and env.tolist() == [[1.0, -0.5], [-1.0, 0.25]]
    assert raw[0, 0].item() == 3.0


def test_network_is_sized_by_config():
    p = ActorCritic(OBS, spaces.Discrete(3), hidden_size=32, num_layers=3)
    linears = [m for m in p.trunk if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6, 32), (32, 32), (32, 32)]
    assert p.heads.out_features == 3 + 1


def _autograd_forward(p: ActorCritic, obs: torch.Tensor) -> torch.Tensor:
    """The same network through nn.Sequential / nn.Linear and autograd: the reference for TanhMLP."""
    return p.heads(p.trunk(obs))


@pytest.mark.parametrize("num_layers,block_rows", [(2, 2048), (2, 7), (3, 64), (1, 5), (0, 4)])
def test_fused_mlp_matches_autograd_in_values_and_gradients(num_layers, block_rows, monkeypatch):
    torch.manual_seed(1)
    p = ActorCritic(OBS, spaces.Box(-1, 1, (2,), np.float32), hidden_size=16, num_layers=num_layers)
    monkeypatch.setattr(policy_module, "CPU_BLOCK_ROWS", block_rows)  # 7 and 5 do not divide the 50 rows
    obs = torch.randn(50, 6)
    w = torch.randn(50, 3)
    mean, value = p(obs)
    (torch.cat([mean, value[:, None]], 1) * w).sum().backward()
    fused = {k: v.grad.clone() for k, v in p.named_parameters() if v.grad is not None}
    p.zero_grad(set_to_none=True)
    ref = _autograd_forward(p, obs)
    (ref * w).sum().backward()
    assert torch.allclose(torch.cat([mean, value[:, None]], 1), ref, atol=1e-6)
    assert set(fused) == {k for k, v in p.named_parameters() if v.grad is not None}
    for k, v in p.named_parameters():
        if v.grad is not None:
            assert torch.allclose(fused[k], v.grad, atol=1e-5, rtol=1e-4), k


def test_fused_mlp_runs_under_inference_mode():
    p = ActorCritic(OBS, spaces.Discrete(4), hidden_size=8, num_layers=2)
    obs = torch.randn(9, 6)
    with torch.inference_mode():
        logits, value = p(obs)
    assert torch.allclose(logits, _autograd_forward(p, obs)[:, :4], atol=1e-6) and value.shape == (9,)


def test_update_buffers_and_their_views_are_made_once_per_size_and_survive_copies():
    import copy
    import pickle

    p = ActorCritic(OBS, spaces.Box(-1, 1, (2,), np.float32), hidden_size=8, num_layers=2)
    obs, act = torch.randn(6, 6), torch.randn(6, 2)
    with torch.no_grad():
        first = p.evaluate_for_backward(obs, act)[3]
        again = p.evaluate_for_backward(obs, act)[3]
    assert again[0] is first[0] and again[2][1] is first[2][1]  # the same buffers, the same hidden views
    assert len(again[0].for_blocks(4)[0][0]) == 2  # 6 rows in blocks of 4: views per block size
    with torch.no_grad():
        for rows in (5, 7):  # a third row count replaces the cached ones
            p.evaluate_for_backward(torch.randn(rows, 6), torch.randn(rows, 2))
    assert set(p._buffer_cache["update"]) == {(7, obs.device, obs.dtype)}
    for clone in (copy.deepcopy(p), pickle.loads(pickle.dumps(p))):  # copies train the same
        assert torch.equal(clone(torch.ones(3, 6))[0], p(torch.ones(3, 6))[0])
        with torch.no_grad():
            assert torch.equal(clone.evaluate_for_backward(obs, act)[0], p.evaluate_for_backward(obs, act)[0])
