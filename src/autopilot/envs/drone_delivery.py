"""drone_delivery: a vectorized multi-agent pick-and-deliver task (skeleton: parameters + registration).

The simulation itself is filled in by the env module's implementation below.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from autopilot.envs.registry import EnvSpec, register_env
from autopilot.space import spec


class DroneDeliveryParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_envs: int = 4  # arenas in one env object
    num_drones: int = 8  # drones (agents) per arena


SPACE = {s.key: s for s in [
    spec("env.num_envs", "int", 1, 65536, tunable=False),
    spec("env.num_drones", "int", 1, 64, tunable=False),
]}


def _factory(params: DroneDeliveryParams, seed: int):
    raise NotImplementedError


register_env(EnvSpec(
    name="drone_delivery",
    params_model=DroneDeliveryParams,
    factory=_factory,
    agents_per_env=lambda p: p.num_envs * p.num_drones,
    agents_formula=lambda p: [p.num_envs, p.num_drones],
    space=SPACE,
    description="multi-agent drone pick-and-deliver",
))
