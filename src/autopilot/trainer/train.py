"""One training run of the built-in PPO trainer: `train(cfg, run_dir, resume=..., dashboard=..., run_id=...)`.

Writes into `run_dir`: `metrics.jsonl` (one line per epoch, flushed), `train.log` (unless the caller
captures our stdout: `AUTOPILOT_LOG_CAPTURED=1`), `checkpoints/latest.pt` (every
`train.checkpoint_interval` epochs and at the end), `checkpoints/best.pt` (save_strategy best|all: the
best objective over the tail window), `checkpoints/epoch_<N>.pt` (save_strategy all), and
`trainer_summary.json` (schema v1) at the end, whatever the ending:

* completed: the budget was trained; a deterministic evaluation fills the summary's `eval` block.
* interrupted: SIGINT/SIGTERM or `autopilot.max_run_seconds`; the epoch in flight is dropped, latest saved.
* diverged: NaN/inf in the losses or the weights; the bad weights are not saved.
* failed / crashed: a bad checkpoint or config / an unexpected exception (re-raised after the summary).

Budget and resume (see `checkpoint.py` for the rule): a fresh run or a warm start trains
`train.total_timesteps // batch_size` epochs from where it starts, its learning-rate schedule spanning
those epochs; a true resume of an unfinished run continues to that run's original target with its
schedule where it left off. `agent_steps` and `epoch` always count from the very first run.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autopilot.atomic import append_text, atomic_write_text
from autopilot.config.invariants import resolve_config
from autopilot.config.model import Config
from autopilot.errors import AutopilotError, ConfigError
from autopilot.summary import TrainerSummary, write_summary
from autopilot.trainer import checkpoint as ck
from autopilot.trainer.dashboard import LiveDashboard, PlainReporter, View, plain_line
from autopilot.trainer.metrics import ENV_DEFAULT_KEYS, TailWindow, epoch_row, row_json
from autopilot.trainer.optim import make_optimizer
from autopilot.trainer.policy import ActorCritic
from autopilot.trainer.ppo import explained_variance, learning_rate, ppo_update
from autopilot.trainer.rollout import RolloutBuffer, RolloutState, collect, evaluate, make_batch
from autopilot.trainer.update_helpers import UpdateHelpers, spawn_bootstrapping
from autopilot.trainer.vector import TORCH_ENVS, EnvMaker, make_vector

PROGRESS_EVERY_S = 5.0


def train(cfg: Config, run_dir: str | Path, *, resume: str | None = None, dashboard: bool | None = None,
          run_id: str | None = None) -> TrainerSummary:
    """Train one run; return (and write) its `TrainerSummary`."""
    return Trainer(cfg, run_dir, resume=resume, run_id=run_id).run(dashboard=dashboard)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    return torch.device(name)


def _positive_int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def torch_threads(num_workers: int) -> int:
    """Torch's intra-op threads while the env worker processes may be stepping: every core this process may
    use that the workers do not (at most 8). With `num_workers` 1 (the env in-process), every core: the
    update's count too, since workers sleep while it runs.

    The policy computes one group's actions while the other group's workers step (`rollout.collect`), so
    its threads must stay off the workers' cores: a thread that spin-waits between ops on a core a worker
    needs slows both down several times. A launcher's OMP_NUM_THREADS (Ray sets it to a task's CPUs) caps
    the count; `AUTOPILOT_TORCH_THREADS` sets it (and still stays off the workers' cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    cores = min(cores, _positive_int_env("OMP_NUM_THREADS") or cores)
    workers = num_workers if num_workers > 1 else 0
    free = max(1, cores - workers)
    chosen = _positive_int_env("AUTOPILOT_TORCH_THREADS")
    if chosen is None:
        return min(8, free)
    return min(chosen, free) if workers else chosen


def use_torch_env(cfg: Config, device: torch.device) -> bool:
    """Step the env's torch implementation on the policy's device: on CUDA whenever the env has one (no
    host copies per step), elsewhere when `vec.backend` is "torch"."""
    if cfg.vec.backend == "torch":
        if cfg.env_name not in TORCH_ENVS:
            raise ConfigError(f"vec.backend='torch' but env_name={cfg.env_name!r} has no torch implementation "
                              f"(rule: only {', '.join(sorted(TORCH_ENVS))} has one); use vec.backend='serial'")
        return True
    return device.type == "cuda" and cfg.env_name in TORCH_ENVS


def _finite_module(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | Path, *, resume: str | None = None, run_id: str | None = None,
                 on_epoch: Callable[[Trainer, dict[str, Any]], None] | None = None):
        self.cfg = resolve_config(cfg)
        self.run_dir = Path(run_dir)
        self.run_id = run_id or self.run_dir.name
        self.resume_path = str(resume) if resume else None
        self.on_epoch = on_epoch
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.captured = os.environ.get("AUTOPILOT_LOG_CAPTURED") == "1"
        self.stop_reason: str | None = None
        self.status = "completed"
        self.error: str | None = None
        self.latest_path: Path | None = None
        self.best_path: Path | None = None
        self.best_score: float | None = None
        self.resume_kind: str | None = None
        self.vec = None
        self.update_helpers: UpdateHelpers | None = None
        self.display: Any = None
        self._last_progress = 0.0

    # -- control ---------------------------------------------------------------------------------
    def request_stop(self, reason: str = "interrupted") -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def _should_stop(self) -> bool:
        if self.stop_reason is None and time.time() - self.t_start > self.cfg.autopilot.max_run_seconds:
            self.request_stop("max_run_seconds")
        return self.stop_reason is not None

    def _log(self, line: str, *, show: bool = True) -> None:
        stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
        if not self.captured:
            append_text(self.run_dir / "train.log", f"{stamp} {line}\n")
        if show:
            if self.display is not None:
                self.display.log(f"{stamp} {line}")
            else:
                print(f"{stamp} {line}", flush=True)

    # -- setup -----------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        random.seed(t.seed)
        np.random.seed(t.seed)
        torch.manual_seed(t.seed)
        if t.torch_deterministic:
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        self.device = resolve_device(t.device)
        # Threads per phase (`torch_threads`): off the env workers' cores while they may step, all of them
        # in the update, while they sleep.
        self.rollout_threads, self.update_threads = torch_threads(cfg.vec.num_workers), torch_threads(1)
        torch.set_num_threads(self.rollout_threads)

        self.maker = EnvMaker.for_env(cfg.env_name, cfg.env)
        env_device = self.device if use_torch_env(cfg, self.device) else None
        self.vec = make_vector(cfg.env_name, cfg.env, cfg.vec.num_envs, cfg.vec.num_workers, t.seed, env_device)
        obs = self.vec.reset(t.seed)
        self.policy = ActorCritic(self.vec.single_observation_space, self.vec.single_action_space,
                                  cfg.policy.hidden_size, cfg.policy.num_layers).to(self.device)
        self.optimizer = make_optimizer(self.policy, t)
        self.state = RolloutState(obs, self.device)
        self.batch_size = int(t.batch_size)
        N = self.vec.num_agents
        if N * t.bptt_horizon != self.batch_size:
            raise AutopilotError(f"train.batch_size={self.batch_size} but the env gives {N} agents × bptt "
                                 f"{t.bptt_horizon} = {N * t.bptt_horizon}; use \"auto\"")
        if self.policy.continuous:
            act_shape, act_dtype = (self.policy.act_dim,), torch.float32
        else:
            act_shape, act_dtype = (), torch.int64
        obs_dim = int(np.prod(self.vec.single_observation_space.shape))
        self.buf = RolloutBuffer(t.bptt_horizon, N, obs_dim, act_shape, act_dtype, self.device)
        if self.device.type == "cpu" and self.update_threads > 1:
            self._start_update_helpers()

        self.window = TailWindow(cfg.autopilot.metrics_window)
        self.env_keys = list(ENV_DEFAULT_KEYS if cfg.env_name == "drone_delivery" else ("mean_reward", "episode_length"))
        self.agent_steps = self.epoch = 0
        epochs = max(1, t.total_timesteps // self.batch_size)
        self.start_steps, self.start_epoch = 0, 0
        self.target_steps = epochs * self.batch_size
        self.sched_epoch, self.sched_epochs = 0, epochs
        if self.resume_path:
            self._resume(epochs)

    def _start_update_helpers(self) -> None:
        """The update on a process per core (`update_helpers`): 1.5× on two cores, where two intra-op threads
        gave 1.3×; this process then computes on one thread, as each helper does. Where helpers cannot start
        (no room in /dev/shm, a script without a `__main__` guard, a daemonic parent process, which
        multiprocessing asserts has no children), the update stays in this process."""
        cfg = self.cfg
        spec = (self.vec.single_observation_space, self.vec.single_action_space, cfg.policy.hidden_size,
                cfg.policy.num_layers)
        try:
            self.update_helpers = UpdateHelpers.start(self.policy, spec, self.update_threads, self.batch_size,
                                                      int(cfg.train.minibatch_size))
        except (OSError, RuntimeError, AssertionError) as exc:
            if spawn_bootstrapping():  # we are a helper re-running an unguarded script: stop here, not train
                raise
            self._log(f"update helpers did not start, so the update runs in this process: {exc}")
        if self.update_helpers is not None:
            self.update_threads = 1

    def _resume(self, epochs: int) -> None:
        ckpt = ck.load_checkpoint(self.resume_path, self.device)
        kind = ck.resume_kind(ckpt, self.cfg)
        c = ckpt.get("counters", {})
        self.agent_steps, self.epoch = int(c.get("agent_steps", 0)), int(c.get("epoch", 0))
        loaded = ck.shapes_match(self.policy, ckpt["policy"])
        if loaded:
            self.policy.load_state_dict(ckpt["policy"])
            opt_ok = ck.load_optimizer(self.optimizer, ckpt["optimizer"]) if "optimizer" in ckpt else False
        else:
            opt_ok = False
            kind = "warm"
            self._log(f"checkpoint {self.resume_path}: network shapes differ from this config; fresh weights")
        if kind == "continue":
            self.start_steps, self.start_epoch = int(c["start_steps"]), int(c["start_epoch"])
            self.target_steps = int(c["target_steps"])
            self.sched_epoch, self.sched_epochs = int(c["sched_epoch"]), int(c["sched_epochs"])
            self.window = TailWindow(self.cfg.autopilot.metrics_window, ckpt.get("tail", []))
            self.best_score = ckpt.get("best_score")
            best = ckpt.get("best_path")
            self.best_path = Path(best) if best and Path(best).is_file() else None
            self.env_keys = list(dict.fromkeys([*self.env_keys, *ckpt.get("env_keys", [])]))
            ck.set_rng_state(ckpt["rng"])
            self._drop_rows_after(self.epoch)
            if ckpt.get("env_state") is not None and self.vec.set_state(ckpt["env_state"]):
                self.state.next_obs = ckpt["next_obs"].to(self.device)
                self.state.next_done = ckpt["next_done"].to(self.device)
            else:
                self._log("env state not in the checkpoint: the rollout restarts from a reset")
        else:
            self.start_steps, self.start_epoch = self.agent_steps, self.epoch
            self.target_steps = self.agent_steps + epochs * self.batch_size
        self.resume_kind = kind
        self._log(f"resumed ({kind}) from {self.resume_path}: agent_steps {self.agent_steps:,}, epoch {self.epoch}"
                  f"{'' if opt_ok else '; optimizer state not loaded'}")

    def _drop_rows_after(self, epoch: int) -> None:
        """Resuming into the run folder of a crashed run: forget its metrics rows past the checkpoint."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)

        def row_epoch(line: str) -> float:
            try:
                return float(json.loads(line).get("epoch", 0))
            except (ValueError, AttributeError):
                return math.inf  # a torn last line: drop it

        keep = [ln for ln in lines if ln.endswith("\n") and row_epoch(ln) <= epoch]
        if len(keep) != len(lines):
            atomic_write_text(path, "".join(keep))

    # -- checkpoints -----------------------------------------------------------------------------
    def _payload(self, *, resumable: bool, with_env: bool) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": ck.rng_state(),
            "counters": {"agent_steps": self.agent_steps, "epoch": self.epoch, "start_steps": self.start_steps,
                         "start_epoch": self.start_epoch, "target_steps": self.target_steps,
                         "sched_epoch": self.sched_epoch, "sched_epochs": self.sched_epochs},
            "config": self.cfg.model_dump(), "run_id": self.run_id, "resumable": resumable,
            "env_state": self.vec.get_state() if with_env else None,
            "next_obs": self.state.next_obs.cpu(), "next_done": self.state.next_done.cpu(),
            "tail": list(self.window.rows), "env_keys": self.env_keys, "best_score": self.best_score,
            "best_path": str(self.best_path) if self.best_path else None,
        }

    def _save_latest(self, *, resumable: bool = True) -> None:
        payload = self._payload(resumable=resumable, with_env=True)
        self.latest_path = ck.save_checkpoint(self.ckpt_dir / "latest.pt", payload)
        if self.cfg.autopilot.save_strategy == "all":
            ck.save_checkpoint(self.ckpt_dir / f"epoch_{self.epoch}.pt", payload)

    def _maybe_save_best(self, last: bool) -> None:
        if self.cfg.autopilot.save_strategy == "latest" or not (self.window.full or last):
            return
        score = self.window.objective(self.cfg.autopilot.objective)
        if score is None or (self.best_score is not None and score <= self.best_score):
            return
        self.best_score = score
        self.best_path = ck.save_checkpoint(self.ckpt_dir / "best.pt",
                                            self._payload(resumable=False, with_env=False))

    # -- one epoch -------------------------------------------------------------------------------
    def _epoch(self) -> dict[str, Any] | None:
        t = self.cfg.train
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        torch.set_num_threads(self.rollout_threads)
        if not collect(self.policy, self.vec, self.buf, self.state, self._should_stop, timings):
            return None
        batch = make_batch(self.policy, self.buf, self.state, t.gamma, t.gae_lambda)
        lr = learning_rate(t, self.sched_epoch, self.sched_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t1 = time.perf_counter()
        torch.set_num_threads(self.update_threads)
        stats = ppo_update(self.policy, self.optimizer, batch, t, helpers=self.update_helpers)
        stats["explained_var"] = explained_variance(batch.values, batch.returns)
        t2 = time.perf_counter()
        self.agent_steps += self.batch_size
        self.epoch += 1
        self.sched_epoch += 1
        env_sums = self.vec.pop_episode_stats()
        self.env_keys = list(dict.fromkeys([*self.env_keys, *(k for k in env_sums if k != "episodes")]))
        row = epoch_row(epoch=self.epoch, agent_steps=self.agent_steps, sps=self.batch_size / max(t2 - t0, 1e-9),
                        wall_s=time.time() - self.t_start, lr=lr, stats=stats, env_sums=env_sums,
                        env_keys=self.env_keys, util=self.util.sample())
        row.update(env_s=timings.get("env"), policy_s=timings.get("policy"), update_s=t2 - t1)
        return row

    def _diverged(self, row: dict[str, Any]) -> bool:
        losses = [row[k] for k in ("policy_loss", "value_loss", "entropy", "approx_kl")]
        return not all(isinstance(v, float) and math.isfinite(v) for v in losses) or not _finite_module(self.policy)

    # -- the run ---------------------------------------------------------------------------------
    def run(self, dashboard: bool | None = None) -> TrainerSummary:
        self.t_start = time.time()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        restore = self._install_signals()
        live = sys.stdout.isatty() if dashboard is None else dashboard
        self.view = View(run_id=self.run_id, env_name=self.cfg.env_name, device=self.cfg.train.device)
        eval_block = None
        try:
            self._setup()
            from autopilot.trainer.utilisation import Utilisation

            self.util = Utilisation(str(self.device))
            self.view.device, self.view.start_steps = str(self.device), self.agent_steps
            self.view.agent_steps, self.view.target_steps, self.view.epoch = self.agent_steps, self.target_steps, self.epoch
            self.display = LiveDashboard(self.view) if live else PlainReporter(self.view, self._log)
            with self.display:
                self._log(f"run {self.run_id}: {self.cfg.env_name}, {self.vec.num_agents} agents × bptt "
                          f"{self.cfg.train.bptt_horizon} = batch {self.batch_size:,}, minibatch "
                          f"{self.cfg.train.minibatch_size:,}, device {self.device}, workers {self.cfg.vec.num_workers},"
                          f" target {self.target_steps:,} steps")
                self._loop()
                if self.status == "completed" and self.cfg.autopilot.eval_episodes > 0:
                    self.view.message = "evaluating"
                    eval_block = evaluate(self.policy, self.maker, self.cfg.autopilot.eval_episodes,
                                          self.cfg.train.seed + 1_000_003, self.device)
                    self._log(f"eval: {eval_block}")
        except AutopilotError as exc:
            self.status, self.error = "failed", str(exc)
            raise
        except KeyboardInterrupt:
            self.status, self.error = "interrupted", "stopped by a second interrupt (no checkpoint saved)"
            raise
        except BaseException as exc:
            self.status, self.error = "crashed", "".join(traceback.format_exception(exc))[-4000:]
            raise
        finally:
            restore()
            if self.vec is not None:
                self.vec.close()
            if self.update_helpers is not None:
                self.update_helpers.close()
            summary = self._summary(eval_block)
            write_summary(self.run_dir / "trainer_summary.json", summary)
        self._log(f"run {self.run_id} {self.status}: {self.agent_steps:,} steps, epoch {self.epoch}")
        return summary

    def _loop(self) -> None:
        interval = max(1, self.cfg.train.checkpoint_interval)
        while self.agent_steps < self.target_steps:
            if self._should_stop():
                break
            row = self._epoch()
            if row is None:
                break
            if self._diverged(row):
                append_text(self.run_dir / "metrics.jsonl", row_json(row))
                self.status, self.error = "diverged", f"non-finite loss or weights at epoch {self.epoch}"
                self._log(self.error)
                return
            self.window.add(row)
            append_text(self.run_dir / "metrics.jsonl", row_json(row))
            self._update_view(row)
            last = self.agent_steps >= self.target_steps
            self._maybe_save_best(last)
            if self.epoch % interval == 0 and not last:
                self._save_latest()
            if self.on_epoch is not None:
                self.on_epoch(self, row)
        if self.stop_reason is not None and self.agent_steps < self.target_steps:
            self.status = "interrupted"
            self.error = f"stopped by {self.stop_reason} at epoch {self.epoch}"
            self._log(self.error)
        self._save_latest(resumable=self.status != "completed")

    def _update_view(self, row: dict[str, Any]) -> None:
        v = self.view
        v.sps, v.agent_steps, v.epoch = row["sps"], row["agent_steps"], row["epoch"]
        v.losses = {k: row.get(k) for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl",
                                            "clipfrac", "explained_var")}
        v.utilisation = {k: row.get(k) for k in ("cpu_pct", "dram_pct", "gpu_pct", "vram_pct")}
        v.env_stats = {k: row.get(k) for k in [*self.env_keys, "episodes"]}
        if isinstance(self.display, PlainReporter):
            self.display.update()
        elif time.time() - self._last_progress >= PROGRESS_EVERY_S:  # the live view: train.log only
            self._last_progress = time.time()
            self._log(plain_line(v), show=False)

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.stop_reason is not None:  # a second signal: stop now
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self.request_stop(signal.Signals(signum).name)

        for s in previous:
            signal.signal(s, handler)

        def restore() -> None:
            for s, h in previous.items():
                signal.signal(s, h)

        return restore

    # -- the summary -----------------------------------------------------------------------------
    def _action_shape(self) -> dict[str, int]:
        """Diagnosis judges entropy per action dimension (Gaussian) or against ln(n) (categorical)."""
        policy = getattr(self, "policy", None)
        if policy is None:
            return {}
        return {"act_dim": int(policy.act_dim)} if policy.continuous else {"act_n": int(policy.act_dim)}

    def _summary(self, eval_block: dict[str, Any] | None) -> TrainerSummary:
        wall = time.time() - self.t_start
        window = getattr(self, "window", TailWindow(1))
        trained = getattr(self, "agent_steps", 0) - getattr(self, "start_steps", 0)
        return TrainerSummary(
            run_id=self.run_id, status=self.status,
            throughput={"sps": trained / wall if wall > 0 else None, "agent_steps": getattr(self, "agent_steps", 0),
                        "epoch": getattr(self, "epoch", 0), "wall_s": wall},
            metrics=window.env_metrics(), trainer={**window.trainer_metrics(), **self._action_shape()},
            utilisation=window.utilisation(),
            eval=eval_block,
            checkpoint={"path": str(self.latest_path) if self.latest_path else None,
                        "resumed_from": self.resume_path, "resume_kind": self.resume_kind,
                        "best_path": str(self.best_path) if self.best_path else None, "best_score": self.best_score},
            error=self.error,
        )
