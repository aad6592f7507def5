"""Dotted-key views of a config: flatten, override (`train.ent_coef=0.05`), and diff (`key: old -> new`)."""

from __future__ import annotations

import ast
import copy
import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from autopilot.errors import ConfigError
from autopilot.space import fmt_num

# Sections whose values are dicts of free-form keys validated elsewhere; flattening stops inside them.
_OPAQUE = ("sweep",)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"ent_coef": 0.01}} -> {"train.ent_coef": 0.01}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in _OPAQUE:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def unknown_key(key: str, known: Iterable[str], *, listed: Iterable[str] | None = None) -> str:
    """The one message for a key outside the whitelist: the rule and the nearest valid keys, else the
    valid keys (`listed`, default `known`) in full. Proposals, the guard and `--set` all use it."""
    known = sorted(known)
    near = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
    hint = f"did you mean {', '.join(near)}?" if near else f"valid keys: {', '.join(sorted(listed or known))}"
    return f"{key} is not a known key (rule: unknown keys are errors); {hint}"


def parse_value(text: str) -> Any:
    """Parse a value the way PufferLib parses .ini values: `100_000_000`, `True`, `3e-4`, `auto`.

    JSON spellings (`true`, `null`, `[1, 2]`) are accepted too; anything else stays a string.
    """
    text = text.strip()
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """`train.ent_coef=0.05` -> ("train.ent_coef", 0.05)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} is not of the form key=value; e.g. train.ent_coef=0.05")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r} has an empty key; e.g. train.ent_coef=0.05")
    return key, parse_value(raw)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of the raw config dict with dotted overrides applied.

    A key must name an existing section (unknown keys are rejected later by the model, with the
    list of known keys); a dotted key may not descend into a scalar.
    """
    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        if not isinstance(dotted, str) or not dotted:
            raise ConfigError(f"override key {dotted!r} is not a dotted key; e.g. train.ent_coef")
        parts = dotted.split(".")
        if parts[0] == "sweep":
            out.setdefault("sweep", {})[".".join(parts[1:])] = value
            continue
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                parent = ".".join(parts[: i + 1])
                raise ConfigError(f"override {dotted}: {parent} is a value, not a section (rule: keys are section.key)")
            node = child
        node[parts[-1]] = value
    return out


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {fmt_num(self.old)} -> {fmt_num(self.new)}"


def diff_configs(old: dict[str, Any] | Any, new: dict[str, Any] | Any) -> list[Change]:
    """Every dotted key whose value differs, in key order. Accepts dicts or `Config` objects."""
    a = flatten(_as_dict(old))
    b = flatten(_as_dict(new))
    missing = object()
    changes = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            changes.append(Change(key, None if va is missing else va, None if vb is missing else vb))
    return changes


def _as_dict(cfg: Any) -> dict[str, Any]:
    return cfg.model_dump() if hasattr(cfg, "model_dump") else cfg
