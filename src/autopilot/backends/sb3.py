"""`sb3`: Stable-Baselines3 PPO on any Gymnasium id (or an autopilot env by its Gymnasium id).

    {"backend": "sb3", "env_name": "CartPole-v1", "vec": {"num_envs": 4},
     "train": {"total_timesteps": 20000, "bptt_horizon": 128, "minibatch_size": 256},
     "extras": {"policy": "MlpPolicy", "ppo": {"normalize_advantage": true}}}

`train.*` maps onto PPO's arguments: learning_rate (linearly annealed with `anneal_lr`), n_steps =
bptt_horizon, batch_size = minibatch_size, n_epochs = update_epochs, gamma, gae_lambda, clip_range =
clip_coef, ent_coef, vf_coef, max_grad_norm, seed, device; `vec.num_envs` is n_envs; `extras.ppo` passes
any other PPO argument through (checked against PPO's signature). The child
(`python -m autopilot.backends.sb3`) writes a metrics row per rollout from SB3's logger values
(approx_kl, clip_fraction, entropy_loss, explained_variance, ...) and the episodes that ended, the
schema-v1 summary, and `checkpoints/latest.pt` holding SB3's own save (weights, optimizer, num_timesteps)
so a resume continues with `reset_num_timesteps=False`.
"""

from __future__ import annotations

import argparse
import inspect
import io
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from autopilot.backends import Backend, register_backend
from autopilot.config.invariants import (
    BatchArithmetic,
    Check,
    check_device,
    check_ranges,
    check_runtime,
    derive_minibatch_size,
)
from autopilot.config.model import Config
from autopilot.envs.registry import is_builtin_env
from autopilot.errors import ConfigError
from autopilot.space import SearchSpace

MAPPED = {"learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range", "ent_coef",
          "vf_coef", "max_grad_norm", "seed", "device", "policy", "env"}
# SB3's logger names -> ours (its entropy_loss is minus the entropy; see the row).
SB3_STATS = {"train/approx_kl": "approx_kl", "train/clip_fraction": "clipfrac",
             "train/explained_variance": "explained_var", "train/value_loss": "value_loss",
             "train/policy_gradient_loss": "policy_loss"}


def ppo_arguments() -> set[str]:
    from stable_baselines3 import PPO

    return set(inspect.signature(PPO.__init__).parameters) - {"self"}


class SB3Backend(Backend):
    name = "sb3"
    description = "Stable-Baselines3 PPO on a Gymnasium id"
    extras_keys = {"policy": str, "ppo": dict}

    def env_in_registry(self, cfg: Config) -> bool:
        return is_builtin_env(cfg.env_name)

    def prepare(self, data: dict[str, Any]) -> dict[str, Any]:
        # A Gymnasium env's score is its episode return (autopilot's envs keep their own objective).
        if not is_builtin_env(str(data.get("env_name", ""))) and "objective" not in data.get("autopilot", {}):
            data = {**data, "autopilot": {**data.get("autopilot", {}), "objective": "mean_reward"}}
        return data

    def validate(self, cfg: Config) -> None:
        super().validate(cfg)
        bad = []
        ppo = cfg.extras.get("ppo", {})
        if ppo:
            known = ppo_arguments()
            for key in ppo:
                if key in MAPPED:
                    bad.append(f"extras.ppo.{key} is set from train.* (rule: one source per setting); set it there")
                elif key not in known:
                    bad.append(f"extras.ppo.{key} is not an argument of SB3's PPO (rule: unknown keys are errors); "
                               f"known: {', '.join(sorted(known - MAPPED))}")
        if bad:
            raise ConfigError(bad)
        if self.env_in_registry(cfg):
            return  # validated by the env registry (super().validate)
        import gymnasium

        try:
            gymnasium.spec(cfg.env_name)
        except Exception as exc:
            raise ConfigError(f"env_name={cfg.env_name!r} is not a Gymnasium id ({str(exc).splitlines()[0]}) "
                              f"(rule: the sb3 backend makes envs with gymnasium.make); e.g. CartPole-v1") from None

    def _rollout(self, cfg: Config) -> int:
        return cfg.train.bptt_horizon * cfg.vec.num_envs

    def _minibatch(self, cfg: Config) -> int:
        mb = cfg.train.minibatch_size
        return derive_minibatch_size(self._rollout(cfg), 1, cfg.train.max_minibatch_size) if mb == "auto" else int(mb)

    def checks(self, cfg: Config, space: SearchSpace, sps: float | None) -> list[Check]:
        rollout, mb = self._rollout(cfg), self._minibatch(cfg)
        bad = []
        if rollout < 2:
            bad.append(f"train.bptt_horizon × vec.num_envs = {rollout} (rule: SB3's rollout needs n_steps × n_envs > 1); "
                       f"use train.bptt_horizon ≥ 2")
        if mb > rollout or mb < 2:
            bad.append(f"train.minibatch_size={mb} (rule: SB3's batch_size is between 2 and n_steps × n_envs = "
                       f"{rollout}); use {max(2, rollout // 4)}")
        rollout_check = Check("rollout", "fail" if bad else "ok",
                              f"n_steps {cfg.train.bptt_horizon} × n_envs {cfg.vec.num_envs} = {rollout:,}, "
                              f"batch_size {mb:,}" + (f" ({rollout % mb} left over per epoch)" if rollout % mb else ""),
                              bad)
        tt = cfg.train.total_timesteps
        steps = Check("timesteps", "ok" if tt >= rollout else "fail", f"total_timesteps {tt:,} vs rollout {rollout:,}",
                      [] if tt >= rollout else [f"train.total_timesteps={tt} is below one rollout of {rollout} "
                                                f"(rule: total_timesteps ≥ n_steps × n_envs); use at least {rollout}"])
        return [check_ranges(cfg, space), rollout_check, steps, check_device(cfg), check_runtime(cfg, sps)]

    def resolve(self, cfg: Config) -> Config:
        out = cfg.model_copy(deep=True)
        out.train.minibatch_size = self._minibatch(cfg)
        out.train.batch_size = self._rollout(cfg)
        return out

    def derive_batch(self, cfg: Config) -> BatchArithmetic:
        return BatchArithmetic([1, cfg.vec.num_envs, cfg.train.bptt_horizon], self._rollout(cfg))

    def batch_line(self, cfg: Config) -> str:
        return f"n_steps {cfg.train.bptt_horizon} × n_envs {cfg.vec.num_envs} = {self._rollout(cfg):,}"

    def argv_template(self, cfg: Config) -> list[str]:
        return [sys.executable, "-m", "autopilot.backends.sb3", "--config", "{config}", "--run-dir", "{run_dir}",
                "--resume", "{resume}"]


