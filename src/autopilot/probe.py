"""`autopilot probe`: find the rollout topology that trains fastest on this machine, and propose it.

It sweeps `vec.num_workers` (1, 2, 4, ... up to the cores), `vec.num_envs` (1, 2, 4 env objects per
worker) and the agents per env object (`env.num_envs` arenas for drone_delivery: ½×, 1×, 2× the
config's), trains each topology for a few epochs with the real trainer (the same argv and watchdog as a
loop run, on the config's device), and measures its SPS from the epochs after the first (which pays for
start-up). A topology is *stable* when its per-epoch SPS spread ((max-min)/median) stays within
`STABLE_SPREAD`; the winner is the highest stable median SPS (fewer processes on a tie). The winner is
written as a proposal that passes every invariant (`proposals.validate_override`), so `autopilot run`
uses it next.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from autopilot.atomic import atomic_write_json
from autopilot.config import Config, config_from_dict, derive_batch, ensure_valid
from autopilot.errors import AutopilotError, ConfigError
from autopilot.loop import launch

STABLE_SPREAD = 0.35  # (max - min) / median of the measured epochs' SPS; above it the figure is not trusted
PROBE_EPOCHS = 4  # the first is warm-up; SPS comes from the others


@dataclass
class Topology:
    num_workers: int
    num_envs: int  # vec.num_envs: env objects
    arenas: int | None  # env.num_envs (agents per object = arenas × drones); None when the env has no such knob

    def override(self) -> dict[str, Any]:
        out: dict[str, Any] = {"vec.num_workers": self.num_workers, "vec.num_envs": self.num_envs}
        if self.arenas is not None:
            out["env.num_envs"] = self.arenas
        return out


@dataclass
class Measurement:
    topology: Topology
    agents: int = 0
    sps: float | None = None  # median of the measured epochs
    spread: float | None = None
    epochs: list[float] = field(default_factory=list)
    error: str = ""  # why the topology has no trustworthy figure
    note: str = ""  # a remark that does not disqualify it (e.g. stopped at the budget after enough epochs)

    @property
    def stable(self) -> bool:
        return self.sps is not None and self.spread is not None and self.spread <= STABLE_SPREAD


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def topologies(cfg: Config, cores: int) -> list[Topology]:
    workers = sorted({w for w in (1, 2, 4, 8, 16, 32, 64) if w <= cores} | {max(1, cores)})
    arenas = cfg.env.get("num_envs") if cfg.env_name == "drone_delivery" else None
    arena_choices = sorted({max(1, arenas // 2), arenas, arenas * 2}) if isinstance(arenas, int) else [None]
    return [Topology(w, w * m, a) for w in workers for m in (1, 2, 4) for a in arena_choices]


def probe_config(cfg: Config, topo: Topology, epochs: int = PROBE_EPOCHS) -> Config:
    """The config with `topo`, trained for `epochs` whole batches, no evaluation, no periodic checkpoints."""
    data = cfg.model_dump()
    data["train"].update(batch_size="auto", minibatch_size="auto")
    over = {**topo.override(), "autopilot.eval_episodes": 0, "train.checkpoint_interval": 10_000,
            "autopilot.resume_mode": "fresh"}
    probe = config_from_dict(data, over)
    batch = derive_batch(probe).batch
    return config_from_dict(probe.model_dump(), {"train.total_timesteps": batch * epochs})


def measure(cfg: Config, topo: Topology, workdir: Path, *, seconds: float) -> Measurement:
    """Train `topo` briefly in `workdir/<name>` under the loop's watchdog; SPS from metrics.jsonl."""
    from autopilot.workspace.layout import read_curve

    m = Measurement(topo)
    try:
        run_cfg = ensure_valid(probe_config(cfg, topo))
    except (AutopilotError, ValueError) as exc:
        m.error = f"invalid: {str(exc).splitlines()[0][:120]}"
        return m
    m.agents = derive_batch(run_cfg).batch // run_cfg.train.bptt_horizon
    run_dir = workdir / f"w{topo.num_workers}-e{topo.num_envs}-a{topo.arenas}"
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "config.json", run_cfg.model_dump())
    argv = launch.trainer_argv(None, config=run_dir / "config.json", run_dir=run_dir, resume=None)
    proc = launch.spawn(argv + ["--no-dashboard"], run_dir, attempt=1, cwd=workdir)
    result = launch.supervise(proc, run_dir, stall_seconds=seconds, wall_seconds=seconds,
                              grace=launch.grace_seconds(seconds), stop=launch.StopFlag())
    rows = [r["sps"] for r in read_curve(run_dir / "metrics.jsonl", lambda msg: None)
            if isinstance(r.get("sps"), (int, float)) and r["sps"] > 0]
    measured = rows[1:]
    m.epochs = measured
    if len(measured) < 2:  # too few epochs to call anything stable
        m.error = result.detail if result.returncode != 0 and result.detail else \
            f"only {len(rows)} epoch(s) in {seconds:g}s (exit {result.returncode})"
    elif result.returncode != 0:
        m.note = f"stopped at the {seconds:g}s budget" if result.reason == "timeout" else f"exit {result.returncode}"
    if measured:
        m.sps = statistics.median(measured)
        m.spread = (max(measured) - min(measured)) / m.sps if m.sps else None
    return m


