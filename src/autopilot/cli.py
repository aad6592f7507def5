"""The `autopilot` command line: a thin Typer layer over the Python API.

Every command turns a project error (`AutopilotError`) into one line on stderr and a non-zero exit;
anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from autopilot.errors import AutopilotError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Unattended PPO training with a lab notebook.")
console = Console()
err_console = Console(stderr=True)

WorkdirOpt = typer.Option(Path("workspace"), "--workdir", "-w", help="The workspace folder.")
BaseConfigOpt = typer.Option(None, "--config", "-c", help="The session's base config: a JSON or PufferLib .ini "
                             "file, for any registered env; kept in the workspace as configs/base.json.")
SetOpt = typer.Option(None, "--set", help="Override a key: --set train.ent_coef=0.05 (repeatable).")


def _guarded(fn):
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AutopilotError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def _overrides(override_file: Path | None, sets: list[str] | None) -> dict[str, Any]:
    from autopilot.config.load import read_json_file
    from autopilot.config.overrides import flatten, parse_assignment
    from autopilot.errors import ConfigError

    merged: dict[str, Any] = {}
    if override_file is not None:
        data = read_json_file(override_file, "override")
        if not isinstance(data, dict):
            raise ConfigError(f"override {override_file} must be a JSON object of dotted keys, e.g. "
                              f'{{"train.ent_coef": 0.05}}')
        merged.update(flatten(data))
    for item in sets or []:
        key, value = parse_assignment(item)
        merged[key] = value
    return merged


def _advisor_overrides(base_url: str | None, model: str | None, command: str | None,
                       approval_timeout: float | None) -> dict[str, Any]:
    """The advisor options as `autopilot.advisor.*` keys: the same as --set, carried run to run."""
    import shlex

    from autopilot.errors import ConfigError

    out: dict[str, Any] = {}
    if base_url is not None:
        out["autopilot.advisor.llm_base_url"] = base_url
    if model is not None:
        out["autopilot.advisor.llm_model"] = model
    if command is not None:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise ConfigError(f"--advisor-command {command!r} cannot be split into arguments ({exc}); quote it "
                              f"like a shell command line, e.g. --advisor-command 'python agent.py {{digest}}'") from None
        if not argv:
            raise ConfigError("--advisor-command is empty; give a program and its arguments, e.g. "
                              "--advisor-command 'python agent.py {digest}'")
        out["autopilot.advisor.command"] = argv
    if approval_timeout is not None:
        out["autopilot.advisor.approval_timeout_s"] = approval_timeout
    return out


@app.command()
@_guarded
def validate(
    config: Path = typer.Argument(..., help="A JSON or PufferLib .ini config, or a profile name (quick, full)."),
    override: Path | None = typer.Option(None, "--override", help="A JSON file of dotted-key overrides."),
    set_: list[str] | None = SetOpt,
    sps: float | None = typer.Option(None, "--sps", help="Recent SPS, to check the wall-time budget."),
) -> None:
    """Check a config against every invariant; print each check and the derived batch arithmetic."""
    from autopilot.backends import get_backend
    from autopilot.config import check_config, load_config

    cfg = load_config(config, _overrides(override, set_))
    checks = check_config(cfg, sps=sps)
    for check in checks:
        style = {"ok": "green", "fail": "red", "skip": "dim"}[check.status]
        console.print(f"[{style}]{escape(check.line())}[/]", highlight=False)
    failed = [v for c in checks for v in c.violations]
    if failed:
        for v in failed:
            err_console.print(f"[bold red]error:[/] {escape(v)}", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    console.print(f"backend {cfg.backend}: derived batch: {get_backend(cfg.backend).batch_line(cfg)}", highlight=False)


@app.command()
@_guarded
def keys(
    key: str | None = typer.Argument(None, help="One dotted key (e.g. train.ent_coef), or a section (train)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Config whose env keys and sweep ranges to show."),
) -> None:
    """Every config knob with its doc, default, range, scale, prior and whether advisors may tune it."""
    from rich.table import Table

    from autopilot.config import load_config
    from autopilot.config.load import config_space
    from autopilot.config.model import Config
    from autopilot.config.overrides import flatten
    from autopilot.errors import ConfigError
    from autopilot.space import fmt_num

    cfg = load_config(config) if config is not None else Config()
    space, values = config_space(cfg), flatten(cfg.model_dump(exclude={"sweep"}))
    shown = [k for k in space if key is None or k == key or k.startswith(f"{key}.")]
    if not shown:
        import difflib

        close = difflib.get_close_matches(key or "", list(space), n=3)
        raise ConfigError(f"{key!r} is not a declared knob; " + (f"did you mean {', '.join(close)}?" if close
                                                                  else "run `autopilot keys` for the list"))
    table = Table(title="knobs (declared once in autopilot.config.model / the env's params)", show_lines=False)
    for col in ("key", "value", "range (scale)", "prior: standard [typical]", "tunable", "doc"):
        table.add_column(col, overflow="fold")
    for k in shown:
        s = space[k]
        prior = f"{fmt_num(s.prior.center)} [{fmt_num(s.prior.low)}, {fmt_num(s.prior.high)}]" if s.prior else ""
        table.add_row(k, fmt_num(values.get(k)), s.describe(), prior, "yes" if s.tunable else "no", s.doc)
    console.print(table)


@app.command()
@_guarded
def train(
    config: Path = typer.Option(..., "--config", "-c", help="Config file or profile name."),
    run_dir: Path = typer.Option(..., "--run-dir", help="Folder for train.log, metrics.jsonl, summary."),
    resume: str | None = typer.Option(None, "--resume", help="Checkpoint to continue from (true resume)."),
    set_: list[str] | None = SetOpt,
    dashboard: bool | None = typer.Option(None, "--dashboard/--no-dashboard", help="Default: when a terminal."),
) -> None:
    """Train one run with the built-in PPO trainer."""
    from autopilot.config import ensure_valid, load_config
    from autopilot.trainer.train import train as train_run

    cfg = ensure_valid(load_config(config, _overrides(None, set_)))
    summary = train_run(cfg, run_dir, resume=resume, dashboard=dashboard)
    console.print(f"run {summary.run_id}: {summary.status}; summary in {run_dir / 'trainer_summary.json'}")
    if summary.status not in ("completed", "interrupted"):
        raise typer.Exit(2)


@app.command()
@_guarded
def init(workdir: Path = WorkdirOpt, config: Path | None = BaseConfigOpt) -> None:
    """Create a workspace: configs/, proposals/, runs/, models/, journal/ (and configs/base.json with --config)."""
    from autopilot.config import load_config
    from autopilot.workspace.layout import init_workspace

    ws = init_workspace(workdir, base=load_config(config).model_dump() if config is not None else None)
    console.print(f"workspace ready at {ws.root}" + (f"; base config {ws.rel(ws.profile_path('config'))}"
                                                     if config is not None else ""), highlight=False)


@app.command()
@_guarded
def run(
    runs: int = typer.Option(3, "--runs", "-n", min=1, help="Training runs to do in this session."),
    config: Path | None = BaseConfigOpt,
    mode: str | None = typer.Option(None, "--mode", help="Base profile: quick or full (built in), or config (the "
                                    "workspace's configs/base.json). Default: config when the workspace has one, "
                                    "else quick."),
    advisor: str = typer.Option("rules", "--advisor", help="Who proposes the next config: rules (default), "
                                "constant, random, optuna, llm, command, manual, or an installed plugin's name."),
    workdir: Path = WorkdirOpt,
    until: str | None = typer.Option(None, "--until", help="Stop early, e.g. 'success_rate>=0.9'."),
    budget_minutes: float | None = typer.Option(None, "--budget-minutes", help="Wall budget for the session."),
    set_: list[str] | None = SetOpt,
    llm_base_url: str | None = typer.Option(None, "--llm-base-url", help="--advisor llm: the OpenAI-compatible "
                                            "endpoint (default $OPENAI_BASE_URL)."),
    llm_model: str | None = typer.Option(None, "--llm-model", help="--advisor llm: the model (default "
                                         "$AUTOPILOT_LLM_MODEL)."),
    advisor_command: str | None = typer.Option(None, "--advisor-command", help="--advisor command: the command "
                                               "line (split into argv, no shell; {digest} = the digest's file)."),
    approval_timeout: float | None = typer.Option(None, "--approval-timeout", help="--advisor manual: seconds "
                                                  "to wait for a person."),
    parallel: int = typer.Option(1, "--parallel", "-k", help="Candidates trained at once per generation, as Ray tasks."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="An existing Ray cluster (default: local Ray)."),
) -> None:
    """Run the loop: train, diagnose, propose, guard, record; N times (K at once with --parallel K)."""
    from autopilot.loop.runner import run_loop

    overrides = _overrides(None, set_)
    overrides.update(_advisor_overrides(llm_base_url, llm_model, advisor_command, approval_timeout))
    code = run_loop(workdir, runs=runs, mode=mode, config=config, advisor=advisor, until=until,
                    budget_minutes=budget_minutes, base_overrides=overrides, console=console,
                    parallel=parallel, ray_address=ray_address)
    raise typer.Exit(code)


@app.command()
@_guarded
def diagnose(
    run_dir: Path = typer.Argument(..., help="A run folder (runs/<run_id>)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable findings."),
) -> None:
    """Diagnose one run's health (with trends from the ledger around it)."""
    from autopilot.loop.commands import diagnose_command

    diagnose_command(run_dir, as_json=as_json, console=console)


