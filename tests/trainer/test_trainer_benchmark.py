"""The trainer benchmark runs end to end at a tiny size and reports every figure it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "trainer_throughput.py"


@pytest.mark.slow  # a fresh interpreter importing torch and SB3, three trainers: ~15-45 s
def test_benchmark_reports_update_phase_and_whole_epochs_for_ours_legacy_and_sb3():
    out = subprocess.run(
        [sys.executable, str(BENCH), "--arenas", "16", "--drones", "4", "--env-objects", "2", "--batch", "1024",
         "--minibatch", "256", "--update-epochs", "2", "--repeats", "2", "--warmup", "1", "--epochs", "2",
         "--rounds", "1", "--threads", "1", "2", "--json"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["threads"] for r in results] == [1, 2]  # each thread count measured, every trainer at it
    result = results[0]
    assert set(result["update_s_cpu"]) == {"ours", "legacy", "sb3"}
    assert all(v > 0 for v in result["update_s_cpu"].values())
    assert result["update_ratio_sb3_cpu"] == result["update_s_cpu"]["sb3"] / result["update_s_cpu"]["ours"]
    assert set(result["epoch_sps"]) == {"ours (cpu)", "legacy (cpu)", "SB3 (native)"}
    assert result["ratio_native"] == result["epoch_sps"]["ours (cpu)"] / result["epoch_sps"]["SB3 (native)"]
    assert "update phase on cpu" in out.stdout and "whole epochs" in out.stdout
    # Each ratio comes with its noise band: the ratio in every interleaved round.
    assert len(result["update_ratio_sb3_cpu_rounds"]) == 2 and len(result["ratio_native_rounds"]) == 1
    assert all(r > 0 for r in result["update_ratio_sb3_cpu_rounds"] + result["ratio_native_rounds"])
    assert "over 2 rounds" in out.stdout and "over 1 round)" in out.stdout
    # One thread: everything on one core, as SB3 has it; two: our env in one worker per env object, stepping
    # half the agents while the policy (one thread meanwhile) works on the other half.
    assert [r["ours_workers"] for r in results] == [1, 2]
    assert "--- 1 torch thread(s) for every trainer; ours steps its env in-process ---" in out.stdout
    assert ("--- 2 torch thread(s) for every trainer; ours steps its env in 2 worker processes, half the agents "
            "while the policy works on the other half, with 1 torch thread(s) meanwhile ---") in out.stdout
    assert results[1]["epoch_sps"]["ours (cpu)"] > 0
