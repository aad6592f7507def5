"""Diagnosis of the latest run: stable finding codes, each with the numbers and thresholds that fired it.

Every threshold lives in `Thresholds` and is copied into the finding's evidence, so a note shows both
the measured value and the line it crossed. Findings are ordered by importance (status, glitches,
regression, update size, entropy, value fit, env-specific, plateau, throughput); advisors read moves
in that order.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from autopilot.config.invariants import resolve_config
from autopilot.config.model import Config
from autopilot.decide.records import Finding, Move, NoiseBand, RunRecord
from autopilot.decide.sanity import objective_of, record_score, suspect_reasons, trusted_score
from autopilot.decide.trends import SEED_KEY, material_diff, noise_band
from autopilot.space import fmt_num
from autopilot.summary import TrainerSummary

UNIT_GAUSSIAN_ENTROPY = 0.5 * math.log(2 * math.pi * math.e)  # ≈ 1.4189 nats per dimension (std 1)


@dataclass(frozen=True)
class Thresholds:
    # PPO update size (tail means of the trainer's stats).
    kl_small: float = 1e-3  # approx_kl below this AND clipfrac below clipfrac_small: updates_too_small
    clipfrac_small: float = 0.01
    kl_large: float = 0.05  # approx_kl above this OR clipfrac above clipfrac_large: updates_too_large
    clipfrac_large: float = 0.30
    # Fewer optimizer steps per batch than this (update_epochs × minibatches): the measured KL is small by
    # construction (the first pass is at ratio 1), so updates_too_small is answered with epochs first.
    few_gradient_steps: int = 8
    # Entropy, judged per action dimension. A Gaussian's entropy is Σ (1.4189 + ln σ_i), so per-dim
    # entropy maps to an equivalent std σ = exp(h/act_dim − 1.4189).
    entropy_high_std: float = 1.0  # σ above this (wider than a unit Gaussian): entropy_too_high
    entropy_collapsed_std: float = 0.05  # σ below this: entropy_collapsed
    # σ above this on actions in [-1, 1]: the policy is noise (clipped actions are nearly ±1 at random), so
    # warm-starting its checkpoint inherits the noise and the entropy step is taken twice as large.
    degenerate_std: float = 3.0
    # Without act_dim: entropy that narrowed by at most this fraction of |its start| over the run.
    entropy_narrowing: float = 0.02
    discrete_high_frac: float = 0.95  # discrete: entropy / ln(n) above this: too high
    discrete_collapsed_frac: float = 0.05  # ... below this: collapsed
    # ... below this: a confident policy, whose ratio barely moves under any step (a categorical's KL for a
    # logit step δ is about p(1 − p) δ² / 2): small KL is then its confidence, not a small step.
    discrete_confident_frac: float = 0.25
    # Value function.
    explained_var_low: float = 0.2
    value_loss_high: float = 10.0  # for rewards of order 1-10 per step
    # Ledger-level.
    plateau_runs: int = 3  # the last k trusted runs all within the noise band
    throughput_window: int = 5  # previous runs of the same topology the SPS is compared with
    throughput_drop_frac: float = 0.25  # SPS below the window's median by more than this fraction
    # Env-specific (fire only when the env reports the metric).
    oob_high: float = 0.5
    collision_high: float = 0.10


THRESHOLDS = Thresholds()


def _stat(summary: TrainerSummary | None, name: str) -> float | None:
    value = summary.metric(name) if summary is not None else None
    return value if value is not None and math.isfinite(value) else None


def _f(x: float) -> float:
    return float(f"{x:.4g}")


# -- status ------------------------------------------------------------------------------------------
def _status(rec: RunRecord) -> list[Finding]:
    status = rec.status
    error = (rec.loop_summary.error if rec.loop_summary else None) or (
        rec.trainer_summary.error if rec.trainer_summary else None)
    ev = {"rule": f"status={status}", "status": status} | ({"error": error[-200:]} if error else {})
    if status == "diverged":
        return [Finding(code="diverged", severity="error", evidence=ev,
                        theory="The loss or parameters went non-finite: the step size was too large for "
                               "this batch.",
                        moves=[Move(key="train.learning_rate", direction="down", factor=0.5,
                                    why="diverged: halve the step"),
                               Move(key="train.max_grad_norm", direction="down", factor=0.5,
                                    why="diverged: clip gradients harder")])]
    if status == "stalled":
        return [Finding(code="stalled", severity="error", evidence=ev,
                        theory="No progress reached the watchdog within autopilot.stall_seconds: a hang in "
                               "the env workers or the trainer, not a learning problem.")]
    if status in ("crashed", "failed") or (rec.trainer_summary is None and status not in ("running", "interrupted")):
        if rec.trainer_summary is None:
            ev["rule"] = f"status={status}, no trainer_summary.json"
        return [Finding(code="crashed", severity="error", evidence=ev,
                        theory="The trainer exited without a usable summary; its checkpoint cannot be trusted.")]
    return []


def _glitch(rec: RunRecord) -> list[Finding]:
    reasons = suspect_reasons(rec)
    if not reasons:
        return []
    return [Finding(code="metric_glitch", severity="error", evidence={"rule": "a value breaks its own definition", "reasons": "; ".join(reasons)},
                    theory="A value breaks its own definition, so this run's numbers cannot be compared: it is "
                           "suspect, never best, excluded from trends and the noise band, and never "
                           "resumed from.")]


# -- PPO update size ----------------------------------------------------------------------------------
def gradient_steps_per_batch(cfg: Config | None) -> int | None:
    """update_epochs × minibatches per batch: the optimizer steps each batch gets (None if unknown)."""
    if cfg is None:
        return None
    try:
        r = resolve_config(cfg)
        return int(r.train.update_epochs) * max(1, int(r.train.batch_size) // max(1, int(r.train.minibatch_size)))
    except Exception:  # a config an external trainer wrote may not resolve: the fact is then unknown
        return None


def _updates(s: TrainerSummary | None, t: Thresholds, cfg: Config | None = None) -> list[Finding]:
    kl, cf = _stat(s, "approx_kl"), _stat(s, "clipfrac")
    if kl is None or cf is None:
        return []
    if kl < t.kl_small and cf < t.clipfrac_small and gradient_steps_per_batch(cfg) == 1:
        # One optimizer step per batch: the ratio is measured before that step, so it is exactly 1 and
        # approx_kl/clipfrac are 0 by construction. Only more passes let the policy move within a batch.
        return [Finding(code="updates_too_small", severity="warn",
                        evidence={"rule": f"approx_kl {kl:.2g} < {t.kl_small:g} and clipfrac {cf:.2g} < "
                                          f"{t.clipfrac_small:g} with 1 gradient step per batch (update_epochs × "
                                          f"minibatches = 1)",
                                  "approx_kl": _f(kl), "clipfrac": _f(cf), "gradient_steps_per_batch": 1},
                        theory="Each batch gets a single gradient step, taken at ratio 1: the clip never acts and "
                               "the policy moves one small step per batch of experience.",
                        moves=[Move(key="train.update_epochs", direction="up", factor=4.0, required=True,
                                    why="more passes per batch: the only way the policy moves further within one "
                                        "batch (lr and clip act only after the first step)"),
                               Move(key="train.clip_coef", direction="up", factor=2.0,
                                    why="with several steps per batch the clip bounds how far the policy moves")])]
    if kl < t.kl_small and cf < t.clipfrac_small:
        steps = gradient_steps_per_batch(cfg)
        few = steps is not None and steps < t.few_gradient_steps
        ev = {"rule": f"approx_kl {kl:.2g} < {t.kl_small:g} and clipfrac {cf:.2g} < {t.clipfrac_small:g}",
              "approx_kl": _f(kl), "kl_small": t.kl_small, "clipfrac": _f(cf), "clipfrac_small": t.clipfrac_small}
        if steps is not None:
            ev["gradient_steps_per_batch"] = steps
        epochs = Move(key="train.update_epochs", direction="up", factor=2.0, required=few,
                      why=(f"only {steps} gradient steps per batch (< {t.few_gradient_steps}): the first pass is "
                           "taken at ratio 1, so more passes are what lets a batch move the policy") if few
                      else "more passes per batch raise the per-batch policy change")
        lr = Move(key="train.learning_rate", direction="up", factor=2.0,
                  why="a larger step raises approx_kl toward 0.005-0.02")
        clip = Move(key="train.clip_coef", direction="up", factor=2.0,
                    why="a wider clip lets each update move the policy further")
        theory = (f"approx_kl {kl:.2g} < {t.kl_small:g} and clipfrac {cf:.2g} < {t.clipfrac_small:g}: the policy "
                  "ratio almost never reaches the clip range, so each batch barely moves the policy.")
        moves = [epochs, lr, clip] if few else [lr, epochs, clip]
        frac = _discrete_entropy_frac(s)
        if frac is not None and frac < t.discrete_confident_frac and not few:
            ev["entropy_over_ln_n"] = _f(frac)
            ev["rule"] += f", with entropy / ln(n) = {frac:.2g} < {t.discrete_confident_frac:g} (a confident policy)"
            theory += (f" The policy is nearly deterministic (entropy {frac:.0%} of the uniform policy's): its "
                       "action probabilities are saturated, so any step moves the ratio little; the small KL "
                       "says the policy stopped exploring more than that the step is small.")
            moves = [Move(key="train.ent_coef", direction="up", factor=2.0,
                          why="entropy pressure keeps a confident policy exploring, which is what its small KL "
                              "reflects"), lr, epochs, clip]
        return [Finding(code="updates_too_small", severity="warn", evidence=ev, theory=theory, moves=moves)]
    if kl > t.kl_large or cf > t.clipfrac_large:
        return [Finding(code="updates_too_large", severity="warn",
                        evidence={"rule": " or ".join(
                                      ([f"approx_kl {kl:.3g} > {t.kl_large:g}"] if kl > t.kl_large else [])
                                      + ([f"clipfrac {cf:.3g} > {t.clipfrac_large:g}"] if cf > t.clipfrac_large
                                         else [])),
                                  "approx_kl": _f(kl), "kl_large": t.kl_large, "clipfrac": _f(cf),
                                  "clipfrac_large": t.clipfrac_large},
                        theory=f"approx_kl {kl:.3g} (limit {t.kl_large:g}) / clipfrac {cf:.3g} (limit "
                               f"{t.clipfrac_large:g}): updates leave the trust region PPO's clip assumes.",
                        moves=[Move(key="train.learning_rate", direction="down", factor=0.5,
                                    why="smaller steps keep approx_kl under the limit"),
                               Move(key="train.update_epochs", direction="down", factor=0.5,
                                    why="fewer passes over the same batch"),
                               Move(key="train.clip_coef", direction="down", factor=0.5,
                                    why="a tighter clip bounds each update")])]
    return []


# -- entropy ---------------------------------------------------------------------------------------
def _gaussian_width(s: TrainerSummary, h: float) -> tuple[float, float, int] | None:
    """(entropy per dim, equivalent std, act_dim) of a diagonal Gaussian policy; None when the summary
    does not state act_dim (an external trainer's): the width per dimension is then unknown."""
    act_dim = _stat(s, "act_dim")
    if act_dim is None or act_dim < 1:
        return None
    dims = int(act_dim)
    per_dim = h / dims
    return per_dim, math.exp(min(per_dim - UNIT_GAUSSIAN_ENTROPY, 700.0)), dims


def policy_std(s: TrainerSummary | None) -> float | None:
    """The equivalent Gaussian std of a continuous policy from its tail entropy (None if discrete or
    the action layout is unknown)."""
    h = _stat(s, "entropy")
    if h is None or s is None or _stat(s, "act_n") is not None:
        return None
    width = _gaussian_width(s, h)
    return width[1] if width is not None else None


def _entropy_relative(rec: RunRecord, h: float, ent_coef: float | None, t: Thresholds) -> list[Finding]:
    """Without act_dim the absolute width is unknown, so the run is judged against its own start: a
    policy whose entropy did not narrow at all over the run while the objective stayed flat is kept
    diffuse by the bonus. Never severe: the action layout is assumed, not read."""
    from autopilot.decide.attribution import curve_values

    pts = [v for _, v in curve_values(rec, "entropy")]
    q = len(pts) // 4
    if q < 2:
        return []
    start = statistics.fmean(pts[:q])
    narrowed, limit = start - h, t.entropy_narrowing * max(abs(start), 1.0)
    if narrowed > limit:
        return []
    ev = {"rule": f"entropy {start:.4g} → {h:.4g} over the run: narrowed {narrowed:.3g} ≤ {limit:.3g} "
                  f"({t.entropy_narrowing:g} × |start|; relative: act_dim unknown)",
          "entropy_start": _f(start), "entropy": _f(h), "narrowing_limit": t.entropy_narrowing}
    if ent_coef is not None:
        ev["ent_coef"] = ent_coef
    assumed = ["trainer.act_dim is missing: the width per action dimension is unknown, so entropy is judged "
               "relative to the run's own start, not against a unit Gaussian"]
    return [Finding(code="entropy_too_high", severity="warn", evidence=ev, assumed=assumed,
                    theory=f"entropy went {start:.4g} → {h:.4g}: the policy did not narrow during the run, so the "
                           "entropy bonus may be holding it diffuse.",
                    moves=[Move(key="train.ent_coef", direction="down", factor=0.5,
                                why="less entropy pressure lets the policy commit")])]


def _discrete_entropy_frac(s: TrainerSummary | None) -> float | None:
    """entropy / ln(n) of a categorical policy; None unless the summary states n (act_n) and the entropy."""
    h, n = _stat(s, "entropy"), _stat(s, "act_n")
    if h is None or n is None or n < 2:
        return None
    return h / math.log(n)


def _entropy(rec: RunRecord, ent_coef: float | None, t: Thresholds) -> list[Finding]:
    s = rec.trainer_summary
    h = _stat(s, "entropy")
    if h is None or s is None:
        return []
    n_discrete, frac = _stat(s, "act_n"), _discrete_entropy_frac(s)
    if frac is not None:
        high, low = frac > t.discrete_high_frac, frac < t.discrete_collapsed_frac
        limit = t.discrete_high_frac if high else t.discrete_collapsed_frac
        rule = f"entropy / ln(n) = {frac:.3g} {'>' if high else '<'} {limit:g}"
        ev = {"rule": rule, "entropy": _f(h), "act_n": int(n_discrete), "entropy_over_ln_n": _f(frac),
              "frac_limit": limit}
        what = f"entropy {h:.3g} is {frac:.0%} of the uniform policy's ln({int(n_discrete)})"
    else:
        width = _gaussian_width(s, h)
        if width is None:
            return _entropy_relative(rec, h, ent_coef, t)
        per_dim, std, dims = width
        high, low = std > t.entropy_high_std, std < t.entropy_collapsed_std
        limit_std = t.entropy_high_std if high else t.entropy_collapsed_std
        limit_h = UNIT_GAUSSIAN_ENTROPY + math.log(limit_std)
        cmp = ">" if high else "<"
        ev = {"rule": f"{per_dim:.3g} nats/dim {cmp} {limit_h:.3f} (σ {std:.3g} {cmp} {limit_std:g})",
              "entropy": _f(h), "act_dim": dims,
              "per_dim": _f(per_dim), "per_dim_limit": _f(limit_h),
              "equiv_std": _f(std), "std_limit": limit_std}
        what = (f"entropy {h:.4g} over {dims} action dim(s) = {per_dim:.3g} nats/dim, a Gaussian std of "
                f"{std:.3g} (unit Gaussian: {UNIT_GAUSSIAN_ENTROPY:.3f} nats/dim)")
    if ent_coef is not None:
        ev["ent_coef"] = ent_coef
    if high:
        severe = "equiv_std" in ev and ev["equiv_std"] > t.degenerate_std
        return [Finding(code="entropy_too_high", severity="error" if severe else "warn", evidence=ev,
                        theory=f"{what}: the policy stays diffuse and actions are mostly noise; the entropy bonus "
                               "outweighs the advantage signal.",
                        moves=[Move(key="train.ent_coef", direction="down", factor=0.25 if severe else 0.5,
                                    why="less entropy pressure lets the policy commit"
                                        + (f" (σ {ev['equiv_std']:.3g} > {t.degenerate_std:g}: a quarter, not a half)"
                                           if severe else ""))])]
    if low:
        return [Finding(code="entropy_collapsed", severity="warn", evidence=ev,
                        theory=f"{what}: the policy became near-deterministic and stops exploring, either "
                               "for lack of entropy pressure or driven there by policy steps too large.",
                        moves=[Move(key="train.ent_coef", direction="up", factor=2.0,
                                    why="more entropy pressure restores exploration"),
                               Move(key="train.learning_rate", direction="down", factor=0.5,
                                    why="large steps drive a policy to determinism before it has explored"),
                               Move(key="train.clip_coef", direction="down", factor=0.5,
                                    why="a tighter clip bounds how far each update can sharpen the policy")])]
    return []


def _value_fit(s: TrainerSummary | None, t: Thresholds) -> list[Finding]:
    ev_ = _stat(s, "explained_var")
    vl = _stat(s, "value_loss")
    fired: dict = {}
    rules = []
    if ev_ is not None and ev_ < t.explained_var_low:
        fired |= {"explained_var": _f(ev_), "explained_var_low": t.explained_var_low}
        rules.append(f"explained_var {ev_:.3g} < {t.explained_var_low:g}")
    if vl is not None and vl > t.value_loss_high:
        fired |= {"value_loss": _f(vl), "value_loss_high": t.value_loss_high}
        rules.append(f"value_loss {vl:.4g} > {t.value_loss_high:g}")
    if not fired:
        return []
    fired = {"rule": " and ".join(rules)} | fired
    return [Finding(code="value_fit_poor", severity="warn", evidence=fired,
                    theory="The critic explains little of the return variance, so advantages are mostly noise.",
                    moves=[Move(key="train.vf_coef", direction="up", factor=2.0, why="weight the value loss more"),
                           Move(key="train.update_epochs", direction="up", factor=2.0,
                                why="more passes to fit the value head")])]


def _env_specific(rec: RunRecord, t: Thresholds) -> list[Finding]:
    s, out = rec.trainer_summary, []
    oob = _stat(s, "oob_rate")
    if oob is not None and 0 <= oob <= 1 and oob > t.oob_high:
        gamma = rec.config.train.gamma if rec.config is not None else None
        moves = []
        if gamma is not None and gamma < 0.999:
            target = _f(1 - (1 - gamma) / 2)
            moves.append(Move(key="train.gamma", direction="set", value=target,
                              why=f"halve 1-gamma ({1 - gamma:.3g} -> {1 - target:.3g}): a longer horizon "
                                  "propagates the out-of-bounds penalty"))
        out.append(Finding(code="high_oob", severity="warn",
                           evidence={"rule": f"oob_rate {oob:.3g} > {t.oob_high:g}", "oob_rate": _f(oob),
                                     "oob_high": t.oob_high},
                           theory=f"{oob:.0%} of episodes end out of bounds: the agents drift before they learn "
                                  "to hold position.", moves=moves))
    col = _stat(s, "collision_rate")
    if col is not None and 0 <= col <= 1 and col > t.collision_high:
        out.append(Finding(code="high_collisions", severity="warn",
                           evidence={"rule": f"collision_rate {col:.3g} > {t.collision_high:g}",
                                     "collision_rate": _f(col), "collision_high": t.collision_high},
                           theory=f"collision_rate {col:.3g} > {t.collision_high:g}: noisy actions make agents "
                                  "collide.",
                           moves=[Move(key="train.ent_coef", direction="down", factor=0.5,
                                       why="less action noise, fewer collisions")]))
    return out


# -- ledger-level ------------------------------------------------------------------------------------
def _regression(rec: RunRecord, best: RunRecord | None, objective: str, band: NoiseBand) -> list[Finding]:
    score = trusted_score(rec, objective)
    best_score = trusted_score(best, objective) if best is not None else None
    if score is None or best is None or best_score is None or best.run_id == rec.run_id:
        return []
    gap = best_score - score
    if gap <= band.value:
        return []
    moves = []
    if rec.config is not None and best.config is not None:
        for key, (_, best_value) in material_diff(rec.config, best.config).items():
            if not key.startswith("autopilot.") and key != SEED_KEY:
                moves.append(Move(key=key, direction="revert", value=best_value,
                                  why=f"the best run {best.run_id} used {fmt_num(best_value)}"))
    return [Finding(code="regression_vs_best", severity="warn",
                    evidence={"rule": f"best {best_score:.4g} - {score:.4g} = {gap:.3g} > band {band.value:.3g}",
                              objective: _f(score), "best": _f(best_score), "best_run": best.run_id,
                              "gap": _f(gap), "noise_band": _f(band.value),
                              "band": "measured" if band.measured else "assumed"},
                    theory=f"{objective} {fmt_num(_f(score))} is {gap:.3g} below the best {fmt_num(_f(best_score))} "
                           f"({best.run_id}), more than the noise band {band.value:.3g}: the last changes hurt.",
                    moves=moves)]


def _plateau(history: list[RunRecord], objective: str, band: NoiseBand, t: Thresholds) -> list[Finding]:
    tail = [(r.run_id, s) for r in history if (s := trusted_score(r, objective)) is not None][-t.plateau_runs:]
    if len(tail) < t.plateau_runs or trusted_score(history[-1], objective) is None:
        return []
    scores = [s for _, s in tail]
    spread = max(scores) - min(scores)
    if spread > band.value:
        return []
    return [Finding(code="plateau", severity="info",
                    evidence={"rule": f"spread {spread:.3g} ≤ band {band.value:.3g} over the last {len(tail)} runs",
                              "runs": ", ".join(r for r, _ in tail), "scores": [_f(s) for s in scores],
                              "spread": _f(spread), "noise_band": _f(band.value), "plateau_runs": t.plateau_runs},
                    theory=f"The last {len(tail)} trusted runs are within {spread:.3g} of each other, inside the "
                           f"noise band {band.value:.3g}: the changes made are not measurable.")]


def _topology(rec: RunRecord) -> tuple | None:
    c = rec.config
    if c is None:
        return None
    return (c.env_name, tuple(sorted(c.env.items())), c.vec.num_envs, c.vec.num_workers, c.train.bptt_horizon,
            c.train.device)


def _throughput(history: list[RunRecord], t: Thresholds) -> list[Finding]:
    rec = history[-1]
    sps = _stat(rec.trainer_summary, "sps")
    topo = _topology(rec)
    if sps is None or topo is None:
        return []
    prev = [v for r in history[:-1] if _topology(r) == topo
            and (v := _stat(r.trainer_summary, "sps")) is not None and v > 0][-t.throughput_window:]
    if not prev:
        return []
    median = statistics.median(prev)
    floor = median * (1 - t.throughput_drop_frac)
    if sps >= floor:
        return []
    return [Finding(code="throughput_drop", severity="warn",
                    evidence={"rule": f"SPS {sps:,.0f} < (1 - {t.throughput_drop_frac:g}) × median {median:,.0f}",
                              "sps": round(sps), "median_sps": round(median), "runs": len(prev),
                              "drop": _f(1 - sps / median), "drop_limit": t.throughput_drop_frac},
                    theory=f"SPS {sps:,.0f} is {1 - sps / median:.0%} below the median {median:,.0f} of the last "
                           f"{len(prev)} run(s) on the same topology: contention on the machine or a slower "
                           "config (more update_epochs), not the env.")]


def diagnose(history: list[RunRecord], *, best: RunRecord | None = None, noise: NoiseBand | None = None,
             objective: str | None = None, thresholds: Thresholds = THRESHOLDS) -> list[Finding]:
    """Findings for `history[-1]`, judged against the whole ledger."""
    if not history:
        return []
    rec = history[-1]
    t = thresholds
    objective = objective or objective_of(history)
    if noise is None:
        ref = record_score(best, objective) if best is not None else None
        noise = noise_band(history, objective, reference=ref)
    s = rec.trainer_summary
    ent_coef = rec.config.train.ent_coef if rec.config is not None else None
    findings = _status(rec) + _glitch(rec)
    findings += _regression(rec, best, objective, noise)
    if s is not None:
        findings += _updates(s, t, rec.config) + _entropy(rec, ent_coef, t) + _value_fit(s, t) + _env_specific(rec, t)
    findings += _plateau(history, objective, noise, t) + _throughput(history, t)
    return findings
