"""`autopilot report`: one self-contained HTML page over the ledger, with matplotlib PNGs beside it.

Plots: learning curves (objective, mean_reward, and the trainer stats diagnosis reads), the score of
every run in ledger order labelled with what it changed, and knob value vs score. Then a table of runs
with links to their notes. Reading goes through the ledger API (tolerant: a damaged run folder is a
warning on the page, never a traceback); every file is written atomically, the page last.

Figures are built with the object API (`matplotlib.figure.Figure` + the Agg canvas), so the report
never touches pyplot's global state or backend and nothing is left open after a figure is saved.
"""

from __future__ import annotations

import html
import io
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from autopilot.atomic import atomic_write_bytes, atomic_write_text
from autopilot.config import config_space, flatten
from autopilot.config.model import trainer_space
from autopilot.decide.records import NoiseBand, RunRecord
from autopilot.decide.sanity import record_score, suspect_reasons
from autopilot.decide.trends import noise_band
from autopilot.errors import AutopilotError, WorkspaceError
from autopilot.space import SearchSpace, fmt_num
from autopilot.workspace.layout import iso_now, open_workspace
from autopilot.workspace.ledger import changed_knobs, read_ledger

PLOT_FILES = ("curves.png", "trainer_stats.png", "scores.png", "knobs.png")
TRAINER_STATS = ("approx_kl", "clipfrac", "entropy")
LABEL_CHARS = 60
DPI = 100


@dataclass
class RunView:
    """One run as the report shows it."""

    index: int  # 1-based position in the ledger
    rec: RunRecord
    changes: str  # the status table's "changed vs previous"
    status: str  # the run's status, or its phase while the loop is still working on it
    score: float | None
    suspect: list[str]  # reasons; empty = trusted
    color: Any = None

    @property
    def short(self) -> str:
        """Plot label: `#3 lr: 0.0003 -> 0.001` (dotted section prefixes dropped, length capped)."""
        text = re.sub(r"(^|; )(?:[A-Za-z_][\w-]*\.)+", r"\1", self.changes)
        text = f"#{self.index} {text}"
        return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


@dataclass
class ReportData:
    views: list[RunView]
    objective: str
    best: RunView | None
    band: NoiseBand | None
    space: SearchSpace
    warnings: list[str] = field(default_factory=list)


# -- reading --------------------------------------------------------------------------------------
def _read_ledger(workdir: Path) -> tuple[Path, ReportData]:
    ws = open_workspace(workdir, create_missing_dirs=False)
    warnings: list[str] = []
    ledger = read_ledger(ws, warnings.append, with_curve=True)
    history, objective = ledger.runs, ledger.objective
    views, prev = [], None
    for i, rec in enumerate(history, 1):
        views.append(RunView(i, rec, changed_knobs(prev, rec), ledger.shown_status(rec), record_score(rec, objective),
                             suspect_reasons(rec)))
        prev = rec
    _assign_colors(views)
    best = next((v for v in views if ledger.best is not None and v.rec.run_id == ledger.best.run_id), None)
    band = noise_band(history, objective, reference=best.score if best else None) if history else None
    latest_cfg = next((r.config for r in reversed(history) if r.config is not None), None)
    space: SearchSpace = trainer_space()
    if latest_cfg is not None:
        try:
            space = config_space(latest_cfg)
        except AutopilotError as exc:
            warnings.append(f"search space unavailable ({exc}); knob scales default to the trainer's")
    return ws.root, ReportData(views, objective, best, band, space, warnings)


