"""The trainer's invariants, checked before every launch, by `autopilot validate`, and on every proposal.

Each check yields a `Check` (✓/✗/–) and, when it fails, violations that name the key, the value, the
rule and a valid alternative. Batch sizes are derived (`"auto"`), never guessed: the segments rule is
`batch_size = agents × bptt_horizon`, `agents = vec.num_envs × agents per env object`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from autopilot.config.model import Config
from autopilot.config.overrides import flatten
from autopilot.envs.registry import agents_factors, agents_per_env
from autopilot.errors import ConfigError
from autopilot.space import SearchSpace, fmt_num

Status = Literal["ok", "fail", "skip"]
MARK = {"ok": "✓", "fail": "✗", "skip": "–"}


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def line(self) -> str:
        return f"{MARK[self.status]} {self.name}: {self.detail}"


@dataclass(frozen=True)
class BatchArithmetic:
    factors: list[int]  # env factors..., vec.num_envs, bptt
    batch: int

    def __str__(self) -> str:
        return "×".join(str(f) for f in self.factors) + f" = {self.batch:,}"


MAX_BATCH = 2**40  # far above any real batch; beyond it the ranges check has already failed
# Beyond this many segments (4.3 billion) no real batch goes; a number that large comes from a broken or
# hostile config, which the range check refuses anyway, and must not cost minutes of arithmetic first.
MAX_SEGMENTS = 2**32


def divisors(n: int) -> list[int]:
    """The divisors of n in ascending order, in O(sqrt n)."""
    if n <= 0:
        return []
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


def derive_batch(cfg: Config) -> BatchArithmetic:
    """batch = agents per env object × env objects × bptt, as the config's backend counts agents."""
    from autopilot.backends import get_backend

    return get_backend(cfg.backend).derive_batch(cfg)


def derive_builtin_batch(cfg: Config) -> BatchArithmetic:
    factors = agents_factors(cfg.env_name, cfg.env) + [cfg.vec.num_envs, cfg.train.bptt_horizon]
    batch = 1
    for f in factors:
        batch *= f
    return BatchArithmetic(factors, batch)


