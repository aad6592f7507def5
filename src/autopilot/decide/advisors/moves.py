"""Which knob answers a finding, and how far it moves. Pure.

A finding names symptoms (updates too small) and the knobs that could cause them (learning rate,
epochs, clip). Answering always with the first knob in the list is how an advisor raises
update_epochs run after run while the learning rate sits 10× too low. The knob most likely at fault is,
in this order:

0. a severe finding's moves (a diverged run) before any warning's, and a move the evidence dictates
   (`Move.required`) before the suspects;
1. the knob the previous run changed in the opposite direction: the change just before the problem
   appeared (it is undone, unless the value it left lies outside the prior's typical range);
2. a knob outside its prior's typical range on the side the move corrects (the farthest first): it
   moves into that range in one step, whatever the trust region, because the prior is evidence;
3. the knob this finding already moved when the finding persisted anyway: the step expands
   (×factor, then ×factor², ...), since repeating a step that did not work wastes a run;

Knobs inside their typical range with a learning curve that still rises are left alone by the
caller (nothing is at fault that a prior can name).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from autopilot.decide.records import AdvisorContext, Finding, Move
from autopilot.decide.trends import knobs_of
from autopilot.space import ParamSpec, fmt_num

MAX_ESCALATION = 3  # a persistent finding's step grows to at most factor**3


@dataclass
class Candidate:
    finding: Finding
    move: Move
    spec: ParamSpec
    old: Any
    direction: str | None
    outside: float  # doublings (or range widths) outside the typical range that this move corrects; 0 if none
    undo: Any = None  # the previous run's value when the previous run moved this knob the other way
    persisted: int = 0  # consecutive runs in which this finding fired, this knob moved its way, and it fired again
    order: int = 0  # position among the findings' moves (the diagnosis's own priority)
    away: float = 0.0  # how far outside its typical range the knob already is on the side this move pushes

    def sort_key(self) -> tuple:
        return (self.finding.severity != "error", not self.move.required, self.undo is None, self.outside <= 0,
                -self.outside, self.away, -self.persisted, self.order)


def _direction_of(move: Move, old: Any) -> str | None:
    if move.direction in ("up", "down"):
        return move.direction
    if isinstance(move.value, (int, float)) and isinstance(old, (int, float)) and move.value != old:
        return "up" if move.value > old else "down"
    return None


def _outside(spec: ParamSpec, old: Any, direction: str | None) -> float:
    """How far `old` lies outside the typical range on the side a move in `direction` corrects."""
    d = spec.prior_distance(old)
    if direction == "up" and d < 0:
        return -d
    if direction == "down" and d > 0:
        return d
    return 0.0


def _moved(a: Any, b: Any) -> str | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and a != b:
        return "up" if b > a else "down"
    return None


def _history_moves(ctx: AdvisorContext) -> list[tuple[set[str], dict[str, str]]]:
    """Per run, oldest first: (finding codes of that run, {knob: direction it moved relative to the run before})."""
    from autopilot.decide.diagnose import diagnose

    out: list[tuple[set[str], dict[str, str]]] = []
    prev = None
    for i, rec in enumerate(ctx.history):
        if rec.loop_summary is not None and rec.loop_summary.findings:
            codes = set(rec.loop_summary.findings)
        else:  # an external trainer's run, or one whose analysis was never recorded: diagnose it now
            codes = {f.code for f in diagnose(ctx.history[:i + 1], objective=ctx.objective)}
        moved: dict[str, str] = {}
        if rec.config is not None and prev is not None and prev.config is not None:
            a, b = knobs_of(prev.config), knobs_of(rec.config)
            moved = {k: d for k in b if (d := _moved(a.get(k), b.get(k))) is not None}
        out.append((codes, moved))
        if rec.config is not None:
            prev = rec
    return out


def persisted_runs(code: str, key: str, direction: str | None, codes: list[set[str]],
                   moved: list[dict[str, str]]) -> int:
    """How many times in a row, ending with the latest run, `key` moved in `direction` to answer
    `code` and `code` fired again in the run that followed. `codes[i]` are run i's finding codes and
    `moved[i]` how run i's knobs moved relative to the run before."""
    n = 0
    for i in range(len(codes) - 1, 0, -1):
        if code in codes[i] and code in codes[i - 1] and direction is not None and moved[i].get(key) == direction:
            n += 1
        else:
            break
    return n


