"""The `optuna` advisor: model-based search with Optuna's samplers over the whitelisted tunable space.

- The space is `ctx.space`'s tunable keys, each mapped to an Optuna distribution on its own scale
  (`optuna_space.py`). The sampler is TPE by default; `optuna-random`, `optuna-qmc` and `optuna-cmaes`
  (CMA-ES needs the `cmaes` package) are the same advisor with another sampler, or
  `OptunaAdvisor(sampler=...)` from Python.
- Every run of the ledger is a trial: a trusted run is told with its trusted score as the value; a suspect
  or broken run is told as failed, never as a value. Runs the study already holds are matched by run id,
  and a trial this advisor asked for is completed by the run that used its parameters.
- The study lives in Optuna's RDB storage (SQLite) under `ctx.state_dir`, which the loop sets to a folder
  of the workspace, so a crash loses nothing; without a state dir the study is in memory and rebuilt from
  the ledger on every call (the ledger is the source of truth either way).
- Resume: a sample is warm-started from the trusted best run's checkpoint (else latest, else fresh, by the
  shared `choose_resume`): each trial then measures "best so far, trained on with these knobs", the
  population-based-training reading of a warm-started search.
- A sample may land anywhere in the space, so proposals carry `trust_region_override`; the guard still
  checks the whitelist, ranges, invariants, budget, resume policy and repeats.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from autopilot.decide.advisors import register_advisor
from autopilot.decide.advisors.base import Advisor, choose_resume, current, save_strategy
from autopilot.decide.advisors.optuna_space import SearchMap, build_search_map
from autopilot.decide.guard import BROKEN_STATUSES
from autopilot.decide.records import AdvisorContext, Proposal, RunRecord
from autopilot.decide.sanity import is_suspect, trusted_score
from autopilot.decide.trends import SEED_KEY, material_config
from autopilot.errors import ConfigError
from autopilot.space import fmt_num

SAMPLERS = ("tpe", "random", "qmc", "cmaes")
STORAGE_FILE = "optuna.db"
_RUN_ATTR = "run:"  # study user attr "run:<run_id>" -> the trial number that run is


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("advisor optuna needs the optuna package (rule: optional advisors declare their extra); "
                          "install it with `pip install 'autopilot[optuna]'` or use advisor rules") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _require(package: str, sampler: str, why: str) -> None:
    """Optuna imports a sampler's backend lazily and fails mid-ask without it; fail early and say what to do."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        others = ", ".join(s for s in SAMPLERS if s not in (sampler, "cmaes", "qmc"))
        raise ConfigError(f"sampler {sampler} needs the {package} package (rule: {why}); install it with "
                          f"`pip install {package}` or use sampler {others}")


def make_sampler(name: str, seed: int) -> Any:
    """The Optuna sampler called `name`, seeded; an unknown name is a ConfigError listing the valid ones."""
    optuna = _optuna()
    if name == "tpe":
        with warnings.catch_warnings():  # constant_liar is marked experimental; it keeps K asks apart
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        _require("scipy", "qmc", "QMC sequences come from scipy.stats.qmc")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    if name == "cmaes":
        _require("cmaes", "cmaes", "CMA-ES is optional")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ConfigError(f"sampler={name!r} is not an Optuna sampler this advisor knows (rule: one of "
                      f"{', '.join(SAMPLERS)}); use tpe")


def run_outcome(rec: RunRecord, objective: str) -> tuple[float | None, str]:
    """(value, why): the trusted score of a run, or None with the reason it is told as failed."""
    if is_suspect(rec):
        return None, "suspect"
    if rec.status in BROKEN_STATUSES:
        return None, rec.status
    score = trusted_score(rec, objective)
    if score is None or not math.isfinite(score):
        return None, f"no trusted {objective}"
    return float(score), "trusted"


