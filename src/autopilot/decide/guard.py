"""The guard: every proposal, from any advisor, passes here before it is staged.

It checks the whitelist and the ranges (from the search space), the trust region (no knob moves more
than a set factor per step unless the proposal says why), the trainer's invariants (reusing their
violation texts), the runtime budget, the resume policy (never from a suspect or broken run) and that
the config is not an accidental repeat. What is derivable it repairs and records (batch sizes back to
"auto", a value clamped into its range, total_timesteps shrunk to the budget); the rest it rejects
with reasons that name the key, the value, the rule and a valid alternative. Its checks are the
notes' Checks section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopilot.config.invariants import (
    Check,
    check_config,
    derive_batch,
    resolve_config,
    run_budget,
    steps_that_fit,
)
from autopilot.config.load import config_from_dict, config_space
from autopilot.config.model import Config
from autopilot.config.overrides import apply_overrides, flatten, unknown_key
from autopilot.decide.records import GuardVerdict, Proposal, RunRecord
from autopilot.decide.sanity import suspect_reasons
from autopilot.decide.trends import SEED_KEY, Start, knobs_of, start_point
from autopilot.errors import ConfigError
from autopilot.space import ParamSpec, SearchSpace, fmt_num
from autopilot.summary import is_finite_number

RESUME_KEYS = {"autopilot.resume_mode": "resume_mode", "autopilot.resume_from": "resume_from",
               "autopilot.save_strategy": "save_strategy"}
DERIVED_KEYS = ("train.batch_size", "train.minibatch_size")
BUDGET_KEY = "train.total_timesteps"
BROKEN_STATUSES = ("crashed", "failed", "diverged", "stalled")


@dataclass(frozen=True)
class TrustRegion:
    """How far one knob may move in one step: ×factor / ÷factor on log scales, ±frac of the range on
    linear ones (at least 1 for integers); a bool or a choice may change once."""

    log_factor: float = 2.0
    linear_frac: float = 0.25

    def interval(self, spec: ParamSpec, old: Any) -> tuple[float, float] | None:
        if not spec.numeric or not is_finite_number(old):
            return None
        lo, hi = float(spec.low), float(spec.high)  # type: ignore[arg-type]
        if spec.is_off(old):
            # From "off" the one move is to the standard value (the prior's center), not a share of the range.
            return 0.0, on_value(spec)
        if spec.multiplicative:
            if old <= 0:
                return lo, hi
            if spec.scale == "log1m":  # 1 - v moves by the factor
                a, b = 1 - (1 - old) * self.log_factor, 1 - (1 - old) / self.log_factor
            else:
                a, b = old / self.log_factor, old * self.log_factor
            if spec.scale == "intlog":
                a, b = min(math.floor(a + 1e-9), old - 1), max(math.ceil(b - 1e-9), old + 1)
            if spec.scale == "log0" and a < lo:
                a = 0.0  # a step down past the smallest "on" value turns the term off
            return max(a, lo if spec.scale != "log0" else 0.0), min(b, hi)
        w = self.linear_frac * (hi - lo)
        a, b = old - w, old + w
        if spec.scale == "int":  # whole steps inside the region, at least one
            w = max(1.0, w)
            a, b = math.ceil(old - w - 1e-9), math.floor(old + w + 1e-9)
        return max(a, lo), min(b, hi)

    def allows(self, spec: ParamSpec, old: Any, new: Any) -> bool:
        span = self.interval(spec, old)
        if span is None or not is_finite_number(new):
            return True
        tol = 1e-9 * max(1.0, abs(span[0]), abs(span[1]))
        return span[0] - tol <= new <= span[1] + tol

    def rule(self, spec: ParamSpec) -> str:
        if spec.scale == "log1m":
            return f"1 - value ×{self.log_factor:g}/÷{self.log_factor:g} per step (log1m scale)"
        if spec.multiplicative:
            off = f"; from 0 (off) only to {fmt_num(on_value(spec))}" if spec.scale == "log0" else ""
            return f"×{self.log_factor:g}/÷{self.log_factor:g} per step ({spec.scale} scale{off})"
        w = self.linear_frac * (float(spec.high) - float(spec.low))  # type: ignore[arg-type]
        return f"±{self.linear_frac:.0%} of the range = ±{fmt_num(max(w, 1) if spec.scale == 'int' else w)} per step"


TRUST = TrustRegion()


def on_value(spec: ParamSpec) -> float:
    """The value a `log0` knob takes when it is switched on: its prior's standard value."""
    if spec.prior is not None and spec.prior.center > 0:
        return spec.prior.center
    return float(spec.low) * 10  # type: ignore[arg-type]




