"""Property: random JSON and random overrides never raise anything but the project's ConfigError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autopilot.config import check_config, config_from_dict, load_profile
from autopilot.errors import ConfigError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
KEYS = ["env_name", "env.num_envs", "env.num_drones", "vec.num_envs", "vec.num_workers", "vec.backend",
        "train.batch_size", "train.minibatch_size", "train.bptt_horizon", "train.learning_rate",
        "train.ent_coef", "train.total_timesteps", "train.device", "autopilot.resume_from", "sweep.train.x",
        "policy.hidden_size", "train", "nosuch.key", "train.nosuch"]
overrides = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=12), json_values, max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values)
def test_random_json_only_raises_config_error(data):
    try:
        c = config_from_dict(data)
        check_config(c)
    except ConfigError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ovr=overrides)
def test_random_overrides_only_raise_config_error(ovr):
    base = load_profile("quick").model_dump()
    try:
        c = config_from_dict(base, ovr)
        check_config(c)
    except ConfigError:
        pass
