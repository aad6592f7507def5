"""The live terminal dashboard (PufferLib manner) and its plain-text fallback.

`render(view)` is a pure function from a `View` to a rich renderable: tested without a terminal.
`LiveDashboard` re-renders it a few times a second (uptime/ETA tick between epochs); `PlainReporter`
prints one `plain_line(view)` every few seconds when stdout is not a terminal.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

LOSS_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl", "clipfrac", "explained_var")


@dataclass
class View:
    """Everything the dashboard shows; the trainer updates it once per epoch."""

    run_id: str = ""
    env_name: str = ""
    device: str = "cpu"
    started: float = field(default_factory=time.time)
    sps: float = 0.0
    agent_steps: int = 0
    start_steps: int = 0
    target_steps: int = 0
    epoch: int = 0
    utilisation: dict[str, float | None] = field(default_factory=dict)
    losses: dict[str, float | None] = field(default_factory=dict)
    env_stats: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def uptime(self, now: float | None = None) -> float:
        return max(0.0, (now if now is not None else time.time()) - self.started)

    def eta(self) -> float | None:
        left = self.target_steps - self.agent_steps
        if self.sps <= 0 or left < 0:
            return None
        return left / self.sps


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def fmt_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def fmt_value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3g}" if abs(v) < 1e4 else fmt_count(v)
    return str(v)


def fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}%"


def _kv_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, show_header=False, title_justify="left", expand=True,
                  title_style="bold cyan", pad_edge=False)
    table.add_column("key", style="dim")
    table.add_column("value", justify="right")
    for k, v in rows:
        table.add_row(k, v)
    return table


def render(view: View, now: float | None = None) -> Group:
    head = Text.assemble(("autopilot ", "bold magenta"), (view.run_id, "bold"), "  ", (view.env_name, "cyan"),
                         "  ", (view.device, "green"))
    u = view.utilisation
    summary = Table.grid(expand=True, padding=(0, 2))
    for _ in range(4):
        summary.add_column()
    target = f" / {fmt_count(view.target_steps)}" if view.target_steps else ""
    summary.add_row(f"[bold]SPS[/] {fmt_count(view.sps)}", f"[bold]Steps[/] {fmt_count(view.agent_steps)}{target}",
                    f"[bold]Epoch[/] {view.epoch}",
                    f"[bold]Uptime[/] {fmt_duration(view.uptime(now))}  [bold]ETA[/] {fmt_duration(view.eta())}")
    summary.add_row(f"[bold]CPU[/] {fmt_pct(u.get('cpu_pct'))}", f"[bold]GPU[/] {fmt_pct(u.get('gpu_pct'))}",
                    f"[bold]DRAM[/] {fmt_pct(u.get('dram_pct'))}", f"[bold]VRAM[/] {fmt_pct(u.get('vram_pct'))}")
    losses = _kv_table("Losses", [(k, fmt_value(view.losses.get(k))) for k in LOSS_KEYS])
    env = _kv_table("Env", [(k, fmt_value(v)) for k, v in view.env_stats.items()] or [("episodes", "—")])
    panels = Table.grid(expand=True, padding=(0, 3))
    panels.add_column(ratio=1)
    panels.add_column(ratio=1)
    panels.add_row(losses, env)
    parts: list[Any] = [head, summary, panels]
    if view.message:
        parts.append(Text(view.message, style="yellow"))
    return Group(*parts)


def plain_line(view: View, now: float | None = None) -> str:
    stats = " ".join(f"{k}={fmt_value(view.env_stats.get(k))}" for k in view.env_stats)
    u = view.utilisation
    return (f"epoch {view.epoch} steps {view.agent_steps:,}/{view.target_steps:,} sps {fmt_count(view.sps)} "
            f"uptime {fmt_duration(view.uptime(now))} eta {fmt_duration(view.eta())} "
            f"entropy {fmt_value(view.losses.get('entropy'))} approx_kl {fmt_value(view.losses.get('approx_kl'))} "
            f"value_loss {fmt_value(view.losses.get('value_loss'))} {stats} "
            f"cpu {fmt_pct(u.get('cpu_pct'))} dram {fmt_pct(u.get('dram_pct'))}").rstrip()


class LiveDashboard:
    """A rich Live display of `render(view)`, refreshed `refresh_per_second` times a second."""

    def __init__(self, view: View, console: Console | None = None, refresh_per_second: float = 4.0):
        self.view = view
        self.console = console or Console()
        self.live = Live(console=self.console, refresh_per_second=refresh_per_second, transient=False,
                         get_renderable=lambda: render(self.view))

    def __enter__(self) -> LiveDashboard:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def update(self) -> None:
        pass  # the Live thread re-renders from the view

    def log(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False)


class PlainReporter:
    """One plain progress line, `emit(plain_line(view))`, every `every_s` seconds (or when forced);
    other log lines go straight to stdout."""

    def __init__(self, view: View, emit, every_s: float = 5.0):
        self.view, self.emit, self.every_s = view, emit, every_s
        self._last = 0.0

    def __enter__(self) -> PlainReporter:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last >= self.every_s:
            self._last = now
            self.emit(plain_line(self.view, now))

    def log(self, line: str) -> None:
        print(line, flush=True)
