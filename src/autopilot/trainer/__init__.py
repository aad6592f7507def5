"""The built-in PPO trainer: rollouts over vectorised envs, the PPO update, checkpoints, metrics, dashboard.

Entry point: `autopilot.trainer.train.train(cfg, run_dir, resume=..., dashboard=..., run_id=...)`.
"""

import os

# OpenMP threads that spin-wait between parallel regions steal the cores that env workers (or other
# programs) need and can slow a small-MLP update down several times; sleeping threads cost little.
# Read when torch loads its OpenMP runtime, so it only takes effect if torch is not imported yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
