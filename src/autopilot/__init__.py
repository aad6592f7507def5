"""autopilot: an autonomous research loop for PPO training.

The public Python API mirrors the CLI: load and validate a config, train one run, run the loop.
"""

from autopilot.errors import AutopilotError, ConfigError

__version__ = "0.1.0"

__all__ = ["AutopilotError", "ConfigError", "__version__"]
