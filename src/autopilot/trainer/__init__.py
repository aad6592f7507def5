"""The built-in PPO trainer: rollouts over vectorised envs, the PPO update, checkpoints, metrics, dashboard.

Entry point: `autopilot.trainer.train.train(cfg, run_dir, resume=..., dashboard=..., run_id=...)`.
"""