@dataclass
class _Work:
    """The guard's scratch state while it walks the rules."""

    proposal: Proposal
    reasons: list[str]
    repairs: list[str]
    checks: list[Check]

    def check(self, name: str, bad: list[str], ok_detail: str, fail_detail: str = "") -> None:
        self.reasons += bad
        detail = (fail_detail or "; ".join(bad[:2])) if bad else ok_detail
        self.checks.append(Check(name, "fail" if bad else "ok", detail, bad))


# -- rules --------------------------------------------------------------------------------------------
def _normalise(w: _Work, base_flat: dict[str, Any], space: SearchSpace) -> None:
    """Whitelist, types and ranges of the proposed values (repairs recorded, the rest rejected)."""
    p, bad, tunable = w.proposal, [], sorted(k for k, s in space.items() if s.tunable)
    changes: dict[str, Any] = {}
    for key, value in p.changes.items():
        if key in RESUME_KEYS:
            setattr(p, RESUME_KEYS[key], value)
            w.repairs.append(f"{key}={value} moved to the proposal's resume policy")
            continue
        if key in DERIVED_KEYS:
            if value != "auto":
                w.repairs.append(f"{key}={value} replaced by \"auto\": batch sizes are derived, never guessed")
            changes[key] = "auto"
            continue
        spec = space.get(key)
        if key not in base_flat and spec is None:
            bad.append(f"{key}={fmt_num(value)}: {unknown_key(key, [*base_flat, *space], listed=tunable)}")
            continue
        if key == SEED_KEY or key == BUDGET_KEY:
            pass  # seed (repeats) and total_timesteps (budget-checked below) are allowed
        elif spec is None or not spec.tunable:
            bad.append(f"{key}={fmt_num(value)} is not tunable (rule: advisors change only tunable keys, "
                       f"autopilot resume/save keys and train.total_timesteps); tunable keys: {', '.join(tunable)}")
            continue
        if spec is not None and not spec.contains(value):
            if spec.numeric and is_finite_number(value):
                fixed = spec.clamp(value)
                w.repairs.append(f"{key}={fmt_num(value)} clamped to {fmt_num(fixed)} (range {spec.describe()})")
                value = fixed
            else:
                bad.append(f"{key}={value!r} is not a valid value (rule: every value inside its range "
                           f"{spec.describe()}); use e.g. {fmt_num(spec.clamp(base_flat.get(key, spec.low)))}")
                continue
        if base_flat.get(key, object()) == value and key not in DERIVED_KEYS:
            w.repairs.append(f"{key}={fmt_num(value)} dropped: already the current value")
            continue
        changes[key] = value
    p.changes = changes
    n = sum(1 for k in changes if k not in DERIVED_KEYS)
    w.check("whitelist", bad, f"{n} key(s) changed, all tunable or budget/seed keys")


def _trust(w: _Work, base_flat: dict[str, Any], space: SearchSpace, trust: TrustRegion,
           history: list[RunRecord]) -> None:
    p, bad, moved = w.proposal, [], []
    # A value a trusted run of the ledger already used is known ground: going back to it is no leap.
    known = {}
    for r in history:
        if r.config is not None and not suspect_reasons(r) and r.status not in BROKEN_STATUSES:
            for k, v in flatten(r.config.model_dump(exclude={"sweep"})).items():
                known.setdefault((k, repr(v)), r.run_id)
    for key, new in p.changes.items():
        spec = space.get(key)
        if spec is None or key in (SEED_KEY, BUDGET_KEY) or not spec.numeric:
            continue
        old = base_flat.get(key)
        if trust.allows(spec, old, new):
            continue
        if (key, repr(new)) in known:
            moved.append(f"{key} {fmt_num(old)} -> {fmt_num(new)} (run {known[(key, repr(new))]} used it)")
            continue
        lo, hi = trust.interval(spec, old)  # type: ignore[misc]
        if p.trust_region_override:
            moved.append(f"{key} {fmt_num(old)} -> {fmt_num(new)}")
            continue
        bad.append(f"{key}={fmt_num(new)} moves from {fmt_num(old)} beyond the trust region "
                   f"(rule: {trust.rule(spec)}); use a value in [{fmt_num(spec.clamp(lo))}, "
                   f"{fmt_num(spec.clamp(hi))}] or give trust_region_override a reason")
    why = f"by override: {p.trust_region_override}" if p.trust_region_override else "back to values the ledger has run"
    ok = (f"beyond the region {why}: {', '.join(moved)}" if moved
          else f"every knob within ×{trust.log_factor:g}/÷{trust.log_factor:g} (log) or "
               f"±{trust.linear_frac:.0%} of range (linear)")
    w.check("trust region", bad, ok)


