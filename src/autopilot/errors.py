"""Errors the project raises on purpose. Anything else escaping to the CLI is a bug."""

from __future__ import annotations


class AutopilotError(Exception):
    """Base class: a clear, one-line, user-facing failure (the CLI prints it and exits non-zero)."""


class ConfigError(AutopilotError):
    """A configuration, override or proposal breaks a rule.

    `violations` holds one line per broken rule, each naming the key, the value, the rule and a
    valid alternative; `str(err)` joins them.
    """

    def __init__(self, violations: str | list[str]):
        self.violations = [violations] if isinstance(violations, str) else list(violations)
        super().__init__("; ".join(self.violations))


class WorkspaceError(AutopilotError):
    """The workspace is missing, locked by another process, or holds a file that cannot be read."""


class AdvisorError(AutopilotError):
    """An advisor could not produce a proposal (endpoint down, timeout, budget spent, unusable answer);
    the loop falls back to the default advisor and the note records why."""