@app.command()
@_guarded
def propose(workdir: Path = WorkdirOpt, advisor: str = typer.Option("rules", "--advisor")) -> None:
    """Diagnose the latest run of a ledger and stage the next proposal and its notes."""
    from autopilot.loop.commands import propose_command

    propose_command(workdir, advisor=advisor, console=console)


@app.command()
@_guarded
def apply(proposal: Path = typer.Argument(..., help="A JSON proposal of dotted keys."), workdir: Path = WorkdirOpt) -> None:
    """Validate a hand-written proposal and stage it as proposals/next_config.json."""
    from autopilot.loop.commands import apply_command

    apply_command(proposal, workdir, console=console)


@app.command()
@_guarded
def approve(
    workdir: Path = WorkdirOpt,
    veto: bool = typer.Option(False, "--veto", help="Refuse the staged proposal; the session stops after this run."),
    note: str | None = typer.Option(None, "--note", help="Why, for the run's notes."),
) -> None:
    """Approve (or --veto) the proposal a `--advisor manual` session is waiting on."""
    from autopilot.workspace.approval import approve_command

    approve_command(workdir, veto=veto, note=note, console=console)


@app.command()
@_guarded
def status(workdir: Path = WorkdirOpt) -> None:
    """A table of runs: id, status, changed knobs, objective, best marker."""
    from autopilot.loop.commands import status_command

    status_command(workdir, console=console)


@app.command()
@_guarded
def report(workdir: Path = WorkdirOpt,
           out: Path | None = typer.Option(None, "--out", help="Output folder (default WORKDIR/report).")) -> None:
    """An HTML report with plots: learning curves, score per run with the knobs changed, knob vs score."""
    from autopilot.workspace.report import build_report

    page = build_report(workdir, out)
    console.print(str(page), highlight=False, soft_wrap=True)


@app.command()
@_guarded
def probe(
    config: str | None = typer.Option(None, "--config", "-c", help="Config file or profile name (default: the "
                                      "workspace's current base config)."),
    workdir: Path = WorkdirOpt,
    mode: str = typer.Option("quick", "--mode", help="Profile whose current base is probed when --config is absent."),
    seconds: float = typer.Option(30.0, "--seconds", help="Wall budget per topology."),
    cores: int | None = typer.Option(None, "--cores", help="Cores to plan for (default: this machine's)."),
) -> None:
    """Sweep vec.num_workers / vec.num_envs / agents per env object for the highest stable SPS; propose the winner."""
    from autopilot.probe import probe_command

    if probe_command(config, workdir, mode=mode, seconds=seconds, cores=cores, console=console) is None:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