SB3 = register_backend(SB3Backend())


# -- the child process ------------------------------------------------------------------------------
def ppo_kwargs(cfg: Config) -> dict[str, Any]:
    t = cfg.train
    lr = float(t.learning_rate)
    return {"learning_rate": (lambda progress: lr * progress) if t.anneal_lr else lr, "n_steps": t.bptt_horizon,
            "batch_size": int(SB3._minibatch(cfg)), "n_epochs": t.update_epochs, "gamma": t.gamma,
            "gae_lambda": t.gae_lambda, "clip_range": t.clip_coef, "ent_coef": t.ent_coef, "vf_coef": t.vf_coef,
            "max_grad_norm": t.max_grad_norm, "seed": t.seed,
            "device": "auto" if t.device == "auto" else t.device, **cfg.extras.get("ppo", {})}


def run_sb3(cfg: Config, run_dir: Path, resume: str | None) -> int:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger

    from autopilot.atomic import append_text
    from autopilot.summary import TrainerSummary, write_summary
    from autopilot.trainer.checkpoint import save_checkpoint
    from autopilot.trainer.metrics import TailWindow, row_json
    from autopilot.trainer.utilisation import Utilisation

    if is_builtin_env(cfg.env_name):
        import autopilot.envs.gym_interface  # noqa: F401  registers autopilot's Gymnasium ids
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    stop: list[str] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:  # a stop ends the rollout in flight; the last trained state is saved
        signal.signal(s, lambda signum, frame: stop.append(signal.Signals(signum).name))
    env = make_vec_env(cfg.env_name, n_envs=cfg.vec.num_envs, seed=cfg.train.seed, env_kwargs=dict(cfg.env) or None)
    window, util, t_start = TailWindow(cfg.autopilot.metrics_window), Utilisation(cfg.train.device), time.time()
    state: dict[str, Any] = {"status": "completed", "error": None, "kind": None, "path": None, "epoch": 0}
    if resume:
        from autopilot.backends import resume_kind

        ckpt = torch.load(resume, map_location="cpu", weights_only=False)
        if "sb3_zip" not in ckpt:
            raise ConfigError(f"checkpoint {resume} was not written by the sb3 backend (backend "
                              f"{ckpt.get('backend', 'builtin')!r}); start fresh with autopilot.resume_mode=fresh")
        state["kind"] = resume_kind(ckpt, cfg)
        # SB3's own load: weights, optimizer state, num_timesteps; a warm start takes this config's settings.
        custom = {} if state["kind"] == "continue" else {k: v for k, v in ppo_kwargs(cfg).items()
                                                         if k not in ("seed", "device")}
        model = PPO.load(io.BytesIO(ckpt["sb3_zip"]), env=env, device=ppo_kwargs(cfg)["device"],
                         custom_objects=custom)
        state["epoch"] = int(ckpt["counters"]["epoch"])
        target = int(ckpt["counters"]["target_steps"]) if state["kind"] == "continue" else \
            model.num_timesteps + cfg.train.total_timesteps
        if state["kind"] == "continue":
            window = TailWindow(cfg.autopilot.metrics_window, ckpt.get("tail", []))
    else:
        model = PPO(cfg.extras.get("policy", "MlpPolicy"), env, verbose=0, **ppo_kwargs(cfg))
        target = cfg.train.total_timesteps
    # A logger with no outputs: the rows read its values; SB3's default makes a tempdir/SB3-<time> folder per
    # learn() call, left behind empty.
    model.set_logger(Logger(folder=None, output_formats=[]))
    start_steps = model.num_timesteps
    trained = {"steps": start_steps}

    def save(resumable: bool) -> None:
        buf = io.BytesIO()
        model.num_timesteps = trained["steps"]  # a rollout cut short by a stop was never trained on
        model.save(buf)
        state["path"] = save_checkpoint(ckpt_dir / "latest.pt", {
            "backend": "sb3", "sb3_zip": buf.getvalue(), "resumable": resumable, "config": cfg.model_dump(),
            "counters": {"agent_steps": trained["steps"], "epoch": state["epoch"], "target_steps": target},
            "tail": list(window.rows)})

    class Rows(BaseCallback):
        """A metrics row per rollout: SB3's logged train stats of the update just done + the episodes."""

        def __init__(self) -> None:
            super().__init__()
            self.ep_returns: list[float] = []
            self.ep_lengths: list[float] = []
            self.t0, self.first = time.time(), True

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self.ep_returns.append(float(info["episode"]["r"]))
                    self.ep_lengths.append(float(info["episode"]["l"]))
            return not stop

        def _on_rollout_start(self) -> None:
            if self.first:
                self.first = False
                return
            self.write()

        def write(self) -> None:
            values = {k: float(v) for k, v in self.model.logger.name_to_value.items()
                      if isinstance(v, (int, float)) or hasattr(v, "item")}
            if "train/n_updates" not in values:
                return
            state["epoch"] += 1
            trained["steps"] = self.model.num_timesteps
            n = len(self.ep_returns)
            row = {"epoch": state["epoch"], "agent_steps": trained["steps"],
                   "sps": (self.model.n_steps * self.model.n_envs) / max(time.time() - self.t0, 1e-9),
                   "wall_s": time.time() - t_start, "learning_rate": values.get("train/learning_rate"),
                   **{ours: values.get(k) for k, ours in SB3_STATS.items()},
                   "entropy": -values["train/entropy_loss"] if "train/entropy_loss" in values else None,
                   "mean_reward": sum(self.ep_returns) / n if n else None,
                   "episode_length": sum(self.ep_lengths) / n if n else None, "episodes": n, **util.sample()}
            window.add(row)
            append_text(run_dir / "metrics.jsonl", row_json(row))
            self.model.logger.name_to_value.clear()
            self.ep_returns, self.ep_lengths, self.t0 = [], [], time.time()
            if state["epoch"] % max(1, cfg.train.checkpoint_interval) == 0:
                save(resumable=True)

    rows = Rows()
    try:
        if model.num_timesteps < target:
            model.learn(total_timesteps=target - model.num_timesteps, callback=rows, reset_num_timesteps=False,
                        log_interval=None)
            rows.write()  # the last update's row
        if stop and trained["steps"] < target:
            state["status"], state["error"] = "interrupted", f"stopped by {stop[0]} at epoch {state['epoch']}"
        save(resumable=state["status"] != "completed")
    except BaseException as exc:
        state["status"], state["error"] = "crashed", "".join(traceback.format_exception(exc))[-4000:]
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        env.close()
        wall = time.time() - t_start
        act = model.action_space
        shape = {"act_n": int(act.n)} if hasattr(act, "n") else {"act_dim": int(act.shape[0])}
        write_summary(run_dir / "trainer_summary.json", TrainerSummary(
            run_id=run_dir.name, status=state["status"],
            throughput={"sps": (trained["steps"] - start_steps) / wall if wall > 0 else None,
                        "agent_steps": trained["steps"], "epoch": state["epoch"], "wall_s": wall},
            metrics=window.env_metrics(), trainer={**window.trainer_metrics(), **shape},
            utilisation=window.utilisation(),
            checkpoint={"path": str(state["path"]) if state["path"] else None, "resumed_from": resume,
                        "resume_kind": state["kind"]},
            error=state["error"]))
    print(f"run {run_dir.name} {state['status']}: {trained['steps']:,} steps, epoch {state['epoch']}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autopilot.backends.sb3")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--resume", default=None)
    ns = parser.parse_args(argv)
    from autopilot.config import ensure_valid, load_config
    from autopilot.errors import AutopilotError

    try:
        return run_sb3(ensure_valid(load_config(ns.config)), ns.run_dir, ns.resume)
    except AutopilotError as exc:  # a config or checkpoint that cannot be used: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
