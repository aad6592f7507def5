"""Tuning efficiency: does an advisor's sequence of decisions beat what a user would do instead?

For each (env, start, seed) and each advisor, one autopilot session of N runs in a fresh workspace
(`autopilot.loop.runner.run_loop`), every advisor from the same starting config with the same run budget.
Per session: the score of each run, the best so far after each run, the final best and the agent-steps
trained (an advisor that buys more steps shows it). Per (env, start, advisor): the mean final best over
seeds with its spread (std, min, max); per (env, advisor): the average over starts.

The configs are small on purpose (a run is a few seconds on one core) but each start breaks a knob that
matters on that env: too timid (learning rate 10× too small / one tiny clipped epoch), too violent
(large steps, huge clip, many epochs), entropy off, value fit off, and a decent start.

    python benchmarks/tuning_efficiency.py --jobs 2 --out results.json       # the whole grid
    python benchmarks/tuning_efficiency.py --quick                           # a smoke test (minutes)
    python benchmarks/tuning_efficiency.py --envs cartpole --starts timid --advisors rules constant
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import io
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

ADVISORS = ("rules", "random", "constant", "optuna")
# The default grid's starts (each env defines "value" too: measured to hurt less in runs this short, so it
# is opt-in with --starts to keep the default grid's time down).
DEFAULT_STARTS = ("decent", "timid", "violent", "entropy")

# drone_delivery, one drone per arena (no collisions) with small pickup/drop zones: the decent start is
# at ~0.1-0.25 success after one run (80k agent-steps) and still rising; a timid learning rate stays at 0.
DRONE_BASE: dict[str, Any] = {
    "env_name": "drone_delivery",
    "env": {"num_envs": 64, "num_drones": 1, "max_steps": 80, "pickup_radius": 0.08, "drop_radius": 0.08,
            "pickup_max_speed": 0.02, "drop_max_speed": 0.02},
    "vec": {"num_envs": 1, "num_workers": 1},
    "train": {"total_timesteps": 79_872, "bptt_horizon": 32, "minibatch_size": 1024, "learning_rate": 0.003,
              "update_epochs": 4, "ent_coef": 0.01, "checkpoint_interval": 1000},
    "policy": {"hidden_size": 32, "num_layers": 2},
    "autopilot": {"objective": "success_rate", "metrics_window": 5, "eval_episodes": 16,
                  "max_run_seconds": 120.0, "stall_seconds": 60.0},
}
# CartPole-v1, rl-zoo-like (gamma 0.98, lambda 0.8, no entropy bonus), 32 copies × bptt 16.
CARTPOLE_BASE: dict[str, Any] = {
    "env_name": "gym:CartPole-v1",
    "env": {"num_envs": 32},
    "vec": {"num_envs": 1, "num_workers": 1},
    "train": {"total_timesteps": 24_576, "bptt_horizon": 16, "minibatch_size": 512, "update_epochs": 4,
              "learning_rate": 0.003, "gamma": 0.98, "gae_lambda": 0.8, "ent_coef": 0.0, "vf_clip_coef": 10.0,
              "checkpoint_interval": 1000},
    "policy": {"hidden_size": 32, "num_layers": 2},
    "autopilot": {"objective": "mean_reward", "metrics_window": 5, "eval_episodes": 8,
                  "max_run_seconds": 120.0, "stall_seconds": 60.0},
}
ENVS: dict[str, dict[str, Any]] = {
    "drone": {
        "base": DRONE_BASE,
        "starts": {
            "decent": ({}, "the base config: healthy and still improving"),
            "timid": ({"train.learning_rate": 0.0003}, "learning rate 10× too small"),
            "violent": ({"train.learning_rate": 0.03, "train.clip_coef": 1.0, "train.update_epochs": 8},
                        "lr 10× too big, clip 1.0, 8 epochs"),
            "entropy": ({"train.ent_coef": 0.12}, "ent_coef 0.12: the policy stays noise"),
            "value": ({"train.vf_coef": 0.02}, "vf_coef 0.02: the value head barely trains"),
        },
    },
    "cartpole": {
        "base": CARTPOLE_BASE,
        "starts": {
            "decent": ({}, "the base config: healthy and still improving"),
            "timid": ({"train.update_epochs": 1, "train.clip_coef": 0.05}, "update_epochs 1 + clip_coef 0.05"),
            "violent": ({"train.learning_rate": 0.1, "train.clip_coef": 1.0, "train.update_epochs": 8},
                        "lr 0.1 (33× the base), clip 1.0, 8 epochs: the policy collapses"),
            "entropy": ({"train.ent_coef": 0.5}, "ent_coef 0.5: the bonus outweighs the reward of 1 per step"),
            "value": ({"train.vf_coef": 0.01, "train.vf_clip_coef": 0.01}, "vf_coef 0.01 + vf_clip 0.01"),
        },
    },
}


def start_config(env: str, start: str, seed: int) -> dict[str, Any]:
    """The session's starting config: the env's base, the start's overrides, the seed."""
    from autopilot.config.overrides import apply_overrides

    overrides, _ = ENVS[env]["starts"][start]
    return apply_overrides(copy.deepcopy(ENVS[env]["base"]), {**overrides, "train.seed": seed})