class OptunaAdvisor(Advisor):
    def __init__(self, sampler: str = "tpe"):
        if sampler not in SAMPLERS:
            make_sampler(sampler, 0)  # raises the ConfigError naming the valid samplers
        self.sampler = sampler
        self.name = "optuna" if sampler == "tpe" else f"optuna-{sampler}"

    # -- the study ----------------------------------------------------------------------------------
    def _study(self, ctx: AdvisorContext, smap: SearchMap, seed: int) -> tuple[Any, str]:
        optuna = _optuna()
        # One study per (objective, space): a changed space starts a new study, warm-started from the ledger.
        name = f"autopilot-{ctx.objective}-{smap.signature()}"
        sampler = make_sampler(self.sampler, seed)
        if ctx.state_dir:
            try:
                study = optuna.create_study(study_name=name, storage=f"sqlite:///{ctx.state_dir}/{STORAGE_FILE}",
                                            load_if_exists=True, direction="maximize", sampler=sampler)
                return study, f"{STORAGE_FILE} in the workspace's advisor state (study {name})"
            except Exception as exc:  # a damaged file must not cost the run its proposal: the ledger suffices
                where = (f"an in-memory study rebuilt from the ledger ({STORAGE_FILE} could not be opened: "
                         f"{type(exc).__name__}: {str(exc)[:120]})")
        else:
            where = "an in-memory study (no state dir given: rebuilt from the ledger each call)"
        return optuna.create_study(study_name=name, direction="maximize", sampler=sampler), where

    def _sync(self, study: Any, ctx: AdvisorContext, smap: SearchMap) -> list[str]:
        """Tell the study every ledger run it does not hold yet; returns notes on what was told."""
        optuna = _optuna()
        from optuna.trial import TrialState

        known = {k[len(_RUN_ATTR):] for k in study.user_attrs if k.startswith(_RUN_ATTR)}
        pending = list(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        told, failed, notes = 0, 0, []
        for rec in ctx.history:
            if rec.run_id in known or rec.config is None:
                continue
            params, skipped = smap.encode(rec.config)
            notes += [f"run {rec.run_id}: {s}" for s in skipped]
            value, why = run_outcome(rec, ctx.objective)
            match = next((t for t in pending if smap.same(smap.decode(t.params), smap.decode(params))), None)
            if match is not None:  # the run that used a trial this advisor asked for completes it
                pending.remove(match)
                if value is None:
                    study.tell(match.number, state=TrialState.FAIL)
                else:
                    study.tell(match.number, value)
                number = match.number
            else:
                trial = optuna.trial.create_trial(
                    params=params, distributions={k: smap.dists[k] for k in params},
                    value=value, state=TrialState.COMPLETE if value is not None else TrialState.FAIL,
                    user_attrs={"run_id": rec.run_id, "outcome": why})
                study.add_trial(trial)
                number = study.get_trials(deepcopy=False)[-1].number
            study.set_user_attr(_RUN_ATTR + rec.run_id, number)
            told += value is not None
            failed += value is None
            if value is None:
                notes.append(f"run {rec.run_id} told as a failed trial ({why}), not as a value")
        for t in pending:  # asked but never run (the guard refused it, or a person staged something else)
            study.tell(t.number, state=TrialState.FAIL)
            notes.append(f"trial {t.number} was asked but no run used its parameters: closed as failed")
        if told or failed:
            notes.insert(0, f"told the study {told} trusted run(s) and {failed} failed one(s) from the ledger")
        return notes

    # -- proposals ----------------------------------------------------------------------------------
    def propose(self, ctx: AdvisorContext) -> Proposal:
        return self.propose_many(ctx, 1)[0]

    def propose_many(self, ctx: AdvisorContext, k: int) -> list[Proposal]:
        """K asks of the sampler (TPE's constant liar keeps them apart), each a full sample of the space."""
        if k < 1:
            raise ValueError(f"propose_many needs k >= 1, got {k}")
        smap = build_search_map(ctx.space)
        if not smap.dists:
            raise ConfigError("advisor optuna found no tunable key in the search space (rule: it samples only "
                              "whitelisted keys); mark some keys tunable or use advisor constant")
        seed = (ctx.seed * 100_003 + len(ctx.history)) % 2**32  # numpy-based samplers take < 2**32
        study, where = self._study(ctx, smap, seed)
        notes = self._sync(study, ctx, smap)
        mode, src, why = choose_resume(ctx, prefer_best=True)
        completed = len([t for t in study.trials if t.value is not None])
        used_seeds = [r.config.train.seed for r in ctx.history if r.config is not None]
        configs = [material_config(r.config) for r in ctx.history if r.config is not None]
        out = []
        for i in range(k):
            trial = study.ask(smap.dists)
            changes = {key: v for key, v in smap.decode(trial.params).items() if current(ctx, key) != v}
            base = material_config(ctx.base_config)
            if {**base, **changes} in configs or not changes:  # a sample that repeats a run: another seed
                changes[SEED_KEY] = max(used_seeds + [ctx.base_config.train.seed]) + 1 + i
            moved = ", ".join(f"{key.split('.')[-1]} {fmt_num(current(ctx, key))}→{fmt_num(v)}"
                              for key, v in changes.items() if key != SEED_KEY)
            rationale = [f"{key}: {fmt_num(current(ctx, key))} -> {fmt_num(v)}" for key, v in changes.items()]
            rationale += [
                f"sampled by Optuna's {self.sampler} sampler (trial {trial.number}) over {len(smap.dists)} tunable "
                f"knobs, from {completed} told trial(s); study: {where}",
                *notes,
                f"resume: {why} (a sample is warm-started from the best checkpoint, so each trial measures the "
                f"best so far trained on with these knobs)",
            ]
            if k > 1:
                rationale.append(f"candidate {i + 1} of {k}: ask {i + 1} of the sampler")
            out.append(Proposal(
                advisor=self.name or "optuna", changes=changes, resume_mode=mode,  # type: ignore[arg-type]
                resume_from=src, save_strategy=save_strategy(ctx),  # type: ignore[arg-type]
                headline=f"optuna {self.sampler} sample: {moved or 'the same knobs, another seed'}",
                rationale=rationale,
                trust_region_override=f"model-based sample (Optuna {self.sampler}, trial {trial.number}): a "
                                      f"sample may land anywhere in the whitelisted space",
                expected_effect="unknown per sample: the sampler trades exploration and exploitation over trials",
                next_steps=["the next run's score is told to the study as this trial's value"]))
            notes = []  # said once
        return out


register_advisor("optuna", OptunaAdvisor)
for _name in ("random", "qmc", "cmaes"):
    register_advisor(f"optuna-{_name}", lambda _s=_name: OptunaAdvisor(sampler=_s))