def pick(results: list[Measurement]) -> Measurement | None:
    stable = [r for r in results if r.stable and not r.error]
    if not stable:
        return None
    return max(stable, key=lambda r: (r.sps, -r.topology.num_workers, -r.topology.num_envs))


def table(results: list[Measurement], winner: Measurement | None, device: str) -> Table:
    t = Table(title=f"throughput probe: {cpu_count()} cores, device {device}; SPS = median of epochs 2+")
    for col in ("workers", "envs", "arenas", "agents", "SPS", "spread", "stable"):
        t.add_column(col, justify="left" if col == "stable" else "right", no_wrap=True)
    t.add_column("", overflow="fold")
    for r in results:
        tp = r.topology
        t.add_row(str(tp.num_workers), str(tp.num_envs), "–" if tp.arenas is None else str(tp.arenas),
                  f"{r.agents:,}" if r.agents else "–", f"{r.sps:,.0f}" if r.sps else "–",
                  f"{r.spread:.0%}" if r.spread is not None else "–",
                  "yes" if r.stable and not r.error else ("no" if r.sps else "–"),
                  "★ winner" if r is winner else (r.error or r.note), style="bold green" if r is winner else None)
    t.caption = ("workers = vec.num_workers, envs = vec.num_envs, arenas = env.num_envs (agents per env object = "
                 "arenas × drones); stable = per-epoch spread within " + f"{STABLE_SPREAD:.0%}")
    return t


def probe(cfg: Config, *, seconds: float = 30.0, cores: int | None = None, console: Console | None = None,
          only: Callable[[Topology], bool] | None = None) -> tuple[list[Measurement], Measurement | None]:
    """Measure every topology of the sweep; returns the measurements and the winner (None if none was stable)."""
    console = console or Console()
    cfg = ensure_valid(cfg)  # the device must exist here, the rest must hold before anything runs
    grid = [t for t in topologies(cfg, cores or cpu_count()) if only is None or only(t)]
    results: list[Measurement] = []
    workdir = Path(tempfile.mkdtemp(prefix="autopilot-probe-"))
    try:
        for i, topo in enumerate(grid, 1):
            console.print(f"[dim]probe {i}/{len(grid)}: {topo.override()}[/]", highlight=False)
            results.append(measure(cfg, topo, workdir, seconds=seconds))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results, pick(results)


def winning_override(base: Config, winner: Measurement) -> dict[str, Any]:
    """The winner as a proposal for `base`, checked against every invariant (a ConfigError if it fails)."""
    from autopilot.workspace.proposals import validate_override

    override = winner.topology.override()
    validate_override(override, base, sps=winner.sps)
    return override


def probe_command(config: str | None, workdir: Path, *, mode: str, seconds: float, cores: int | None,
                  console: Console) -> Measurement | None:
    """`autopilot probe`: the table, then the winner staged as proposals/next_config.json."""
    from autopilot.config import load_config
    from autopilot.workspace.layout import init_workspace, load_history
    from autopilot.workspace.proposals import current_base, stage

    if seconds <= 0:
        raise ConfigError(f"--seconds {seconds:g} must be positive (rule: each topology trains for a while); "
                          f"use e.g. --seconds 30")
    if cores is not None and cores < 1:
        raise ConfigError(f"--cores {cores} must be at least 1; leave it out to use this machine's {cpu_count()}")
    ws = init_workspace(workdir)
    if config is not None:
        base = load_config(config)
        source = config
    else:
        base, source = current_base(ws, mode, load_history(ws, lambda m: None, with_curve=False))
    results, winner = probe(base, seconds=seconds, cores=cores, console=console)
    console.print(table(results, winner, base.train.device))
    if winner is None:
        console.print("[yellow]no topology ran stably; nothing proposed[/]")
        return None
    override = winning_override(base, winner)
    path = stage(ws, override)
    console.print(f"winner: {override} at {winner.sps:,.0f} SPS (base: {source}); proposal written to "
                  f"{ws.rel(path)}; `autopilot run` uses it next", highlight=False, soft_wrap=True)
    return winner


__all__ = ["Measurement", "Topology", "pick", "probe", "probe_command", "probe_config", "table", "topologies",
           "winning_override"]
