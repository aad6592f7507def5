"""clip_and_step / zero_grads: torch.optim's results to the bit, without its per-call Python."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gymnasium import spaces

from autopilot.config.model import TrainConfig
from autopilot.trainer import optim as optim_module
from autopilot.trainer.optim import _fused_adam_state, clip_and_step, make_optimizer, zero_grads
from autopilot.trainer.policy import ActorCritic


def _policy() -> ActorCritic:
    torch.manual_seed(0)
    return ActorCritic(spaces.Box(-1, 1, (5,), np.float32), spaces.Box(-1, 1, (2,), np.float32), 16, 2)


def _fill_grads(policy: ActorCritic, scale: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in policy.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * scale


def _reference_step(optimizer, max_norm: float) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    optimizer.step()


@pytest.mark.parametrize("kind", ["adam", "adamw"])
@pytest.mark.parametrize("scale", [10.0, 1e-3])  # the clip bites; it does not
def test_clip_and_step_equals_clip_grad_norm_then_step_bitwise(kind, scale):
    hp = TrainConfig(optimizer=kind, learning_rate=1e-2, max_grad_norm=0.5)
    ours, ref = _policy(), _policy()
    opt_ours, opt_ref = make_optimizer(ours, hp), make_optimizer(ref, hp)
    fast_steps = 0
    for step in range(4):
        _fill_grads(ours, scale, step)
        _fill_grads(ref, scale, step)
        fast_steps += _fused_adam_state(opt_ours) is not None  # the first step creates the state
        clip_and_step(opt_ours, hp.max_grad_norm)
        _reference_step(opt_ref, hp.max_grad_norm)
        for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
            assert torch.equal(a, b) and torch.equal(a.grad, b.grad)
    assert fast_steps == 3
    for a, b in zip(opt_ours.state.values(), opt_ref.state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_a_loaded_state_is_the_one_stepped():
    """load_state_dict replaces the state tensors: the next step must use the loaded ones."""
    hp = TrainConfig(learning_rate=1e-2)
    ours, ref = _policy(), _policy()
    opt_ours, opt_ref = make_optimizer(ours, hp), make_optimizer(ref, hp)
    for step in range(2):
        _fill_grads(ours, 1.0, step)
        clip_and_step(opt_ours, 0.5)
    saved = opt_ours.state_dict()
    ref.load_state_dict(ours.state_dict())
    # One copy each: load_state_dict keeps a fused optimizer's step tensors as they are, so two optimizers
    # loading one dict would share (and both advance) them.
    opt_ref.load_state_dict(copy.deepcopy(saved))
    opt_ours.load_state_dict(copy.deepcopy(saved))
    assert all(a["exp_avg"] is not b["exp_avg"] for a, b in zip(opt_ours.state.values(), saved["state"].values(),
                                                                strict=True))
    _fill_grads(ours, 1.0, 9)
    _fill_grads(ref, 1.0, 9)
    clip_and_step(opt_ours, 0.5)
    _reference_step(opt_ref, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), ref.parameters(), strict=True))


def test_other_optimizers_and_hooks_take_torch_optims_way():
    policy = _policy()
    sgd = torch.optim.SGD(policy.parameters(), lr=1e-3)
    two_groups = torch.optim.Adam([{"params": [policy.log_std]}, {"params": list(policy.trunk.parameters())}],
                                  fused=True)
    hooked = make_optimizer(policy, TrainConfig())
    calls = []
    hooked.register_step_post_hook(lambda *_: calls.append(1))
    for opt in (sgd, two_groups, hooked):
        _fill_grads(policy, 1.0, 0)
        opt.step()  # state exists
        assert _fused_adam_state(opt) is None
    clip_and_step(hooked, 1.0)
    assert calls == [1, 1]  # the hook ran on the step through clip_and_step as well

    fresh = _policy()
    sgd = torch.optim.SGD(fresh.parameters(), lr=1e3)
    before = [p.detach().clone() for p in fresh.parameters()]
    _fill_grads(fresh, 1.0, 1)
    clip_and_step(sgd, 1e-6)  # the standard path clips too: a step of lr * 1e-6
    moved = sum(float((a.detach() - b).norm() ** 2) for a, b in zip(fresh.parameters(), before, strict=True)) ** 0.5
    assert moved == pytest.approx(1e3 * 1e-6, rel=1e-3)


def test_zero_grads_zeroes_in_place_and_falls_back_when_a_grad_is_missing():
    policy = _policy()
    opt = make_optimizer(policy, TrainConfig())
    _fill_grads(policy, 1.0, 0)
    kept = [p.grad for p in policy.parameters()]
    zero_grads(opt)
    assert all(p.grad is g and not g.any() for p, g in zip(policy.parameters(), kept, strict=True))
    policy.log_std.grad = None
    zero_grads(opt)
    assert policy.log_std.grad is None and not policy.heads.weight.grad.any()


def test_optimizer_module_owns_make_optimizer():
    assert optim_module.make_optimizer is make_optimizer