# -- one session (runs in a worker process) ---------------------------------------------------------------
def _one_thread() -> None:
    # The trainer child processes inherit these: one core per session, no OpenMP spinning.
    os.environ["AUTOPILOT_TORCH_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def run_session(task: dict[str, Any]) -> dict[str, Any]:
    """One session: a fresh workspace whose quick profile is the start config, `runs` runs of `advisor`."""
    from autopilot.atomic import atomic_write_json
    from autopilot.decide.sanity import trusted_score
    from autopilot.loop.runner import run_loop
    from autopilot.workspace.layout import init_workspace, load_history

    _one_thread()
    workdir = Path(task["root"]) / f"{task['env']}-{task['start']}-s{task['seed']}-{task['advisor']}"
    if (workdir / "runs").is_dir() and any((workdir / "runs").iterdir()):
        raise RuntimeError(f"{workdir} already holds runs; every session needs a fresh workspace")
    ws = init_workspace(workdir)
    cfg = start_config(task["env"], task["start"], task["seed"])
    atomic_write_json(ws.profile_path("quick"), cfg)
    t0 = time.time()
    log = io.StringIO()
    code = run_loop(workdir, runs=task["runs"], mode="quick", advisor=task["advisor"],
                    console=Console(file=log, width=200))
    wall = time.time() - t0
    objective = cfg["autopilot"]["objective"]
    runs, best = [], None
    for rec in load_history(ws, lambda msg: None, with_curve=True):
        if rec.loop_summary is None:
            continue  # a folder the loop never completed
        score = trusted_score(rec, objective)
        if score is not None:
            best = score if best is None else max(best, score)
        steps = _steps_trained(rec)
        runs.append({"run_id": rec.run_id, "status": rec.status, "score": score, "best_so_far": best,
                     "agent_steps": steps, "changes": rec.loop_summary.changes,
                     "resume": rec.loop_summary.resume.get("mode"), "next_by": _next_by(rec.run_dir)})
    return {**{k: task[k] for k in ("env", "start", "seed", "advisor")}, "exit_code": code,
            "wall_s": round(wall, 1), "runs": runs, "final_best": best,
            "agent_steps": sum(r["agent_steps"] or 0 for r in runs),
            "log_tail": log.getvalue()[-2000:] if code != 0 or len(runs) < task["runs"] else ""}


def _steps_trained(rec: Any) -> int | None:
    """Agent-steps this run trained. A warm-started run's summary counts from the checkpoint's steps, so
    the offset is taken off: the first metrics row is one batch past the step count it resumed from."""
    from autopilot.config.invariants import derive_batch

    if rec.trainer_summary is None:
        return None
    total = rec.trainer_summary.throughput.agent_steps
    first = rec.curve[0].get("agent_steps") if rec.curve else None
    if not isinstance(total, int) or not isinstance(first, int) or rec.config is None:
        return total
    return total - max(0, first - derive_batch(rec.config).batch)


def _next_by(run_dir: Path) -> str | None:
    """Which advisor's proposal the guard accepted after this run (the notes' "- Advisor:" line): a
    session of advisor X whose proposals were refused ran on the fallback's instead, and must show it."""
    try:
        text = (run_dir / "notes.md").read_text("utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r"^- Advisor: (\S+)", text, re.MULTILINE)
    return match.group(1) if match else None


# -- aggregation (pure) -----------------------------------------------------------------------------------
def spread(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values)}


def summarise(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """{env: {"starts": {start: {advisor: stats}}, "average": {advisor: mean over starts}}}.

    A session without any trusted score counts as missing (n drops), never as 0."""
    out: dict[str, Any] = {}
    for s in sessions:
        env = out.setdefault(s["env"], {"starts": {}, "average": {}})
        cell = env["starts"].setdefault(s["start"], {}).setdefault(s["advisor"], {"finals": [], "steps": [],
                                                                                   "curves": []})
        if s["final_best"] is not None:
            cell["finals"].append(s["final_best"])
        cell["steps"].append(s["agent_steps"])
        cell["curves"].append([r["best_so_far"] for r in s["runs"]])
    for env in out.values():
        advisors = sorted({a for cells in env["starts"].values() for a in cells})
        for cells in env["starts"].values():
            for cell in cells.values():
                cell.update(spread(cell["finals"]))
                cell["mean_agent_steps"] = statistics.fmean(cell["steps"]) if cell["steps"] else None
                cell["mean_best_so_far"] = _mean_curve(cell["curves"])
        for a in advisors:
            means = [cells[a]["mean"] for cells in env["starts"].values() if a in cells and cells[a]["mean"] is not None]
            env["average"][a] = statistics.fmean(means) if means else None
    return out


def _mean_curve(curves: list[list[float | None]]) -> list[float | None]:
    n = max((len(c) for c in curves), default=0)
    out = []
    for i in range(n):
        vals = [c[i] for c in curves if i < len(c) and c[i] is not None]
        out.append(statistics.fmean(vals) if vals else None)
    return out


def _fmt(v: float | None, digits: int) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _digits(env: str) -> int:
    return 3 if ENVS.get(env, {}).get("base", {}).get("autopilot", {}).get("objective") == "success_rate" else 1


def _cell_texts(cells: dict[str, Any], advisors: list[str], digits: int) -> list[tuple[str, bool]]:
    """Per advisor: ("mean ± std [min–max] · M agent-steps", whether it is the best mean); "–" if missing."""
    means = [cells[a]["mean"] for a in advisors if a in cells and cells[a]["mean"] is not None]
    top = max(means) if means else None
    out = []
    for a in advisors:
        c = cells.get(a)
        if c is None or c["mean"] is None:
            out.append(("–", False))
            continue
        out.append((f"{_fmt(c['mean'], digits)} ± {_fmt(c['std'], digits)} [{_fmt(c['min'], digits)}–"
                    f"{_fmt(c['max'], digits)}] · {c['mean_agent_steps'] / 1e6:.2f}", c["mean"] == top))
    return out


def tables(summary: dict[str, Any], advisors: list[str]) -> list[Table]:
    """One table per env: mean final best ± std [min–max] per start × advisor, then the average over starts."""
    out = []
    for env, data in summary.items():
        digits = _digits(env)
        t = Table(title=escape(f"{env}: final best over seeds, mean ± std [min–max] · agent-steps per session (M)"))
        t.add_column("start")
        for a in advisors:
            t.add_column(a, justify="right")
        for start, cells in data["starts"].items():
            t.add_row(start, *[f"[bold]{escape(text)}[/]" if top else escape(text)
                               for text, top in _cell_texts(cells, advisors, digits)])
        t.add_row("average", *[_fmt(data["average"].get(a), digits) for a in advisors], style="bold")
        out.append(t)
    return out


def verdict(cells: dict[str, Any], default: str = "rules") -> str:
    """The acceptance reading of one start: the default advisor's mean final best against each baseline's —
    at least as high, or within the seed spread (one std below the mean) of the best baseline — or which
    one beats it."""
    mine = cells.get(default, {}).get("mean")
    others = {a: c for a, c in cells.items() if a != default and c.get("mean") is not None}
    if mine is None or not others:
        return "–"
    top_name, top = max(others.items(), key=lambda kv: kv[1]["mean"])
    if mine >= top["mean"]:
        return "best"
    if top["mean"] - (top["std"] or 0.0) <= mine:
        return f"within {top_name}'s spread"
    return f"below {top_name}"


def markdown_tables(summary: dict[str, Any], advisors: list[str]) -> str:
    """The tables of `tables` as GitHub markdown (bold = best mean), with the acceptance verdict per start."""
    out = []
    for env, data in summary.items():
        digits = _digits(env)
        out.append(f"`{env}`: mean final best over seeds ± std [min–max] · agent-steps per session (M)\n")
        out.append("| start | " + " | ".join(advisors) + " | rules vs the rest |")
        out.append("|---" * (len(advisors) + 2) + "|")
        for start, cells in data["starts"].items():
            row = [f"**{text}**" if top else text for text, top in _cell_texts(cells, advisors, digits)]
            out.append(f"| {start} | " + " | ".join(row) + f" | {verdict(cells)} |")
        out.append("| average | " + " | ".join(_fmt(data["average"].get(a), digits) for a in advisors) + " | |\n")
    return "\n".join(out)


# -- the grid ---------------------------------------------------------------------------------------------
def grid(envs: list[str], starts: list[str] | None, seeds: list[int], advisors: list[str], runs: int,
         root: Path) -> list[dict[str, Any]]:
    """Seed by seed: a grid stopped early still has every (env, start, advisor) cell for the seeds it did."""
    for env in envs:
        for start in (starts or DEFAULT_STARTS):
            if start not in ENVS[env]["starts"]:
                raise SystemExit(f"--starts {start}: not a start of {env}; use one of "
                                 f"{', '.join(ENVS[env]['starts'])}")
    return [{"env": env, "start": start, "seed": seed, "advisor": advisor, "runs": runs, "root": str(root)}
            for seed in seeds for env in envs for start in (starts or DEFAULT_STARTS) for advisor in advisors]


def run_grid(tasks: list[dict[str, Any]], jobs: int, console: Console,
             on_session: Any = None) -> list[dict[str, Any]]:
    """Every task in a process pool; `on_session(done)` after each finished session (partial results)."""
    done: list[dict[str, Any]] = []
    t0 = time.time()
    with cf.ProcessPoolExecutor(max_workers=jobs, initializer=_one_thread) as pool:
        futures = {pool.submit(run_session, t): t for t in tasks}
        for fut in cf.as_completed(futures):
            t = futures[fut]
            try:
                s = fut.result()
            except Exception as exc:  # one broken session must not lose the grid
                console.print(f"[red]session {t['env']}/{t['start']}/s{t['seed']}/{t['advisor']} failed: {exc}[/]")
                continue
            done.append(s)
            console.print(f"[{len(done)}/{len(tasks)} {time.time() - t0:,.0f}s] {s['env']}/{s['start']}/"
                          f"s{s['seed']}/{s['advisor']}: best so far "
                          + " → ".join(_fmt(r["best_so_far"], 3) for r in s["runs"])
                          + f" ({s['wall_s']:.0f}s, exit {s['exit_code']})", highlight=False)
            if on_session is not None:
                on_session(done)
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    ap.add_argument("--starts", nargs="+", default=None,
                    help=f"start names (default: {' '.join(DEFAULT_STARTS)}; also: value)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--advisors", nargs="+", default=list(ADVISORS))
    ap.add_argument("--runs", type=int, default=5, help="runs per session (the run budget)")
    ap.add_argument("--jobs", type=int, default=1, help="sessions in parallel (processes, one torch thread each)")
    ap.add_argument("--out", type=Path, default=None, help="write the sessions and the summary as JSON here")
    ap.add_argument("--keep", type=Path, default=None, help="keep the workspaces under this folder")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 runs, seed 1, the decent and timid starts, every env and advisor")
    ap.add_argument("--markdown", action="store_true", help="also print the tables as markdown")
    ap.add_argument("--from-json", type=Path, default=None, metavar="FILE",
                    help="run nothing: print the tables of a results file written by --out")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        import json

        data = json.loads(args.from_json.read_text())
        summary = summarise(data["sessions"])
        names = [a for a in ADVISORS if any(a in cells for env in summary.values() for cells in env["starts"].values())]
        for table in tables(summary, names):
            Console().print(table)
        if args.markdown:
            print(markdown_tables(summary, names))
        return 0
    if args.quick:
        args.runs, args.seeds, args.starts = 2, [1], args.starts or ["decent", "timid"]
    if args.runs < 1 or args.jobs < 1:
        ap.error(f"--runs {args.runs} / --jobs {args.jobs}: both must be at least 1")
    from autopilot.decide.advisors import get_advisor

    for name in args.advisors:
        get_advisor(name)  # an unknown advisor is an error before any session starts
    console = Console()
    root = args.keep or Path(tempfile.mkdtemp(prefix="autopilot-tuning-"))
    tasks = grid(args.envs, args.starts, args.seeds, args.advisors, args.runs, root)
    console.print(f"{len(tasks)} sessions × {args.runs} runs with --jobs {args.jobs}; workspaces in {root}")
    t0 = time.time()

    def write(sessions: list[dict[str, Any]]) -> None:
        # After every session, so an interrupted grid keeps what it measured.
        if args.out is None:
            return
        from autopilot.atomic import atomic_write_json

        atomic_write_json(args.out, {"argv": sys.argv[1:] if argv is None else argv, "runs": args.runs,
                                     "seeds": args.seeds, "wall_s": round(time.time() - t0, 1),
                                     "complete": len(sessions) == len(tasks), "sessions_planned": len(tasks),
                                     "starts": {e: {k: v[1] for k, v in ENVS[e]["starts"].items()} for e in args.envs},
                                     "summary": summarise(sessions), "sessions": sessions})

    sessions = run_grid(tasks, args.jobs, console, on_session=write)
    for table in tables(summarise(sessions), args.advisors):
        console.print(table)
    if args.markdown:
        print(markdown_tables(summarise(sessions), args.advisors))
    console.print(f"{len(sessions)} sessions in {(time.time() - t0) / 60:.1f} min")
    write(sessions)
    if args.out is not None:
        console.print(f"wrote {args.out}")
    return 0 if len(sessions) == len(tasks) else 1


if __name__ == "__main__":
    sys.exit(main())
