"""The pufferlib backend's child process: PufferLib's own `PuffeRL`, speaking autopilot's run-folder files.

    python -m autopilot.backends.pufferlib_driver --config RUN/config.json --run-dir RUN [--resume CKPT]
    python -m autopilot.backends.pufferlib_driver --probe-agents CONFIG   (prints agents per env object)

The driver builds the env and policy as PufferLib does (`pufferl.load_env` / `load_policy`, or a user's
own factories named `module:callable` in `extras.vecenv` / `extras.policy_factory`), then runs PuffeRL's
`evaluate()`/`train()` epochs itself, so that:

* `metrics.jsonl` gets a row every epoch (PufferLib logs at most 4 times a second: the driver asks for
  every epoch's log), with that epoch's losses (PufferLib's own log shows the previous epoch's);
* only trained steps are counted (PufferLib's `train()` ends with evaluation passes that add steps);
* `checkpoints/latest.pt` holds weights, optimizer, learning-rate schedule and counters (PufferLib's own
  resume restores weights only), and a resume restores all of them;
* SIGTERM/SIGINT finish the epoch in flight, save, write the summary and exit 0 (PufferLib's own SIGINT
  handler ends the process with `os._exit(0)`, saving nothing; it is replaced here).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from autopilot.atomic import append_text
from autopilot.config.model import Config
from autopilot.errors import AutopilotError
from autopilot.summary import TrainerSummary, write_summary
from autopilot.trainer.metrics import TailWindow, row_json

LOSS_NAMES = {"approx_kl": "approx_kl", "old_approx_kl": "old_approx_kl", "clipfrac": "clipfrac",
              "entropy": "entropy", "value_loss": "value_loss", "policy_loss": "policy_loss",
              "explained_variance": "explained_var"}


def _factory(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def puffer_args(cfg: Config, data_dir: Path | None = None) -> dict[str, Any]:
    """The nested args dict PufferLib's `load_config` would build from the same file."""
    from autopilot.backends.pufferlib import VEC_CLASSES, num_workers, vec_batch_size

    ex = cfg.extras
    vec = {**cfg.vec.model_dump(), "backend": VEC_CLASSES[cfg.vec.backend], "num_workers": num_workers(cfg)}
    if "batch_size" in vec:
        vec["batch_size"] = vec_batch_size(cfg)
    train = cfg.train.model_dump()
    if data_dir is not None:
        train["data_dir"] = str(data_dir)
    train["use_rnn"] = ex.get("rnn_name") is not None
    return {"package": ex.get("package"), "env_name": cfg.env_name, "policy_name": ex.get("policy_name", "Policy"),
            "rnn_name": ex.get("rnn_name"), "env": dict(cfg.env), "vec": vec, "policy": dict(ex.get("policy", {})),
            "rnn": dict(ex.get("rnn", {})), "train": train, "load_model_path": None, "load_id": None,
            "neptune": False, "wandb": False}


def _env_module(args: dict[str, Any]):
    package = args["package"]
    return importlib.import_module("pufferlib.ocean" if package == "ocean" else f"pufferlib.environments.{package}")


def probe_agents(cfg: Config) -> int:
    """Agents in one env object, counted by building it once in a child (PufferLib's import writes a
    `resources` link into the working folder and changes warning filters; neither may touch the caller)."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(cfg.model_dump()), encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "autopilot.backends.pufferlib_driver", "--probe-agents", str(path)],
                              cwd=tmp, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["no output"])[-1])
    return int(proc.stdout.strip().splitlines()[-1])


def _probe_main(config: Path) -> None:
    cfg = Config.model_validate(json.loads(config.read_text(encoding="utf-8")))
    if cfg.extras.get("vecenv"):
        raise RuntimeError("a user's own vecenv is counted when it runs, not before")
    args = puffer_args(cfg)
    env = _env_module(args).env_creator(cfg.env_name)(**args["env"])
    print(int(env.num_agents))
    env.close()


# --------------------------------------------------------------------------------------------------
class RunLogger:
    """PufferLib's logger interface (`run_id`, `log`, `close`): keeps the latest log for the driver."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.last: dict[str, Any] | None = None

    def log(self, logs: dict[str, Any], step: int) -> None:
        self.last = dict(logs)

    def close(self, model_path: str) -> None:
        pass


