"""Configuration: typed models, loading (JSON or PufferLib .ini), overrides, diffs, invariants."""

from autopilot.config.invariants import (
    BatchArithmetic,
    Check,
    check_config,
    derive_batch,
    ensure_valid,
    resolve_config,
)
from autopilot.config.load import (
    config_from_dict,
    config_space,
    load_config,
    load_profile,
    save_config,
)
from autopilot.config.model import Config
from autopilot.config.overrides import Change, apply_overrides, diff_configs, flatten, parse_assignment

__all__ = [
    "BatchArithmetic",
    "Change",
    "Check",
    "Config",
    "apply_overrides",
    "check_config",
    "config_from_dict",
    "config_space",
    "derive_batch",
    "diff_configs",
    "ensure_valid",
    "flatten",
    "load_config",
    "load_profile",
    "parse_assignment",
    "resolve_config",
    "save_config",
]
