"""Raw env throughput: drone_delivery agent-steps/s with random actions, against Gymnasium's CartPole.

    .venv/bin/python benchmarks/env_throughput.py                 # 4,096 agents (512 arenas × 8 drones)
    .venv/bin/python benchmarks/env_throughput.py --require 2e6   # exit 1 if drone_delivery is slower
    .venv/bin/python benchmarks/env_throughput.py --torch         # + its torch implementation, on the CPU

Everything runs on one core: numpy/torch thread pools are pinned to one thread (the variables are set
before numpy is imported) and, where the OS allows it, the process is bound to a single CPU. The
reference is CartPole-v1 stepped through `gymnasium.vector.SyncVectorEnv` with the same number of
sub-envs as drone_delivery has agents (override with --cartpole-envs), so the ratio compares "one
numpy object for all agents" with "a Python loop over Gymnasium envs" at the same batch size. Actions
are drawn before the timed loop, so neither figure includes sampling them.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _pin_one_core(cpu: int | None) -> str:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # torch is not needed to step the env
        pass
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0)) if cpu is None else cpu
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    return "unpinned (no sched_setaffinity)"


def _time_steps(step, actions: list, seconds: float) -> tuple[int, float]:
    """Step until `seconds` have passed (checking every 16 steps); return (steps, elapsed)."""
    steps, start = 0, time.perf_counter()
    while True:
        for _ in range(16):
            step(actions[steps % len(actions)])
            steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return steps, elapsed


def bench_drone(num_envs: int, num_drones: int, seconds: float, seed: int = 0) -> float:
    from autopilot.envs.drone_delivery import DroneDeliveryEnv, DroneDeliveryParams

    env = DroneDeliveryEnv(DroneDeliveryParams(num_envs=num_envs, num_drones=num_drones), seed)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = [rng.uniform(-1, 1, (env.num_agents, 2)).astype(np.float32) for _ in range(64)]
    _time_steps(env.step, actions, min(0.5, seconds))  # warm-up: caches, episode turnover
    steps, elapsed = _time_steps(env.step, actions, seconds)
    return steps * env.num_agents / elapsed


def bench_drone_torch(num_envs: int, num_drones: int, seconds: float, respawn_rng: str, seed: int = 0) -> float:
    """The device-resident implementation stepped on the CPU: `respawn_rng` "host" draws respawns with the
    numpy env's sampler (the same trajectories as numpy's), "device" draws them with torch (the CUDA mode)."""
    import torch

    from autopilot.envs.drone_delivery import DroneDeliveryParams
    from autopilot.envs.drone_delivery_torch import DroneDeliveryTorchEnv

    env = DroneDeliveryTorchEnv(DroneDeliveryParams(num_envs=num_envs, num_drones=num_drones), seed,
                                device="cpu", respawn_rng=respawn_rng)
    env.reset(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    actions = [torch.rand(env.num_agents, 2, generator=gen) * 2 - 1 for _ in range(64)]
    with torch.inference_mode():
        _time_steps(env.step, actions, min(0.5, seconds))
        steps, elapsed = _time_steps(env.step, actions, seconds)
    return steps * env.num_agents / elapsed


def bench_cartpole(num_envs: int, seconds: float, seed: int = 0) -> float:
    import gymnasium as gym

    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(num_envs)])
    envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = [rng.integers(0, 2, num_envs) for _ in range(64)]
    _time_steps(envs.step, actions, min(0.5, seconds))
    steps, elapsed = _time_steps(envs.step, actions, seconds)
    envs.close()
    return steps * num_envs / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, default=512, help="drone_delivery arenas (default 512)")
    parser.add_argument("--num-drones", type=int, default=8, help="drones per arena (default 8)")
    parser.add_argument("--cartpole-envs", type=int, default=None,
                        help="CartPole copies in the SyncVectorEnv (default: as many as drone agents)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per env (default 3)")
    parser.add_argument("--require", type=float, default=None,
                        help="exit 1 if drone_delivery agent-steps/s is below this")
    parser.add_argument("--cpu", type=int, default=None,
                        help="the CPU to pin to (default: the lowest this process may use)")
    parser.add_argument("--torch", action="store_true",
                        help="also step drone_delivery's torch implementation on the CPU (both respawn samplers)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)

    pinned = _pin_one_core(args.cpu)
    agents = args.num_envs * args.num_drones
    cart_envs = args.cartpole_envs or agents
    drone_sps = bench_drone(args.num_envs, args.num_drones, args.seconds)
    cart_sps = bench_cartpole(cart_envs, args.seconds)
    result = {
        "drone_delivery": {"agents": agents, "num_envs": args.num_envs, "num_drones": args.num_drones,
                           "agent_steps_per_s": round(drone_sps)},
        "cartpole_sync_vector_env": {"envs": cart_envs, "agent_steps_per_s": round(cart_sps)},
        "ratio": round(drone_sps / cart_sps, 1),
        "threads": 1,
        "pinned": pinned,
    }
    if args.torch:
        result["drone_delivery_torch_cpu"] = {
            rng: round(bench_drone_torch(args.num_envs, args.num_drones, args.seconds, rng)) for rng in ("host", "device")}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"one core ({pinned}), 1 thread, random actions, {args.seconds:g} s timed per env")
        print(f"drone_delivery  {agents:>6} agents ({args.num_envs} arenas × {args.num_drones} drones): "
              f"{drone_sps:>12,.0f} agent-steps/s")
        print(f"CartPole-v1     {cart_envs:>6} envs (gymnasium SyncVectorEnv):        "
              f"{cart_sps:>12,.0f} agent-steps/s")
        print(f"ratio           {drone_sps / cart_sps:.1f}×")
        for rng, sps in result.get("drone_delivery_torch_cpu", {}).items():
            print(f"drone_delivery in torch on the CPU, {rng} respawn sampler: {sps:>12,.0f} agent-steps/s")
    if args.require is not None and drone_sps < args.require:
        print(f"FAIL: drone_delivery {drone_sps:,.0f} agent-steps/s < required {args.require:,.0f}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