class Driver:
    def __init__(self, cfg: Config, run_dir: Path, resume: str | None):
        self.cfg, self.run_dir, self.resume = cfg, run_dir, resume
        self.ckpt_dir = run_dir / "checkpoints"
        self.stop_reason: str | None = None
        self.status, self.error = "completed", None
        self.window = TailWindow(cfg.autopilot.metrics_window)
        self.latest_path: Path | None = None
        self.resume_kind: str | None = None
        self.start_steps = 0
        self.run_id = run_dir.name

    def _on_signal(self, signum, frame) -> None:
        if self.stop_reason is not None:
            raise KeyboardInterrupt
        self.stop_reason = signal.Signals(signum).name

    def _log(self, line: str) -> None:
        print(f"[pufferlib] {line}", flush=True)

    def build(self) -> None:
        os.chdir(self.run_dir)  # PufferLib's import links `resources` into the working folder
        from pufferlib import pufferl

        for s in (signal.SIGINT, signal.SIGTERM):  # replaces PufferLib's os._exit(0) on SIGINT
            signal.signal(s, self._on_signal)
        self.pufferl = pufferl
        args = puffer_args(self.cfg, self.ckpt_dir / "pufferlib")
        ex = self.cfg.extras
        vecenv = _factory(ex["vecenv"])(args) if ex.get("vecenv") else pufferl.load_env(self.cfg.env_name, args)
        policy = (_factory(ex["policy_factory"])(args, vecenv) if ex.get("policy_factory")
                  else pufferl.load_policy(args, vecenv))
        self.ckpt = None
        train_cfg = dict(**args["train"], env=self.cfg.env_name)
        if self.resume:
            from autopilot.backends import resume_kind
            from autopilot.trainer.checkpoint import load_checkpoint, shapes_match

            self.ckpt = load_checkpoint(self.resume, args["train"]["device"])
            self.resume_kind = resume_kind(self.ckpt, self.cfg)
            if not shapes_match(policy, self.ckpt["policy"]):  # a changed network: counters go on, fresh weights
                self._log(f"checkpoint {self.resume}: network shapes differ from this config; fresh weights")
                self.resume_kind, self.ckpt["optimizer"] = "warm", None
            else:
                policy.load_state_dict(self.ckpt["policy"])
            if self.resume_kind == "warm":  # a finished run: this run trains total_timesteps more
                train_cfg["total_timesteps"] += int(self.ckpt["counters"]["agent_steps"])
            else:
                train_cfg["total_timesteps"] = int(self.ckpt["counters"]["target_steps"])
        self.logger = RunLogger(self.run_id)
        self.trainer = pufferl.PuffeRL(train_cfg, vecenv, policy, self.logger)
        if not sys.stdout.isatty():
            self.trainer.print_dashboard = lambda *a, **k: None  # the log file gets our lines instead
        self.target = train_cfg["total_timesteps"]
        if self.ckpt is not None:
            t, c = self.trainer, self.ckpt["counters"]
            if self.ckpt["optimizer"] is not None:
                t.optimizer.load_state_dict(self.ckpt["optimizer"])
            t.global_step, t.epoch = int(c["agent_steps"]), int(c["epoch"])
            if self.resume_kind == "continue":
                t.scheduler.load_state_dict(self.ckpt["scheduler"])
                self.window = TailWindow(self.cfg.autopilot.metrics_window, self.ckpt.get("tail", []))
            else:
                self._restart_schedule(train_cfg)
        self.start_steps = self.trainer.global_step
        from autopilot.trainer.utilisation import Utilisation

        self.util = Utilisation(str(args["train"]["device"]))
        self._log(f"run {self.run_id}: {self.cfg.env_name} via PufferLib {vecenv.__class__.__name__}, "
                  f"{self.trainer.total_agents} agents, batch {train_cfg['batch_size']:,} = {self.trainer.segments} "
                  f"segments × bptt {train_cfg['bptt_horizon']}, minibatch {self.trainer.minibatch_size:,}, "
                  f"optimizer {train_cfg['optimizer']}, device {train_cfg['device']}, target {self.target:,} steps"
                  + (f"; resumed ({self.resume_kind}) at step {self.start_steps:,}, epoch {self.trainer.epoch}, "
                     f"optimizer state for {len(self.trainer.optimizer.state_dict()['state'])} tensors, "
                     f"lr {self.trainer.optimizer.param_groups[0]['lr']:.6g}" if self.ckpt is not None else ""))

    def _restart_schedule(self, train_cfg: dict[str, Any]) -> None:
        """A warm start keeps the optimizer's moments but takes this config's hyperparameters, with the
        learning-rate schedule spanning this run's epochs (the saved lr is where the last run's ended)."""
        import torch

        t = self.trainer
        for group in t.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = train_cfg["learning_rate"]
            if "betas" in group:
                group["betas"] = (train_cfg["adam_beta1"], train_cfg["adam_beta2"])
            if "eps" in group:
                group["eps"] = train_cfg["adam_eps"]
        epochs = max(1, (self.target - t.global_step) // train_cfg["batch_size"])
        t.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(t.optimizer, T_max=epochs)

    def _row(self, t0: float, steps0: int) -> dict[str, Any]:
        t, logs = self.trainer, self.logger.last or {}
        wall = time.time() - t0
        row: dict[str, Any] = {"epoch": t.epoch, "agent_steps": t.global_step,
                               "sps": (t.global_step - steps0) / wall if wall > 0 else None,
                               "wall_s": time.time() - self.t_start, "learning_rate": t.optimizer.param_groups[0]["lr"]}
        row.update({ours: float(t.losses[k]) for k, ours in LOSS_NAMES.items() if k in t.losses})
        env = {k[len("environment/"):]: v for k, v in logs.items() if k.startswith("environment/")}
        row.update({k: float(v) for k, v in env.items() if isinstance(v, (int, float))})
        row["episodes"] = int(env.get("n", 1)) if env else 0
        row.update(self.util.sample())
        return row

    def _save(self, resumable: bool) -> None:
        from autopilot.trainer.checkpoint import save_checkpoint

        t = self.trainer
        payload = {"backend": "pufferlib", "policy": t.uncompiled_policy.state_dict(),
                   "optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(),
                   "counters": {"agent_steps": t.global_step, "epoch": t.epoch, "start_steps": self.start_steps,
                                "target_steps": self.target},
                   "config": self.cfg.model_dump(), "run_id": self.run_id, "resumable": resumable,
                   "tail": list(self.window.rows)}
        self.latest_path = save_checkpoint(self.ckpt_dir / "latest.pt", payload)

    def run(self) -> TrainerSummary:
        self.t_start = time.time()
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.build()
            interval = max(1, self.cfg.train.checkpoint_interval)
            t = self.trainer
            while t.global_step < self.target and self.stop_reason is None:
                t0, steps0 = time.time(), t.global_step
                t.evaluate()
                t.last_log_time = 0.0  # every epoch's log, not PufferLib's 4 per second
                t.train()
                row = self._row(t0, steps0)
                self.window.add(row)
                append_text(self.run_dir / "metrics.jsonl", row_json(row))
                if t.epoch % interval == 0 and t.global_step < self.target:
                    self._save(resumable=True)
            if self.stop_reason is not None and t.global_step < self.target:
                self.status, self.error = "interrupted", f"stopped by {self.stop_reason} at epoch {t.epoch}"
                self._log(self.error)
            self._save(resumable=self.status != "completed")
        except KeyboardInterrupt:
            self.status, self.error = "interrupted", "stopped by a second signal (no checkpoint saved)"
        except AutopilotError as exc:  # a checkpoint or config that cannot be used: one line, no traceback
            self.status, self.error = "failed", str(exc)
            self._log(f"error: {exc}")
        except BaseException as exc:
            self.status, self.error = "crashed", "".join(traceback.format_exception(exc))[-4000:]
            raise
        finally:
            trainer = getattr(self, "trainer", None)
            if trainer is not None:
                trainer.utilization.stop()
                trainer.vecenv.close()
            summary = self._summary()
            write_summary(self.run_dir / "trainer_summary.json", summary)
        self._log(f"run {self.run_id} {self.status}: {summary.throughput.agent_steps:,} steps, epoch "
                  f"{summary.throughput.epoch}")
        return summary

    def _summary(self) -> TrainerSummary:
        wall = time.time() - self.t_start
        t = getattr(self, "trainer", None)
        steps = t.global_step if t is not None else 0
        trained = steps - self.start_steps
        return TrainerSummary(
            run_id=self.run_id, status=self.status,
            throughput={"sps": trained / wall if wall > 0 else None, "agent_steps": steps,
                        "epoch": t.epoch if t is not None else 0, "wall_s": wall, "trained_steps": trained},
            metrics=self.window.env_metrics(), trainer=self.window.trainer_metrics(),
            utilisation=self.window.utilisation(),
            checkpoint={"path": str(self.latest_path) if self.latest_path else None, "resumed_from": self.resume,
                        "resume_kind": self.resume_kind},
            error=self.error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autopilot.backends.pufferlib_driver")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--probe-agents", type=Path, default=None)
    ns = parser.parse_args(argv)
    if ns.probe_agents is not None:
        _probe_main(ns.probe_agents)
        return 0
    if ns.config is None or ns.run_dir is None:
        parser.error("--config and --run-dir are required")
    from autopilot.config import ensure_valid, load_config

    try:
        cfg = ensure_valid(load_config(ns.config))
    except AutopilotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ns.run_dir.mkdir(parents=True, exist_ok=True)
    resume = str(Path(ns.resume).resolve()) if ns.resume else None  # the driver works inside the run folder
    summary = Driver(cfg, ns.run_dir.resolve(), resume).run()
    return 0 if summary.status in ("completed", "interrupted") else 2


if __name__ == "__main__":
    sys.exit(main())