def _assign_colors(views: list[RunView]) -> None:
    from matplotlib import colormaps

    n = len(views)
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    for i, v in enumerate(views):
        v.color = cmap(i) if n <= 20 else cmap(i / max(1, n - 1))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _series(curve: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(agent_steps, value) for every row where both are finite numbers (epoch or row index if no steps)."""
    xs, ys = [], []
    for n, row in enumerate(curve):
        y = _number(row.get(key))
        x = _number(row.get("agent_steps"))
        x = x if x is not None else _number(row.get("epoch"))
        if y is not None:
            xs.append(x if x is not None else float(n))
            ys.append(y)
    return xs, ys


# -- figures --------------------------------------------------------------------------------------
def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    fig.clear()
    return buf.getvalue()


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _curve_panels(views: list[RunView], keys: list[tuple[str, str]], width: float) -> Any:
    """One panel per (key, title), one line per run; suspect runs dashed, and the y-range comes from the
    trusted runs (a glitched 9.38 "rate" must not flatten every other curve); one legend below the panels."""
    from matplotlib.ticker import EngFormatter

    with_curves = [v for v in views if v.rec.curve]
    fig = _figure(width, 3.4 + 0.2 * math.ceil(len(with_curves) / 2))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    handles: dict[str, Any] = {}
    for ax, (key, title) in zip(axes, keys, strict=True):
        trusted_ys: list[float] = []
        suspect_ys: list[float] = []
        for v in with_curves:
            xs, ys = _series(v.rec.curve, key)
            if not ys:
                continue
            label = v.short + (" (suspect)" if v.suspect else "")
            (line,) = ax.plot(xs, ys, color=v.color, lw=1.4, ls="--" if v.suspect else "-", label=label)
            handles.setdefault(label, line)
            (suspect_ys if v.suspect else trusted_ys).extend(ys)
        lo, hi = (min(trusted_ys), max(trusted_ys)) if trusted_ys else (0.0, 0.0)
        if not ax.lines:
            ax.text(0.5, 0.5, f"no {key} data", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif trusted_ys and suspect_ys and (min(suspect_ys) < lo or max(suspect_ys) > hi):
            pad = (hi - lo) * 0.08 or 0.05
            ax.set_ylim(lo - pad, hi + pad)
            title += " (y-range: trusted runs)"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("agent steps", fontsize=9)
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.set_ylabel(key, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=2, fontsize=8,
                   frameon=False)
    return fig


def plot_curves(ledger: ReportData) -> bytes:
    obj = ledger.objective
    keys = [(obj, f"{obj} (objective)")] + ([("mean_reward", "mean_reward")] if obj != "mean_reward" else [])
    return _png(_curve_panels(ledger.views, keys, 12.0))


def plot_trainer_stats(ledger: ReportData) -> bytes:
    return _png(_curve_panels(ledger.views, [(k, k) for k in TRAINER_STATS], 13.0))


def plot_scores(ledger: ReportData) -> bytes:
    """Horizontal bars in ledger order (top = first run); suspect grey and hatched; best starred."""
    from matplotlib.patches import Patch

    views, best = ledger.views, ledger.best
    best_score = best.score if best is not None else None
    band = ledger.band.value if ledger.band is not None and best_score is not None else None
    trusted = [v.score for v in views if v.score is not None and not v.suspect]
    edges = trusted + ([best_score + band] if band is not None and best_score is not None else [])
    lo, hi = min([0.0, *trusted]), max([0.0, *edges]) if edges else 1.0  # the axis is set by trusted scores
    span = (hi - lo) or 1.0
    x_max = hi + 0.45 * span  # room for the value labels
    fig = _figure(11.0, 1.6 + 0.42 * len(views))
    ax = fig.subplots()
    for y, v in enumerate(views):
        if v.score is None:
            why = v.status + (", suspect" if v.suspect else "")
            ax.text(lo, y, f"  no score ({why})", va="center", fontsize=8, color="firebrick")
            continue
        shown = min(max(v.score, lo), hi + 0.05 * span) if v.suspect else v.score  # off-scale glitches clipped
        is_best = best is not None and v is best
        ax.barh(y, shown, color="lightgrey" if v.suspect else v.color, hatch="//" if v.suspect else None,
                edgecolor="black" if is_best else ("grey" if v.suspect else "none"), linewidth=1.5 if is_best else 0.8)
        if v.suspect:
            text = f"suspect: {fmt_num(round(v.score, 4))}" + (" (off scale)" if shown != v.score else "")
        else:
            text = f"{v.score:.4g}" + ("  ★ best" if is_best else "")
        ax.text(max(shown, lo) + 0.01 * span, y, text, va="center", fontsize=8,
                color="dimgrey" if v.suspect else "black", fontweight="bold" if is_best else "normal")
    if band is not None and best_score is not None:
        ax.axvspan(best_score - band, best_score + band, color="gold", alpha=0.25, zorder=0)
        ax.axvline(best_score, color="goldenrod", lw=1, ls=":", zorder=0)
    ax.set_yticks(range(len(views)), [v.short for v in views], fontsize=8)
    ax.set_ylim(len(views) - 0.5, -0.5)
    ax.set_xlim(lo - 0.02 * span, x_max)
    ax.set_xlabel(f"score ({ledger.objective}, tail window)", fontsize=9)
    ax.set_title("Score per run, labelled with the knobs changed vs the previous run", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    legend = [Patch(facecolor="lightgrey", hatch="//", edgecolor="grey", label="suspect (never best; clipped)")]
    legend += [Patch(facecolor="white", edgecolor="black", label="★ best")] if best is not None else []
    if band is not None and ledger.band is not None:
        kind = "measured" if ledger.band.measured else "assumed"
        legend.append(Patch(facecolor="gold", alpha=0.25, label=f"noise band ±{ledger.band.value:.3g} ({kind})"))
    fig.legend(handles=legend, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return _png(fig)


def varied_knobs(ledger: ReportData) -> list[tuple[str, list[tuple[RunView, Any]]]]:
    """Tunable knobs whose value differs among trusted, scored runs: [(key, [(run, value)])]."""
    points = [(v, flatten(v.rec.config.model_dump())) for v in ledger.views
              if v.rec.config is not None and v.score is not None and not v.suspect]
    out = []
    for key, spec in ledger.space.items():
        if not spec.tunable:
            continue
        pairs = [(v, flat[key]) for v, flat in points if key in flat]
        if len({repr(value) for _, value in pairs}) > 1:
            out.append((key, pairs))
    return out


def plot_knobs(ledger: ReportData, knobs: list[tuple[str, list[tuple[RunView, Any]]]]) -> bytes:
    cols = min(3, len(knobs))
    rows = math.ceil(len(knobs) / cols)
    fig = _figure(4.3 * cols, 3.3 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (key, pairs) in zip(axes, knobs, strict=False):  # spare axes hidden below
        numeric = all(_number(value) is not None for _, value in pairs)
        if numeric:
            xs = [float(value) for _, value in pairs]
        else:
            categories = sorted({str(value) for _, value in pairs})
            xs = [float(categories.index(str(value))) for _, value in pairs]
            ax.set_xticks(range(len(categories)), categories)
        ys = [v.score for v, _ in pairs]
        ax.scatter(xs, ys, c=[v.color for v, _ in pairs], s=36, zorder=3, edgecolors="black", linewidths=0.4)
        for (v, _), x, y in zip(pairs, xs, ys, strict=True):
            ax.annotate(f"#{v.index}", (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
        best_xy = [(x, y) for (v, _), x, y in zip(pairs, xs, ys, strict=True) if v is ledger.best]
        if best_xy:
            ax.scatter([best_xy[0][0]], [best_xy[0][1]], marker="*", s=260, facecolors="none", edgecolors="goldenrod",
                       linewidths=1.6, zorder=4)
        if numeric and ledger.space[key].multiplicative and min(xs) > 0:
            ax.set_xscale("log")
        ax.margins(0.12)  # points (and the best star) at the edge stay inside the frame
        ax.set_title(f"{key} ({ledger.space[key].scale})", fontsize=9)
        ax.set_xlabel(key, fontsize=8)
        ax.set_ylabel(ledger.objective, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Knob value vs {ledger.objective} (trusted runs; ☆ = best, #n = run)", fontsize=10)
    for ax in axes[len(knobs):]:
        ax.set_visible(False)
    return _png(fig)


# -- the page -------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1300px;
 padding:0 1rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#555;font-size:.92rem}.meta b{color:#222}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.88rem}
table{border-collapse:collapse;font-size:.85rem;width:100%}th,td{border:1px solid #ddd;padding:.3rem .45rem;
 vertical-align:top;text-align:left}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.suspect td{background:#f1f1f1;color:#666}tr.best td{background:#fff8dc}
.tag{display:inline-block;padding:0 .35rem;border-radius:3px;font-size:.78rem;margin-right:.2rem}
.suspect-tag{background:#777;color:#fff}.best-tag{background:#daa520;color:#fff}
.status-completed{color:#1a7f37}.status-crashed,.status-failed,.status-diverged{color:#c62828}
.status-stalled,.status-interrupted{color:#b26a00}.warn{color:#8a5a00;font-size:.85rem}.empty{font-size:1.1rem}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    return line.strip().lstrip("# ")[:240]
    except OSError:
        pass
    return ""


def _notes_cell(v: RunView, out_dir: Path) -> str:
    notes = v.rec.run_dir / "notes.md"
    if not notes.is_file():
        return '<span class="meta">no notes.md</span>'
    href = quote(os.path.relpath(notes, out_dir))
    return f'<a href="{_e(href)}">notes.md</a><br>{_e(_first_line(notes))}'


def _row(v: RunView, ledger: ReportData, out_dir: Path) -> str:
    s = v.rec.loop_summary
    is_best = ledger.best is not None and v is ledger.best
    tags = ('<span class="tag suspect-tag">suspect</span>' if v.suspect else "") + (
        '<span class="tag best-tag">★ best</span>' if is_best else "")
    score = "–" if v.score is None else f"{v.score:.4g}"
    findings = ", ".join(s.findings) if s is not None else ""
    cls = "suspect" if v.suspect else ("best" if is_best else "")
    cells = [f'<td class="num">{v.index}</td>', f"<td>{_e(v.rec.run_id)} {tags}</td>",
             f'<td class="status-{_e(v.status)}">{_e(v.status)}</td>', f'<td class="num">{score}</td>',
             f"<td>{_e(v.changes)}</td>", f"<td>{_e(findings)}</td>", f"<td>{_e('; '.join(v.suspect))}</td>",
             f"<td>{_notes_cell(v, out_dir)}</td>"]
    return f'<tr class="{cls}">' + "".join(cells) + "</tr>"


def render_html(root: Path, ledger: ReportData, figures: list[tuple[str, str, str]], out_dir: Path) -> str:
    """The page; `figures` = [(file, heading, caption)] for the PNGs written beside it."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>autopilot report — {_e(root.name)}</title><style>{CSS}</style></head><body>",
             "<h1>autopilot report</h1>",
             f'<p class="meta">workspace <b>{_e(root)}</b> · objective <b>{_e(ledger.objective)}</b> · '
             f"<b>{len(ledger.views)}</b> run(s) · generated {_e(iso_now())}</p>"]
    if not ledger.views:
        parts.append(f'<p class="empty">No runs yet in {_e(root / "runs")}. Start some with '
                     f"<code>autopilot run --workdir {_e(root)}</code>.</p>")
    else:
        best = ledger.best
        parts.append('<p class="meta">best: ' + (f"<b>#{best.index} {_e(best.rec.run_id)}</b> "
                     f"({_e(ledger.objective)} {best.score:.4g})" if best and best.score is not None else "none yet")
                     + (f" · noise band {_e(ledger.band.text())}" if ledger.band else "") + "</p>")
    if ledger.warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in ledger.warnings)
        parts.append(f'<details class="warn"><summary>{len(ledger.warnings)} warning(s) while reading the '
                     f"ledger</summary><ul>{items}</ul></details>")
    for file, heading, caption in figures:
        parts.append(f'<h2>{_e(heading)}</h2><figure><img src="{_e(file)}" alt="{_e(heading)}">'
                     f"<figcaption>{_e(caption)}</figcaption></figure>")
    if ledger.views:
        head = "".join(f"<th>{h}</th>" for h in ("#", "run", "status", _e(ledger.objective), "changed vs previous",
                                                  "findings", "suspect reasons", "notes"))
        rows = "".join(_row(v, ledger, out_dir) for v in ledger.views)
        parts.append(f"<h2>Runs</h2><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- entry point ----------------------------------------------------------------------------------
def _figure_specs(ledger: ReportData) -> list[tuple[str, str, str, Callable[[], bytes]]]:
    views, obj = ledger.views, ledger.objective
    if not views:
        return []
    specs = []
    no_curve = [f"#{v.index}" for v in views if not v.rec.curve]
    missing = f" No metrics.jsonl for {', '.join(no_curve)}." if no_curve else ""
    if len(no_curve) < len(views):
        specs.append(("curves.png", "Learning curves",
                      f"{obj} and mean_reward vs agent steps, one line per run (legend: # and knobs changed vs the "
                      f"previous run); suspect runs dashed.{missing}", lambda: plot_curves(ledger)))
        specs.append(("trainer_stats.png", "Trainer stats",
                      "approx_kl, clipfrac and entropy per epoch: the numbers diagnosis reads.",
                      lambda: plot_trainer_stats(ledger)))
    specs.append(("scores.png", "Score per run",
                  f"{obj} per run in ledger order; suspect runs grey and hatched (an off-scale value is clipped and "
                  "labelled), the best run outlined with ★, the noise band shaded around it.",
                  lambda: plot_scores(ledger)))
    knobs = varied_knobs(ledger)
    if knobs:
        specs.append(("knobs.png", "Knob vs score",
                      "Each tunable knob that varied, value vs score (trusted runs only; log x for log-scale knobs); "
                      "☆ = best.", lambda: plot_knobs(ledger, knobs)))
    return specs


def build_report(workdir: Path, out_dir: Path | None = None) -> Path:
    """Write index.html and its PNGs into `out_dir` (default WORKDIR/report); returns the page's path."""
    root, ledger = _read_ledger(Path(workdir))
    out = Path(out_dir).absolute() if out_dir is not None else root / "report"
    had_report = (out / "index.html").exists()
    figures: list[tuple[str, str, str]] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for file, heading, caption, render in _figure_specs(ledger):
            try:
                data = render()
            except Exception as exc:  # a plot that cannot be drawn costs that plot, never the page
                ledger.warnings.append(f"{heading} could not be drawn ({type(exc).__name__}: {str(exc)[:120]})")
                continue
            atomic_write_bytes(out / file, data)
            figures.append((file, heading, caption))
        if had_report:  # a previous report's plot that has no data now must not linger beside the page
            for stale in set(PLOT_FILES) - {f for f, _, _ in figures}:
                (out / stale).unlink(missing_ok=True)
        return atomic_write_text(out / "index.html", render_html(root, ledger, figures, out))
    except OSError as exc:
        raise WorkspaceError(f"cannot write the report to {out}: {exc.strerror or exc}; "
                             f"choose a writable --out folder") from None