def candidates(ctx: AdvisorContext, findings: list[Finding], specs: dict[str, ParamSpec],
               current: dict[str, Any]) -> list[Candidate]:
    """Every tunable move the findings suggest, best-ranked first."""
    runs = _history_moves(ctx)
    codes = [c for c, _ in runs[:-1]] + [{f.code for f in ctx.findings}]
    moved = [m for _, m in runs]
    prev_cfg = next((r.config for r in reversed(ctx.history[:-1]) if r.config is not None), None)
    out: list[Candidate] = []
    for f in findings:
        for m in f.moves:
            spec = specs.get(m.key)
            if spec is None:
                continue
            old = current.get(m.key)
            direction = _direction_of(m, old)
            c = Candidate(finding=f, move=m, spec=spec, old=old, direction=direction,
                          outside=_outside(spec, old, direction), order=len(out),
                          away=_outside(spec, old, {"up": "down", "down": "up"}.get(direction or "")))
            if direction is not None and prev_cfg is not None and moved and moved[-1].get(m.key) not in (None, direction):
                before = knobs_of(prev_cfg).get(m.key)
                # Undo only into known-sane ground: a previous value outside the prior's typical range was
                # itself moved away from to fix something (lr 0.1 → 0.005 after violent updates).
                if spec.prior_distance(before) == 0:
                    c.undo = before
            c.persisted = persisted_runs(f.code, m.key, direction, codes, moved)
            out.append(c)
    return sorted(out, key=Candidate.sort_key)


def into_prior(spec: ParamSpec, old: float, direction: str) -> float:
    """The value a knob outside its typical range moves to: the range's near edge moved one doubling (a
    quarter of the range on linear scales) further in, never past the prior's center."""
    prior = spec.prior
    assert prior is not None
    edge, center = (prior.low, prior.center) if direction == "up" else (prior.high, prior.center)
    if spec.multiplicative and edge > 0:
        target = spec.from_coord(spec.coord(edge) + (1 if direction == "up" else -1) * math.log(2.0))
    else:
        target = edge + (1 if direction == "up" else -1) * 0.25 * (prior.high - prior.low)
    target = min(target, center) if direction == "up" else max(target, center)
    value = spec.clamp(target)
    return value if spec.scale in ("int", "intlog", "pow2") else float(f"{value:.4g}")


def escalated(spec: ParamSpec, old: float, direction: str, factor: float, persisted: int) -> float:
    """One step of ×factor (÷ when down), expanded to ×factor**(persisted + 1) for a persistent finding.
    An expanded step stops at the prior's typical range: a bolder step is not a leap into values no
    tuned config uses (one plain step may still cross it)."""
    from autopilot.decide.advisors.base import step
    from autopilot.decide.guard import TrustRegion

    power = min(persisted + 1, MAX_ESCALATION)
    f = factor if factor >= 1 else 1 / factor
    wide = TrustRegion(log_factor=max(2.0, f) ** power, linear_frac=min(1.0, 0.25 * power))
    new = step(spec, old, direction, factor=f ** power, trust=wide)
    if power > 1 and spec.prior is not None and isinstance(new, (int, float)):
        edge = spec.prior.high if direction == "up" else spec.prior.low
        inside = spec.prior.low <= old <= spec.prior.high
        beyond = new > edge if direction == "up" else new < edge
        if inside and beyond:
            at_edge = not (edge > old if direction == "up" else edge < old)
            new = step(spec, old, direction, factor=f) if at_edge else spec.clamp(edge)
    return new


def describe_outside(spec: ParamSpec, old: Any) -> str:
    prior = spec.prior
    if prior is None:
        return ""
    d = spec.prior_distance(old)
    unit = "doublings" if spec.multiplicative else "range widths"
    side = "below" if d < 0 else "above"
    return (f"{fmt_num(old)} lies {abs(d):.2g} {unit} {side} the typical range [{fmt_num(prior.low)}, "
            f"{fmt_num(prior.high)}] (prior: {prior.source or 'standard PPO values'}; standard {fmt_num(prior.center)})")
