"""The dashboard's render function and the plain progress line, without a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from autopilot.trainer.dashboard import PlainReporter, View, fmt_count, fmt_duration, plain_line, render


def _view(**kw) -> View:
    v = View(run_id="2025-09-20T153515Z", env_name="drone_delivery", device="cpu", started=1000.0,
             sps=124_600.0, agent_steps=11_038_720, target_steps=20_000_000, epoch=349,
             utilisation={"cpu_pct": 87.5, "dram_pct": 33.0, "gpu_pct": None, "vram_pct": None},
             losses={"policy_loss": -0.0123, "value_loss": 0.0061, "entropy": 2.5, "approx_kl": 0.004,
                     "old_approx_kl": 0.005, "clipfrac": 0.08, "explained_var": 0.85},
             env_stats={"success_rate": 0.62, "collision_rate": 0.00073, "mean_reward": 7.43, "episodes": 1234})
    for k, val in kw.items():
        setattr(v, k, val)
    return v


def _text(renderable, width=120) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_render_shows_throughput_time_utilisation_losses_and_env_stats():
    out = _text(render(_view(), now=1000.0 + 3725))
    for needle in ("2025-09-20T153515Z", "drone_delivery", "SPS", "124.60k", "Steps", "11.04M", "20.00M",
                   "Epoch", "349", "Uptime", "1h 02m 05s", "ETA", "CPU", "88%", "DRAM", "33%",
                   "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_var", "0.85",
                   "success_rate", "0.62", "collision_rate", "0.00073", "mean_reward", "7.43", "1234"):
        assert needle in out, needle
    # ETA = (20M - 11.04M) / 124.6k SPS = 71.9 s.
    assert "1m 12s" in out


def test_render_says_na_for_unmeasurable_gpu_never_zero():
    out = _text(render(_view()))
    gpu_line = next(line for line in out.splitlines() if "GPU" in line)
    assert "GPU n/a" in gpu_line and "VRAM n/a" in gpu_line
    out = _text(render(_view(utilisation={"cpu_pct": 50.0, "dram_pct": 10.0, "gpu_pct": 0.0, "vram_pct": 12.5})))
    assert "GPU 0%" in out and "VRAM 12%" in out


def test_render_before_the_first_epoch_has_placeholders():
    out = _text(render(View(run_id="r", env_name="gym:CartPole-v1")))
    assert "SPS 0" in out and "ETA —" in out and "episodes" in out


def test_render_shows_a_message():
    assert "evaluating" in _text(render(_view(message="evaluating")))


def test_plain_line_and_its_throttle():
    line = plain_line(_view(), now=1010.0)
    assert line.startswith("epoch 349 steps 11,038,720/20,000,000 sps 124.60k uptime 0m 10s")
    assert "success_rate=0.62" in line and "cpu 88%" in line
    lines: list[str] = []
    rep = PlainReporter(_view(), lines.append, every_s=3600)
    rep.update()
    rep.update()
    rep.update(force=True)
    assert len(lines) == 2


def test_formatters():
    assert fmt_count(999) == "999" and fmt_count(1500) == "1.50k" and fmt_count(2.5e9) == "2.50B"
    assert fmt_duration(59.4) == "0m 59s" and fmt_duration(None) == "—"