def derive_minibatch_size(batch: int, bptt: int, max_minibatch: int) -> int:
    """The largest minibatch that divides the batch, is whole segments, and gives ≥4 minibatches
    when the batch allows it (one giant minibatch per epoch is a weak default for PPO)."""
    target = min(max_minibatch, batch // 4) if batch // 4 >= bptt else min(max_minibatch, batch)
    best = bptt
    segments = batch // bptt if bptt else 0
    if segments > MAX_SEGMENTS:
        return best
    for d in divisors(segments):
        m = d * bptt
        if m <= target:
            best = max(best, m)
    return best


def resolve_config(cfg: Config) -> Config:
    """A copy with the derivable values filled in, as the config's backend derives them."""
    from autopilot.backends import get_backend

    return get_backend(cfg.backend).resolve(cfg)


def resolve_builtin(cfg: Config) -> Config:
    """autopilot's rule: `batch_size` and `minibatch_size` from "auto"."""
    out = cfg.model_copy(deep=True)
    if cfg.train.batch_size == "auto":
        out.train.batch_size = derive_batch(cfg).batch
    if cfg.train.minibatch_size == "auto":
        out.train.minibatch_size = derive_minibatch_size(
            int(out.train.batch_size), cfg.train.bptt_horizon, cfg.train.max_minibatch_size
        )
    return out


# --------------------------------------------------------------------------------------------------
def check_ranges(cfg: Config, space: SearchSpace) -> Check:
    flat = flatten(cfg.model_dump(exclude={"sweep"}))
    bad = []
    for key, value in flat.items():
        spec = space.get(key)
        if spec is None or spec.contains(value):
            continue
        bad.append(
            f"{key}={fmt_num(value)} is outside its range {spec.describe()} (rule: every value inside its "
            f"range); use e.g. {fmt_num(spec.clamp(value))}"
        )
    n = sum(1 for k in flat if k in space)
    return Check("ranges", "fail" if bad else "ok", f"{n - len(bad)}/{n} values inside their ranges", bad)


def check_divisibility(cfg: Config) -> Check:
    ne, nw = cfg.vec.num_envs, cfg.vec.num_workers
    if ne < 1 or nw < 1:
        return Check("divisibility", "skip", "needs positive vec.num_envs and vec.num_workers")
    if ne % nw == 0:
        return Check("divisibility", "ok", f"vec.num_envs % vec.num_workers = {ne} % {nw} = 0")
    msg = (f"vec.num_workers={nw} does not divide vec.num_envs={ne} (rule: vec.num_envs % vec.num_workers == 0); "
           f"use one of {', '.join(str(d) for d in divisors(ne))}")
    return Check("divisibility", "fail", f"{ne} % {nw} = {ne % nw} ≠ 0", [msg])


def check_segments(cfg: Config) -> tuple[Check, BatchArithmetic | None]:
    try:
        arith = derive_batch(cfg)
    except (ConfigError, ValueError, TypeError) as exc:
        return Check("segments", "skip", f"cannot derive the batch: {exc}"), None
    bs = cfg.train.batch_size
    if bs == "auto" or bs == arith.batch:
        how = "derived" if bs == "auto" else "matches"
        return Check("segments", "ok", f"batch = agents × bptt = {arith} ({how})"), arith
    msg = (f"train.batch_size={bs} breaks the segments rule batch = agents × bptt = {arith} "
           f"(agents = {arith.batch // cfg.train.bptt_horizon:,}); use {arith.batch} or \"auto\"")
    return Check("segments", "fail", f"{bs:,} ≠ {arith}", [msg]), arith


def check_minibatch(cfg: Config, batch: int | None) -> Check:
    t = cfg.train
    if batch is None:
        return Check("minibatch", "skip", "no batch size to check against")
    bptt, mmb = t.bptt_horizon, t.max_minibatch_size
    mb = derive_minibatch_size(batch, bptt, mmb) if t.minibatch_size == "auto" else t.minibatch_size
    valid = [d * bptt for d in divisors(batch // bptt)] if bptt > 0 and batch % bptt == 0 else []
    hint = ", ".join(f"{v:,}" for v in valid[-6:]) if valid else "\"auto\""
    bad = []
    if mb < 1 or mb > batch:
        bad.append(f"train.minibatch_size={mb} must be ≤ train.batch_size={batch} (rule: minibatch ≤ batch); "
                   f"use one of {hint}")
    elif batch % mb:
        bad.append(f"train.minibatch_size={mb} does not divide train.batch_size={batch} "
                   f"(rule: batch % minibatch == 0); use one of {hint}")
    if mb >= 1 and bptt >= 1 and mb % bptt:
        bad.append(f"train.minibatch_size={mb} is not whole segments of train.bptt_horizon={bptt} "
                   f"(rule: minibatch % bptt == 0); use one of {hint}")
    if not bad and mb > mmb >= 1 and (mb % mmb or mmb % bptt):
        chunk_sizes = [v for v in valid if mb % v == 0 and v <= mmb]
        alt = f"max_minibatch_size {chunk_sizes[-1]}" if chunk_sizes else f"max_minibatch_size {mb}"
        bad.append(f"train.max_minibatch_size={mmb} does not split train.minibatch_size={mb} into whole chunks "
                   f"of segments (rule: minibatch % max_minibatch == 0 and max_minibatch % bptt == 0); "
                   f"use {alt} (or max_minibatch_size ≥ {mb} for no accumulation)")
    chunks = max(1, -(-mb // mmb)) if mmb >= 1 else 1
    detail = f"minibatch {mb:,} of batch {batch:,}" + (f", accumulated in {chunks} chunks" if chunks > 1 else "")
    return Check("minibatch", "fail" if bad else "ok", detail, bad)


def check_timesteps(cfg: Config, batch: int | None, *, rule: str = "total_timesteps ≥ batch_size") -> Check:
    """At least one batch per run; `rule` names why, in the words of the trainer that needs it."""
    if batch is None:
        return Check("timesteps", "skip", "no batch size to check against (see segments)")
    tt = cfg.train.total_timesteps
    if tt >= batch:
        return Check("timesteps", "ok", f"total_timesteps {tt:,} ≥ batch {batch:,} ({tt // batch:,} epochs)")
    msg = f"train.total_timesteps={tt} is below one batch of {batch} (rule: {rule}); use at least {batch}"
    return Check("timesteps", "fail", f"{tt:,} < {batch:,}", [msg])


def check_device(cfg: Config) -> Check:
    dev = cfg.train.device
    if dev in ("cpu", "auto"):
        return Check("device", "ok", f"{dev} is available")
    import torch  # deferred: validation of a cpu config should not pay for importing torch

    available = {"cuda": torch.cuda.is_available(),
                 "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    if available.get(dev):
        return Check("device", "ok", f"{dev} is available")
    msg = (f"train.device={dev} is not available on this machine (rule: the device must exist); "
           f"use cpu, or auto to take the best available")
    return Check("device", "fail", f"{dev} not found", [msg])


def run_budget(cfg: Config, remaining_seconds: float | None = None) -> tuple[float, str]:
    """(seconds one run may take, where that limit comes from): `autopilot.max_run_seconds`, or the
    session's remaining seconds when fewer. The one home of the runtime-budget arithmetic, with
    `steps_that_fit`: the invariant, the guard and the advisors all use these two."""
    budget = cfg.autopilot.max_run_seconds
    if remaining_seconds is not None and remaining_seconds < budget:
        return remaining_seconds, f"the session's remaining {remaining_seconds:,.0f}s"
    return budget, f"autopilot.max_run_seconds={budget:,.0f}"


def steps_that_fit(sps: float, budget_s: float, batch: int = 1) -> int:
    """The largest total_timesteps, in whole batches, that `sps` gets through in `budget_s` seconds."""
    return int(sps * budget_s) // batch * batch


def check_runtime(cfg: Config, sps: float | None) -> Check:
    budget, source = run_budget(cfg)
    if not sps or sps <= 0:
        return Check("runtime", "skip", f"no measured SPS yet; budget {budget:,.0f}s")
    est = cfg.train.total_timesteps / sps
    if est <= budget:
        return Check("runtime", "ok", f"est. {cfg.train.total_timesteps:,} / {sps:,.0f} SPS = {est:,.0f}s ≤ {budget:,.0f}s")
    fit = steps_that_fit(sps, budget)
    msg = (f"train.total_timesteps={cfg.train.total_timesteps} needs about {est:,.0f}s at {sps:,.0f} SPS, over "
           f"{source} (rule: estimated wall time fits the budget); "
           f"use at most {fit}")
    return Check("runtime", "fail", f"est. {est:,.0f}s > {budget:,.0f}s", [msg])


def check_config(cfg: Config, space: SearchSpace | None = None, *, sps: float | None = None) -> list[Check]:
    """Run every invariant of the config's backend; never raises for a rule violation (see `ensure_valid`)."""
    from autopilot.backends import get_backend
    from autopilot.config.load import config_space

    space = space if space is not None else config_space(cfg)
    return get_backend(cfg.backend).checks(cfg, space, sps)


def builtin_checks(cfg: Config, space: SearchSpace, *, sps: float | None = None) -> list[Check]:
    """The rules of autopilot's own trainer (segments, minibatch, divisibility, budget, device)."""
    checks = [check_ranges(cfg, space), check_divisibility(cfg)]
    seg, arith = check_segments(cfg)
    checks.append(seg)
    batch = (arith.batch if cfg.train.batch_size == "auto" else int(cfg.train.batch_size)) if arith else None
    if batch is not None and not 1 <= batch <= MAX_BATCH:
        batch = None  # out-of-range topology keys already fail `ranges`; no arithmetic on absurd sizes
    checks += [check_minibatch(cfg, batch), check_timesteps(cfg, batch), check_device(cfg),
               check_runtime(cfg, sps)]
    return checks


def ensure_valid(cfg: Config, space: SearchSpace | None = None, *, sps: float | None = None) -> Config:
    """Raise `ConfigError` listing every violation; return the resolved config when all rules hold."""
    checks = check_config(cfg, space, sps=sps)
    violations = [v for c in checks for v in c.violations]
    if violations:
        raise ConfigError(violations)
    return resolve_config(cfg)


def agents_total(cfg: Config) -> int:
    return agents_per_env(cfg.env_name, cfg.env) * cfg.vec.num_envs