def _build(w: _Work, base: Config) -> Config | None:
    try:
        cfg = config_from_dict(apply_overrides(base.model_dump(), w.proposal.as_override()))
    except ConfigError as exc:
        w.check("config", exc.violations, "")
        return None
    # Batch sizes are derived: whenever the topology or bptt changed, or a fixed size breaks the rules.
    try:
        derived, before = derive_batch(cfg).batch, derive_batch(base).batch
    except (ConfigError, ValueError, TypeError):
        return cfg
    fixed = {}
    if cfg.train.batch_size != "auto" and (cfg.train.batch_size != derived or derived != before):
        fixed["train.batch_size"] = f"{cfg.train.batch_size} -> auto ({derive_batch(cfg)})"
    if cfg.train.minibatch_size != "auto" and (fixed or cfg.train.bptt_horizon != base.train.bptt_horizon
                                               or derived % int(cfg.train.minibatch_size)
                                               or int(cfg.train.minibatch_size) % cfg.train.bptt_horizon):
        fixed["train.minibatch_size"] = f"{cfg.train.minibatch_size} -> auto"
    for key, how in fixed.items():
        w.proposal.changes[key] = "auto"
        w.repairs.append(f"{key} re-derived: {how} (rule: batch = agents × bptt)")
    if fixed:
        cfg = config_from_dict(apply_overrides(base.model_dump(), w.proposal.as_override()))
    return cfg


def _budget(w: _Work, cfg: Config, sps: float | None, remaining_seconds: float | None) -> Config:
    """Shrink total_timesteps to what fits min(max_run_seconds, remaining session seconds) at `sps`."""
    if not sps or sps <= 0:
        return cfg
    budget, source = run_budget(cfg, remaining_seconds)
    tt = cfg.train.total_timesteps
    if tt / sps <= budget:
        return cfg
    batch = derive_batch(cfg).batch
    fit = steps_that_fit(sps, budget, batch)
    if fit < batch:
        w.reasons.append(f"train.total_timesteps: even one batch of {batch:,} needs {batch / sps:,.0f}s at "
                         f"{sps:,.0f} SPS, over {source} (rule: estimated wall time fits the budget); "
                         f"raise the budget or shrink the topology")
        w.checks.append(Check("budget", "fail", f"one batch {batch / sps:,.0f}s > {budget:,.0f}s", w.reasons[-1:]))
        return cfg
    w.proposal.changes[BUDGET_KEY] = fit
    w.repairs.append(f"train.total_timesteps {tt:,} -> {fit:,}: {tt:,} / {sps:,.0f} SPS = {tt / sps:,.0f}s is "
                     f"over {source}; whole batches of {batch:,} that fit")
    out = cfg.model_copy(deep=True)
    out.train.total_timesteps = fit
    return out


def _unseeded(cfg: Config) -> dict[str, Any]:
    """The knobs a seed repeat must share with the run it repeats (seed and resume policy aside)."""
    return {k: v for k, v in knobs_of(cfg).items() if k != SEED_KEY}


def _proposal_start(p: Proposal, history: list[RunRecord], best: RunRecord | None) -> Start:
    if p.resume_mode == "fresh":
        return ("fresh",)
    if p.resume_from == "best":
        return ("run", best.run_id) if best is not None else ("unknown", "best")
    if p.resume_from == "latest":
        return ("run", history[-1].run_id) if history else ("unknown", "latest")
    return ("path", p.resume_from)


