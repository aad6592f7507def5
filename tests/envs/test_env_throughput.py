"""The throughput benchmark runs and reports both figures and their ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "env_throughput.py"


def test_benchmark_reports_drone_and_cartpole_throughput_and_ratio():
    # A subprocess: the benchmark pins its own process to one core, which must not leak into pytest.
    out = subprocess.run(
        [sys.executable, str(BENCH), "--num-envs", "64", "--num-drones", "8", "--cartpole-envs", "64",
         "--seconds", "0.3", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    result = json.loads(out.stdout)
    drone = result["drone_delivery"]["agent_steps_per_s"]
    cart = result["cartpole_sync_vector_env"]["agent_steps_per_s"]
    assert result["drone_delivery"]["agents"] == 512 and result["cartpole_sync_vector_env"]["envs"] == 64
    assert drone > 0 and cart > 0
    assert result["ratio"] == round(drone / cart, 1)
    assert drone > cart  # one numpy object beats a Python loop over envs even at 512 agents


def test_benchmark_measures_the_torch_implementation_on_the_cpu_with_both_respawn_samplers():
    out = subprocess.run(
        [sys.executable, str(BENCH), "--num-envs", "16", "--num-drones", "4", "--cartpole-envs", "8",
         "--seconds", "0.1", "--torch", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    torch_cpu = json.loads(out.stdout)["drone_delivery_torch_cpu"]
    assert set(torch_cpu) == {"host", "device"} and all(v > 0 for v in torch_cpu.values())


def test_benchmark_require_flag_fails_below_the_bar():
    out = subprocess.run(
        [sys.executable, str(BENCH), "--num-envs", "8", "--num-drones", "2", "--cartpole-envs", "4",
         "--seconds", "0.1", "--require", "1e12"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1 and "FAIL" in out.stderr
