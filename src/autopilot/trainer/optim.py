"""The optimizer: Adam(W) with the fused kernel, and the per-minibatch calls the update makes on it.

`clip_and_step` is `clip_grad_norm_(params, max_norm, foreach=True)` followed by `optimizer.step()`, and
`zero_grads` is `optimizer.zero_grad(set_to_none=False)`: the same kernels with the same arguments in the
same order (so bitwise the same parameters and optimizer state), called directly for the optimizer
`make_optimizer` builds. What they skip is torch.optim's per-call Python (grouping tensors by device
and dtype, per-parameter state checks, hooks): about 0.3 ms per minibatch on a CPU, several percent of an
update of a 64-wide MLP. Anything they do not recognise (another optimizer, several parameter groups,
hooks, AMSGrad, a tensor learning rate, state not yet created) goes through torch.optim as usual.
"""

from __future__ import annotations

import torch
from torch.optim import optimizer as optimizer_module

from autopilot.config.model import TrainConfig


def make_optimizer(policy: torch.nn.Module, hp: TrainConfig) -> torch.optim.Optimizer:
    """Adam(W) with the fused kernel (one call updates every parameter) where torch has one for the
    parameters' device, else the multi-tensor (`foreach`) one; the arithmetic is Adam's either way."""
    cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
    kwargs = {"weight_decay": 0.01} if hp.optimizer == "adamw" else {}
    params = list(policy.parameters())
    try:
        return cls(params, lr=hp.learning_rate, eps=1e-5, fused=True, **kwargs)
    except RuntimeError:  # no fused kernel for this device / dtype
        return cls(params, lr=hp.learning_rate, eps=1e-5, foreach=True, **kwargs)


def _has_hooks(optimizer: torch.optim.Optimizer) -> bool:
    return bool(getattr(optimizer, "_optimizer_step_pre_hooks", None)
                or getattr(optimizer, "_optimizer_step_post_hooks", None)
                or getattr(optimizer_module, "_global_optimizer_pre_hooks", None)
                or getattr(optimizer_module, "_global_optimizer_post_hooks", None))


def _fused_adam_state(optimizer: torch.optim.Optimizer) -> tuple | None:
    """(group, params, grads, exp_avgs, exp_avg_sqs, steps) when `optimizer` is a fused Adam(W) that
    `clip_and_step` can step directly, else None."""
    if (type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or len(optimizer.param_groups) != 1
            or not hasattr(torch, "_fused_adam_") or not hasattr(torch, "_fused_adamw_")):
        return None
    group = optimizer.param_groups[0]
    if (not group.get("fused") or group.get("amsgrad") or group.get("maximize") or group.get("capturable")
            or group.get("differentiable") or not isinstance(group.get("lr"), float)
            or not all(isinstance(b, float) for b in group.get("betas", ()))
            or getattr(optimizer, "grad_scale", None) is not None or getattr(optimizer, "found_inf", None) is not None
            or _has_hooks(optimizer)):
        return None
    params = group["params"]
    if not params:
        return None
    device, dtype = params[0].device, params[0].dtype
    grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
    for p in params:
        state = optimizer.state.get(p)
        if p.grad is None or not state or p.device != device or p.dtype != dtype or p.grad.is_sparse:
            return None
        grads.append(p.grad)
        exp_avgs.append(state["exp_avg"])
        exp_avg_sqs.append(state["exp_avg_sq"])
        steps.append(state["step"])
    return group, params, grads, exp_avgs, exp_avg_sqs, steps


def clip_and_step(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    """Clip the gradients' global 2-norm to `max_norm` (`clip_grad_norm_`'s arithmetic: scale by
    min(1, max_norm / (norm + 1e-6))), then take one optimizer step."""
    fast = _fused_adam_state(optimizer)
    if fast is None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        optimizer.step()
        return
    group, params, grads, exp_avgs, exp_avg_sqs, steps = fast
    total_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    torch._foreach_mul_(grads, torch.clamp(float(max_norm) / (total_norm + 1e-6), max=1.0))
    torch._foreach_add_(steps, 1)
    beta1, beta2 = group["betas"]
    # AdamW's decoupled weight decay: a group flag in recent torch (AdamW subclasses Adam), the class before.
    decoupled = group.get("decoupled_weight_decay", type(optimizer) is torch.optim.AdamW)
    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
           beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False, grad_scale=None,
           found_inf=None)


def zero_grads(optimizer: torch.optim.Optimizer) -> None:
    """Every parameter's gradient to zero, kept allocated (what the by-hand backward adds into)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
    if grads and all(g is not None and g.device == grads[0].device and not g.is_sparse for g in grads):
        torch._foreach_zero_(grads)
    else:
        optimizer.zero_grad(set_to_none=False)