def _repeat(w: _Work, cfg: Config, history: list[RunRecord], best: RunRecord | None) -> None:
    """An accidental repeat is the same knobs from the same start point. A warm start continues a
    checkpoint no earlier run began from, so "keep training" or "revert and warm-start from best" is
    a new experiment, not a repeat."""
    p = w.proposal
    bad = []
    mine, start = knobs_of(cfg), _proposal_start(p, history, best)
    # A run the infrastructure cut short (interrupted, crashed, stalled) is no finished experiment: running
    # it again is a retry, not a repeat.
    same = [r.run_id for r in history if r.config is not None and knobs_of(r.config) == mine
            and start_point(r) == start and r.status not in ("interrupted", "crashed", "failed", "stalled")]
    seeds = {r.config.train.seed for r in history if r.config is not None}
    free_seed = max(seeds | {cfg.train.seed}) + 1
    if p.seed_repeat:
        twins = [r.run_id for r in history if r.config is not None and _unseeded(r.config) == _unseeded(cfg)]
        if not twins:
            bad.append("seed_repeat=true but the config matches no run in the ledger apart from train.seed (rule: "
                       "a seed repeat repeats an existing config with another seed); set seed_repeat=false or "
                       "copy that run's knobs")
    if same:
        hint = (f"use train.seed={free_seed}" if p.seed_repeat
                else f"change a knob, or set seed_repeat=true with train.seed={free_seed}")
        where = "fresh" if start[0] == "fresh" else f"from {start[0]} {start[1]}"
        bad.append(f"the proposed config repeats run {same[-1]} exactly (train.seed={cfg.train.seed}, starting "
                   f"{where}; rule: no accidental exact repeat); {hint}")
    if p.seed_repeat:
        ok = "a deliberate seed repeat (train.seed " + fmt_num(cfg.train.seed) + ")"
    elif start[0] != "fresh":
        ok = f"a warm start from {start[0]} {start[1]}: no earlier run began from that checkpoint with these knobs"
    else:
        ok = f"differs from all {sum(1 for r in history if r.config is not None)} configs in the ledger"
    w.check("no repeat", bad, ok)


def _resume(w: _Work, history: list[RunRecord], best: RunRecord | None) -> None:
    p, bad = w.proposal, []
    latest = history[-1] if history else None
    if p.resume_mode == "fresh":
        w.check("resume", [], "fresh start (no checkpoint)")
        return
    src = p.resume_from
    alt = "use resume_mode=fresh"
    if src == "best":
        if best is None:
            bad.append(f"autopilot.resume_from=best but there is no best run yet (rule: resume only from a "
                       f"trusted checkpoint); use latest or {alt}")
        elif (why := suspect_reasons(best)):
            bad.append(f"autopilot.resume_from=best but best run {best.run_id} is suspect ({why[0]}) (rule: never "
                       f"resume from a suspect run); {alt}")
        detail = f"continue from best ({best.run_id})" if best is not None else ""
    elif src == "latest":
        if latest is None:
            bad.append(f"autopilot.resume_from=latest but the ledger is empty; {alt}")
        elif (why := suspect_reasons(latest)):
            bad.append(f"autopilot.resume_from=latest but run {latest.run_id} is suspect ({why[0]}) (rule: never "
                       f"resume from a suspect run); use best or {alt}")
        elif latest.status in BROKEN_STATUSES:
            bad.append(f"autopilot.resume_from=latest but run {latest.run_id} {latest.status} (rule: never resume "
                       f"from a broken run); use best or {alt}")
        detail = f"continue from latest ({latest.run_id})" if latest is not None else ""
    else:
        if not Path(src).exists():
            bad.append(f"autopilot.resume_from={src} does not exist (rule: a checkpoint path must exist); "
                       f"use latest, best or {alt}")
        detail = f"continue from {src}"
    w.check("resume", bad, detail)


# -- entry point --------------------------------------------------------------------------------------
def guard(proposal: Proposal, *, base: Config, history: list[RunRecord], space: SearchSpace | None = None,
          sps: float | None = None, remaining_seconds: float | None = None, best: RunRecord | None = None,
          trust: TrustRegion = TRUST) -> GuardVerdict:
    """Check (and repair what is derivable in) `proposal`, whose changes apply to `base`."""
    w = _Work(proposal.model_copy(deep=True), [], [], [])
    space = space if space is not None else config_space(base)
    base_flat = flatten(base.model_dump(exclude={"sweep"}))
    _normalise(w, base_flat, space)
    _trust(w, base_flat, space, trust, history)
    cfg = _build(w, base) if not w.reasons else None
    if cfg is not None:
        cfg = _budget(w, cfg, sps, remaining_seconds)
        invariants = check_config(cfg, space, sps=sps)
        w.checks += invariants
        w.reasons += [v for c in invariants for v in c.violations]
        _repeat(w, cfg, history, best)
    _resume(w, history, best)
    accepted = not w.reasons
    return GuardVerdict(accepted=accepted, proposal=w.proposal, config=resolve_config(cfg) if accepted and cfg else None,
                        checks=w.checks, reasons=w.reasons, repairs=w.repairs)
