"""A tiny stand-in trainer for the loop's tests: stdlib only, starts in milliseconds.

    python fake_trainer.py --config C --run-dir D [--resume P]

Behaviour comes from the plan file named by $FAKE_PLAN: {"steps": [b0, b1, ...], "default": b}; the
n-th invocation (a counter file beside the plan) uses steps[n], else default. A behaviour is a dict:

    epochs        metrics lines to write (default 3)
    epoch_sleep   seconds between lines (default 0)
    success       the success_rate to report (default 0.2 + 0.1 n, capped at 0.9)
    crash_at      exit 3 with a traceback-like line after this many epochs
    die_at        SIGKILL itself after this many epochs (an OOM kill, as the loop sees it)
    hang_at       stop writing and sleep forever after this many epochs
    nan_at        write a NaN loss line, then a summary with status diverged, exit 2
    summary       "ok" | "missing" | "truncated" (what trainer_summary.json looks like)
    summary_text  write exactly this text as trainer_summary.json (fuzzing)
    ignore_term   ignore SIGTERM (the watchdog must SIGKILL)
    ready_file    touch this path once the first metrics line is written (for tests that kill it)

Checkpoints are copies of $FAKE_CKPT (a real torch-saved dict), so `torch.load` works on them.
Every invocation is appended to calls.jsonl beside the plan (n, run_dir, resume, pid).
On SIGTERM it saves latest.pt and writes a summary with status interrupted, then exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _next_invocation(plan_path: Path) -> int:
    counter = plan_path.with_suffix(".count")
    n = int(counter.read_text()) if counter.exists() else 0
    _atomic(counter, str(n + 1))
    return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--resume", default=None)
    args = ap.parse_args()
    run_dir = Path(args.run_dir)
    plan_path = Path(os.environ["FAKE_PLAN"])
    plan = json.loads(plan_path.read_text())
    n = _next_invocation(plan_path)
    steps = plan.get("steps", [])
    b = dict(plan.get("default", {}))
    if n < len(steps):
        b.update(steps[n])
    with open(plan_path.parent / "calls.jsonl", "a") as fh:
        fh.write(json.dumps({"n": n, "run_dir": str(run_dir), "resume": args.resume, "pid": os.getpid()}) + "\n")
    json.loads(Path(args.config).read_text())  # a real trainer reads its config; so do we

    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    template = Path(os.environ["FAKE_CKPT"])
    success = b.get("success", min(0.9, 0.2 + 0.1 * n))
    epochs = int(b.get("epochs", 3))
    state = {"epoch": 0}

    def save(name: str) -> None:
        tmp = ckpt_dir / f".{name}.tmp"
        shutil.copyfile(template, tmp)
        os.replace(tmp, ckpt_dir / name)

    def summary(status: str, sr: float | str = success, **extra) -> None:
        mode = b.get("summary", "ok")
        if mode == "missing":
            return
        if "summary_text" in b:
            _atomic(run_dir / "trainer_summary.json", b["summary_text"])
            return
        body = {
            "schema": 1, "run_id": run_dir.name, "status": status,
            "throughput": {"sps": 1000000.0, "agent_steps": 1024 * state["epoch"], "epoch": state["epoch"], "wall_s": 0.1},
            "metrics": {"success_rate": sr, "mean_reward": 10.0 * (success if isinstance(success, float) else 0),
                        "collision_rate": 0.01, "episodes": 10 * state["epoch"]},
            "trainer": {"approx_kl": 0.01, "clipfrac": 0.1, "entropy": 1.0, "value_loss": 0.5,
                        "policy_loss": -0.01, "explained_var": 0.5},
            "utilisation": {"cpu_pct": 100.0, "gpu_pct": None, "dram_pct": 10.0, "vram_pct": None},
            "eval": None,
            "checkpoint": {"path": str(ckpt_dir / "latest.pt"), "resumed_from": args.resume,
                           "best_path": str(ckpt_dir / "best.pt"), "best_score": sr},
            **extra,
        }
        text = json.dumps(body, allow_nan=True)
        _atomic(run_dir / "trainer_summary.json", text[: len(text) // 2] if mode == "truncated" else text)

    def on_term(signum, frame):
        save("latest.pt")
        summary("interrupted")
        os._exit(1)

    signal.signal(signal.SIGTERM, signal.SIG_IGN if b.get("ignore_term") else on_term)
    metrics = run_dir / "metrics.jsonl"
    for epoch in range(1, epochs + 1):
        if b.get("hang_at") == epoch - 1:
            while True:
                time.sleep(1)
        if b.get("crash_at") == epoch - 1:
            print("Traceback (most recent call last):\nRuntimeError: fake trainer crash", flush=True)
            return 3
        if b.get("die_at") == epoch - 1:
            os.kill(os.getpid(), signal.SIGKILL)
        state["epoch"] = epoch
        loss = float("nan") if b.get("nan_at") == epoch else 0.5
        with open(metrics, "a") as fh:
            fh.write(json.dumps({"epoch": epoch, "agent_steps": 1024 * epoch, "sps": 1000000.0, "success_rate": success,
                                 "value_loss": loss}, allow_nan=True) + "\n")
        print(f"epoch {epoch}", flush=True)
        if epoch == 1 and b.get("ready_file"):
            Path(b["ready_file"]).touch()
        if b.get("nan_at") == epoch:
            summary("diverged", error="non-finite loss (value_loss=nan)")
            return 2
        save("latest.pt")
        time.sleep(float(b.get("epoch_sleep", 0)))
    save("best.pt")
    summary("completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
