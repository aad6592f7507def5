"""`pufferlib`: PufferLib 3.0's own trainer (`PuffeRL`), run by `autopilot.backends.pufferlib_driver`.

What a `.ini` file selects unless it names another backend. The config is PufferLib's: `env_name` is a
PufferLib env (`puffer_squared`, ...) or a user's own (`extras.vecenv`/`extras.policy_factory` name
their factories), every `[vec]`/`[train]`/`[env]` key passes through (the ones in PufferLib's
`default.ini` keep their type), `[policy]`/`[rnn]` are `extras.policy`/`extras.rnn`, and `[sweep.*]`
blocks are search priors, never validation limits.

The checks are PufferLib's own rules, in its words (`PuffeRL.__init__`, `pufferlib.vector.make`):
workers divide envs, the vector batch divides into whole workers, `batch_size`/`bptt_horizon` not both
`auto`, segments = batch / bptt with `total_agents <= segments`, the minibatch rules, a known
optimizer and precision, at least one epoch. Counting agents needs the env itself, so without PufferLib
installed (or for an env it cannot build here) that check, and the batch it derives, are reported as
skipped, by name.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

from autopilot.backends import Backend, register_backend, type_violation
from autopilot.config.invariants import (
    BatchArithmetic,
    Check,
    check_device,
    check_ranges,
    check_runtime,
    check_timesteps,
    divisors,
)
from autopilot.config.model import Config
from autopilot.errors import ConfigError
from autopilot.space import SearchSpace

# Keys of PufferLib 3.0's default.ini that autopilot's models do not have, with their types.
TYPED_KEYS: dict[str, type | tuple[type, ...]] = {
    "vec.batch_size": (int, str), "vec.zero_copy": bool, "vec.seed": int,
    "train.name": str, "train.project": str, "train.cpu_offload": bool, "train.precision": str,
    "train.compile": bool, "train.compile_mode": str, "train.compile_fullgraph": bool,
    "train.adam_beta1": float, "train.adam_beta2": float, "train.adam_eps": float,
    "train.vtrace_rho_clip": float, "train.vtrace_c_clip": float, "train.prio_alpha": float,
    "train.prio_beta0": float, "train.data_dir": str,
}
# The train keys PuffeRL reads that autopilot has no default for: they come from PufferLib's default.ini.
PUFFERL_READS = ("adam_beta1", "adam_beta2", "adam_eps", "vtrace_rho_clip", "vtrace_c_clip", "prio_alpha",
                 "prio_beta0", "precision", "compile", "compile_mode", "compile_fullgraph", "cpu_offload")
PRECISIONS = ("float32", "bfloat16")
OPTIMIZERS = ("adam", "muon")
VEC_CLASSES = {"serial": "Serial", "multiprocessing": "Multiprocessing", "ray": "Ray", "pufferenv": "PufferEnv"}


def pufferlib_installed() -> bool:
    return importlib.util.find_spec("pufferlib") is not None


def vec_batch_size(cfg: Config) -> int:
    """`vec.batch_size` as `pufferlib.vector.make` resolves it: `auto` is half the envs (1 for one env),
    absent is all of them."""
    value = (cfg.vec.model_extra or {}).get("batch_size")
    if value is None:
        return cfg.vec.num_envs
    if value == "auto":
        return 1 if cfg.vec.num_envs == 1 else cfg.vec.num_envs // 2
    return int(value)


def num_workers(cfg: Config) -> int:
    return cfg.vec.num_envs if cfg.vec.num_workers == "auto" else int(cfg.vec.num_workers)


def agents_per_env(cfg: Config) -> tuple[int | None, str]:
    """(agents in one vector env object, why not). Needs PufferLib and the env built once."""
    if not pufferlib_installed():
        return None, "needs PufferLib installed (the env itself reports its agents)"
    from autopilot.backends.pufferlib_driver import probe_agents

    key = json.dumps([cfg.env_name, cfg.env, cfg.extras.get("package"), cfg.extras.get("vecenv")], sort_keys=True,
                     default=str)
    if key not in _AGENTS:
        try:
            _AGENTS[key] = (probe_agents(cfg), "")
        except Exception as exc:  # an env PufferLib cannot build here (missing package, no GPU)
            _AGENTS[key] = (None, f"PufferLib could not build {cfg.env_name!r} here ({type(exc).__name__}: "
                                  f"{str(exc)[:160]})")
    return _AGENTS[key]


_AGENTS: dict[str, tuple[int | None, str]] = {}  # one probe per env and params per process


class PufferLibBackend(Backend):
    name = "pufferlib"
    description = "PufferLib 3.0's PuffeRL in a child process; PufferLib's .ini keys and rules"
    uses_env_registry = False
    passes_unknown_keys = True
    sweeps_are_priors = True
    extras_keys = {
        "package": (str, type(None)), "policy_name": str, "rnn_name": (str, type(None)), "env_names": list,
        "max_suggestion_cost": (int, float), "policy": dict, "rnn": dict, "sweep": dict, "sections": dict,
        "defaults": str, "vecenv": str, "policy_factory": str,
    }

    def check_section_extra(self, section: str, key: str, value: Any, known: list[str]) -> list[str]:
        want = TYPED_KEYS.get(f"{section}.{key}")
        return type_violation(f"{section}.{key}", value, want) if want is not None else []

    def check_extra(self, key: str, value: Any) -> list[str]:
        if key in self.extras_keys:
            return super().check_extra(key, value)
        return []  # any other [base] key: PufferLib passes it on

    def search_space(self, cfg: Config) -> SearchSpace:
        # Hard limits only; the file's [sweep.*] priors are added by config_space for the advisors.
        from autopilot.config.model import trainer_space

        space: SearchSpace = {k: v for k, v in trainer_space().items() if not k.startswith("policy.")}
        widen = {
            "train.optimizer": {"choices": OPTIMIZERS},
            # PufferLib's envs are often thousands of env objects, and its horizon need not be a power of two.
            "vec.num_envs": {"high": 2**20}, "train.bptt_horizon": {"scale": "int", "high": 2**16},
            # Limits are what PufferLib's PPO can run (nmmo3.ini trains at gamma 0.7648); priors come from sweeps.
            "train.gamma": {"scale": "linear", "low": 0.0, "high": 1.0},
            "train.gae_lambda": {"scale": "linear", "low": 0.0, "high": 1.0},
            # Tuned PufferLib files go below autopilot's usual floors (connect4.ini: ent_coef 4.2e-05).
            **{f"train.{k}": {"low": 1e-8} for k in ("learning_rate", "ent_coef", "vf_coef", "clip_coef",
                                                      "vf_clip_coef", "max_grad_norm")},
        }
        for key, update in widen.items():
            space[key] = space[key].model_copy(update=update)  # keeps each knob's doc and prior
        return space

    def checks(self, cfg: Config, space: SearchSpace, sps: float | None) -> list[Check]:
        agents, why = agents_per_env(cfg)
        total_agents = agents * cfg.vec.num_envs if agents is not None else None
        batch = self._batch(cfg, total_agents)
        return [check_ranges(self._with_workers(cfg), self.search_space(cfg)), self._check_vec(cfg), self._check_choices(cfg),
                self._check_agents(cfg, total_agents, batch, why), self._check_minibatch(cfg, batch),
                self._check_epochs(cfg, batch), check_device(cfg), check_runtime(cfg, sps)]

    # -- PufferLib's rules --------------------------------------------------------------------------
    @staticmethod
    def _with_workers(cfg: Config) -> Config:
        out = cfg.model_copy(deep=True)
        out.vec.num_workers = num_workers(cfg)
        return out

    @staticmethod
    def _batch(cfg: Config, total_agents: int | None) -> int | None:
        t = cfg.train
        if t.batch_size != "auto":
            return int(t.batch_size)
        return total_agents * t.bptt_horizon if total_agents is not None else None

    @staticmethod
    def _check_vec(cfg: Config) -> Check:
        ne = cfg.vec.num_envs
        if cfg.vec.backend not in VEC_CLASSES:
            return Check("vec", "fail", f"vec.backend {cfg.vec.backend}", [
                f"vec.backend={cfg.vec.backend!r} is autopilot's (rule: PufferLib vectorises with "
                f"{', '.join(VEC_CLASSES.values())}); use Serial or Multiprocessing"])
        if cfg.vec.backend == "pufferenv":
            if ne != 1:
                return Check("vec", "fail", f"PufferEnv with {ne} envs", [
                    f"vec.num_envs={ne} with vec.backend=PufferEnv (rule: native vectorisation is one env object; "
                    f"PufferLib: 'Native vectorization is for PufferEnvs that handle all per-process "
                    f"vectorization internally'); use vec.num_envs=1, or vec.backend=Multiprocessing"])
            return Check("vec", "ok", "one native PufferEnv")
        nw, vb = num_workers(cfg), vec_batch_size(cfg)
        bad = []
        if ne < 1 or nw < 1 or ne % nw:
            bad.append(f"vec.num_workers={nw} does not divide vec.num_envs={ne} (rule: PufferLib 'num_envs must be "
                       f"divisible by num_workers'); use one of {', '.join(str(d) for d in divisors(ne))}")
        elif vb % (ne // nw):
            bad.append(f"vec.batch_size={vb} is not whole workers of {ne // nw} envs (rule: PufferLib 'batch_size "
                       f"must be divisible by (num_envs / num_workers)'); use {ne // nw} or a multiple of it")
        detail = f"{ne} envs / {nw} workers, {vb} envs per batch ({VEC_CLASSES[cfg.vec.backend]})"
        return Check("vec", "fail" if bad else "ok", detail, bad)

    @staticmethod
    def _check_choices(cfg: Config) -> Check:
        t, extra = cfg.train, cfg.train.model_extra or {}
        bad = []
        if t.optimizer not in OPTIMIZERS:
            bad.append(f"train.optimizer={t.optimizer!r} is not one of PufferLib's (rule: PufferLib raises "
                       f"'Unknown optimizer: {t.optimizer}'); use adam or muon")
        precision = extra.get("precision", "float32")
        if precision not in PRECISIONS:
            bad.append(f"train.precision={precision!r} is invalid (rule: PufferLib 'Invalid precision: use float32 "
                       f"or bfloat16'); use float32")
        missing = [k for k in PUFFERL_READS if k not in extra]
        if missing:
            bad.append(f"train.{missing[0]} (and {len(missing) - 1} more: {', '.join(missing[1:])}) is not set and PufferLib's "
                       f"default.ini was not found to supply it (rule: PuffeRL reads every one); install PufferLib "
                       f"(scripts/install_pufferlib.sh), keep the .ini in PufferLib's config folder, or set them")
        return Check("trainer", "fail" if bad else "ok", f"optimizer {t.optimizer}, precision {precision}", bad)

    @staticmethod
    def _check_agents(cfg: Config, total_agents: int | None, batch: int | None, why: str) -> Check:
        if total_agents is None:
            return Check("segments", "skip", f"total_agents <= segments not checked: {why}")
        bptt = cfg.train.bptt_horizon
        segments = (batch or 0) // bptt
        if total_agents <= segments:
            return Check("segments", "ok", f"{total_agents:,} agents <= {segments:,} segments "
                                           f"(batch {batch:,} / bptt {bptt})")
        return Check("segments", "fail", f"{total_agents:,} agents > {segments:,} segments", [
            f"train.batch_size={batch} gives {segments} segments of bptt_horizon={bptt} for {total_agents} agents "
            f"(rule: PufferLib 'Total agents {total_agents} <= segments {segments}'); use batch_size "
            f"{total_agents * bptt} or auto"])

    @staticmethod
    def _check_minibatch(cfg: Config, batch: int | None) -> Check:
        t = cfg.train
        mb, mmb, bptt = t.minibatch_size, t.max_minibatch_size, t.bptt_horizon
        if mb == "auto":
            return Check("minibatch", "fail", "auto", ["train.minibatch_size='auto' is not PufferLib's (rule: PufferLib "
                                                      "needs a number); use e.g. 8192"])
        bad = []
        if mb > mmb and mb % mmb:
            bad.append(f"train.minibatch_size={mb} > max_minibatch_size={mmb} must divide evenly (rule: PufferLib's "
                       f"gradient accumulation); use max_minibatch_size {mb} or a divisor of {mb}")
        used = min(mb, mmb)
        if used % bptt:
            bad.append(f"train.minibatch_size={used} must be divisible by bptt_horizon {bptt} (rule: PufferLib "
                       f"minibatches are whole segments); use {max(bptt, used - used % bptt)}")
        if batch is not None and batch < mb:
            bad.append(f"train.batch_size={batch} must be >= minibatch_size {mb} (rule: PufferLib); use "
                       f"minibatch_size {batch - batch % bptt or bptt}")
        detail = f"minibatch {mb:,}" + (f" of batch {batch:,}" if batch else " (batch not derived)")
        return Check("minibatch", "fail" if bad else "ok", detail, bad)

    @staticmethod
    def _check_epochs(cfg: Config, batch: int | None) -> Check:
        return check_timesteps(cfg, batch, rule="PufferLib's learning-rate schedule spans total_timesteps // "
                                                "batch_size epochs, at least 1")

    # -- derived values and launch ------------------------------------------------------------------
    def resolve(self, cfg: Config) -> Config:
        out = cfg.model_copy(deep=True)
        out.vec.num_workers = num_workers(cfg)
        if out.vec.model_extra is not None and "batch_size" in out.vec.model_extra:
            out.vec.model_extra["batch_size"] = vec_batch_size(cfg)
        if cfg.train.batch_size == "auto":
            agents, _ = agents_per_env(cfg)
            if agents is not None:
                out.train.batch_size = agents * cfg.vec.num_envs * cfg.train.bptt_horizon
        return out

    def derive_batch(self, cfg: Config) -> BatchArithmetic:
        agents, why = agents_per_env(cfg)
        if agents is None:
            raise ConfigError(f"the batch of {cfg.env_name!r} cannot be derived: {why}")
        factors = [agents, cfg.vec.num_envs, cfg.train.bptt_horizon]
        return BatchArithmetic(factors, agents * cfg.vec.num_envs * cfg.train.bptt_horizon)

    def batch_line(self, cfg: Config) -> str:
        try:
            arith = str(self.derive_batch(cfg))
        except ConfigError as exc:
            arith = f"not derived ({exc})"
        if cfg.train.batch_size != "auto":
            return f"{cfg.train.batch_size:,} (set in the file); agents × bptt: {arith}"
        return arith

    def argv_template(self, cfg: Config) -> list[str]:
        return [sys.executable, "-m", "autopilot.backends.pufferlib_driver", "--config", "{config}",
                "--run-dir", "{run_dir}", "--resume", "{resume}"]


PUFFERLIB = register_backend(PufferLibBackend())
