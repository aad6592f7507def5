"""The pending proposal (`proposals/next_config.json`: this module is its one writer and remover) and
the config it produces.

A proposal is a flat dict of dotted keys (`Proposal.as_override()`) relative to the *current base*:
the last run's config (same mode, same base file), else the base file: the profile
`configs/baseline_<mode>.json`, or `configs/base.json` (`--config`); the session's `--set` overrides sit
between the two. That base is what the advisors and the guard diff against (`AdvisorContext.base_config`
is the latest run's config), so accepted changes accumulate run after run instead of being re-applied to
the profile.

Validation = whitelist (every key must exist in the config; `autopilot.trainer_command` and
`autopilot.plugins` may not be proposed: a JSON file must not choose what code runs) + the config model
+ every invariant.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from autopilot.atomic import atomic_write_json
from autopilot.config import Config, check_config, config_from_dict, derive_batch, flatten, resolve_config
from autopilot.config.invariants import derive_minibatch_size
from autopilot.config.load import config_space, read_json_file
from autopilot.config.overrides import unknown_key
from autopilot.decide.records import RunRecord
from autopilot.errors import AutopilotError, ConfigError
from autopilot.workspace.layout import (
    CONFIG_MODE,
    Warn,
    Workspace,
    _log_warn,
    iso_now,
    read_json_tolerant,
    stamp,
)
from autopilot.workspace.ledger import run_base_digest, run_mode

# Which program runs (and any code it imports by name) is the person's choice, never a proposal's.
FORBIDDEN_KEYS = ("autopilot.trainer_command", "autopilot.plugins", "backend", "extras.vecenv",
                  "extras.policy_factory")
FORBIDDEN_PREFIXES = ("autopilot.advisor.",)  # which program or server advises is not a proposal's to choose


def unresolve(cfg: Config) -> Config:
    """Turn derived batch sizes back into "auto", so a proposal that changes bptt or the topology
    re-derives them instead of breaking the segments rule with a stale number."""
    out = cfg.model_copy(deep=True)
    try:
        arith = derive_batch(cfg)
    except (AutopilotError, ValueError, TypeError):
        return out
    if cfg.train.batch_size == arith.batch:
        out.train.batch_size = "auto"
        mb = cfg.train.minibatch_size
        if mb != "auto" and mb == derive_minibatch_size(arith.batch, cfg.train.bptt_horizon, cfg.train.max_minibatch_size):
            out.train.minibatch_size = "auto"
    return out


def load_profile_file(ws: Workspace, mode: str) -> dict[str, Any]:
    path = ws.profile_path(mode)
    if not path.exists():
        how = ("`autopilot init --config PATH` (or `autopilot run --config PATH`)" if mode == CONFIG_MODE
               else f"`autopilot init --workdir {ws.root}`")
        raise ConfigError(f"base config {ws.rel(path)} does not exist; run {how} to write it")
    data = read_json_file(path, "profile")
    if not isinstance(data, dict):
        raise ConfigError(f"profile {ws.rel(path)} must be a JSON object; fix it or delete it and run `autopilot init`")
    return data


def profile_digest(ws: Workspace, mode: str) -> str | None:
    """A fingerprint of the base file of `mode` (None when it is missing or unreadable): a run records
    it, so a session continues from the last run only while the base it started from is unchanged."""
    try:
        data = load_profile_file(ws, mode)
    except ConfigError:
        return None
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def current_base(ws: Workspace, mode: str, history: list[RunRecord],
                 base_overrides: dict[str, Any] | None = None) -> tuple[Config, str]:
    """(base config, where it came from): the last valid run config of this mode and base file, else
    the base file itself (a profile, or configs/base.json)."""
    digest = profile_digest(ws, mode)
    for rec in reversed(history):
        if rec.config is None:
            continue
        if run_mode(rec) not in (None, mode) or run_base_digest(rec) not in (None, digest):
            break  # the mode or the base file changed: start from the base file
        try:
            return config_from_dict(unresolve(rec.config).model_dump(), base_overrides), f"run {rec.run_id}"
        except ConfigError as exc:
            raise ConfigError(f"--set on top of run {rec.run_id}'s config: {exc}") from None
    profile = load_profile_file(ws, mode)
    try:
        return config_from_dict(profile, base_overrides), ws.rel(ws.profile_path(mode))
    except ConfigError as exc:
        raise ConfigError(f"{ws.rel(ws.profile_path(mode))}: {exc}") from None


def validate_override(override: Any, base: Config, *, sps: float | None = None) -> Config:
    """The resolved config `base + override`, or a ConfigError naming every broken rule."""
    if not isinstance(override, dict):
        raise ConfigError(f"a proposal must be a JSON object of dotted keys, e.g. {{\"train.ent_coef\": 0.05}}; "
                          f"got {type(override).__name__}")
    flat = flatten(override)
    known = set(flatten(base.model_dump(exclude={"sweep"})))
    problems = []
    for key in flat:
        if not isinstance(key, str) or key in FORBIDDEN_KEYS or key.startswith(FORBIDDEN_PREFIXES):
            problems.append(f"{key} may not be set by a proposal (rule: a proposal tunes the training, not which "
                            f"program runs); set it in the profile or with --set")
        elif key not in known:
            problems.append(unknown_key(key, known))
    if problems:
        raise ConfigError(problems)
    cfg = config_from_dict(unresolve(base).model_dump(), flat)
    # The runtime estimate is the one rule a base config can break after the fact (the SPS was measured
    # later); a proposal is refused only if it breaks it where the base does not. The watchdog still
    # enforces the wall budget.
    base_runtime = [c for c in check_config(base, config_space(base), sps=sps) if c.name == "runtime"]
    tolerated = {"runtime"} if base_runtime and not base_runtime[0].ok else set()
    violations = [v for c in check_config(cfg, config_space(cfg), sps=sps) if c.name not in tolerated
                  for v in c.violations]
    if violations:
        raise ConfigError(violations)
    return resolve_config(cfg)


def read_pending(ws: Workspace) -> tuple[Any, str | None, str | None]:
    """(parsed proposal | None, raw text | None, parse error | None); (None, None, None) when none is staged."""
    try:
        text = ws.next_config.read_text("utf-8")
    except FileNotFoundError:
        return None, None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, None, f"{ws.rel(ws.next_config)} cannot be read: {exc}"
    try:
        return json.loads(text), text, None
    except (ValueError, RecursionError) as exc:
        return None, text, f"{ws.rel(ws.next_config)} is malformed JSON ({str(exc)[:80]})"


def record_rejection(ws: Workspace, *, reasons: list[str], proposal: Any = None, raw_text: str | None = None,
                     source: str, name: str | None = None) -> Path:
    """Keep a refused proposal with its reasons under proposals/rejected/ (never silently dropped)."""
    ws.rejected.mkdir(parents=True, exist_ok=True)
    base = name or stamp()
    path, n = ws.rejected / f"{base}.json", 1
    while name is None and path.exists():
        n += 1
        path = ws.rejected / f"{base}-{n}.json"
    entry: dict[str, Any] = {"rejected_at": iso_now(), "source": source, "reasons": reasons}
    if raw_text is not None and proposal is None:
        entry["raw_text"] = raw_text[:100_000]
    else:
        entry["proposal"] = proposal
    atomic_write_json(path, entry)
    return path


def take_pending(ws: Workspace, base: Config, *, sps: float | None, warn: Warn | None = None
                 ) -> tuple[Config | None, dict[str, Any]]:
    """Validate the staged proposal against `base`. A broken one is moved to proposals/rejected/
    (record first, then unlink: a crash in between leaves a duplicate record, never a lost proposal).
    Returns (config or None when nothing usable is staged, the flat override used)."""
    warn = warn or _log_warn
    data, text, error = read_pending(ws)
    if text is None and error is None:
        return None, {}  # nothing staged (a staged `null` is text, and is rejected below)
    try:
        if error is not None:
            raise ConfigError(error)
        cfg = validate_override(data, base, sps=sps)
        return cfg, flatten(data)
    except ConfigError as exc:
        reasons = exc.violations
    except Exception as exc:  # a validator tripping on junk: still a rejection, never a dead loop
        reasons = [f"internal error while validating ({type(exc).__name__}: {str(exc)[:200]})"]
    path = record_rejection(ws, reasons=reasons, proposal=data, raw_text=text, source=ws.rel(ws.next_config))
    ws.next_config.unlink(missing_ok=True)
    warn(f"staged proposal rejected ({reasons[0][:160]}{' …' if len(reasons) > 1 else ''}); kept as "
         f"{ws.rel(path)}; going on with the base config")
    return None, {}


def stage(ws: Workspace, override: dict[str, Any]) -> Path:
    return atomic_write_json(ws.next_config, override)


def consume_pending(ws: Workspace, override: dict[str, Any], *, warn: Warn | None) -> bool:
    """Remove the staged proposal once a run folder holds it (its override.json), and only if it is still
    the one that was read: a person may have staged another meanwhile, which stays for the next run.
    True when it was removed."""
    pending = read_json_tolerant(ws.next_config, lambda m: None)
    try:
        same = isinstance(pending, dict) and flatten(pending) == override
    except (ValueError, TypeError, RecursionError):
        same = False
    if same:
        ws.next_config.unlink(missing_ok=True)
    elif warn is not None and ws.next_config.exists():
        warn(f"{ws.rel(ws.next_config)} changed while this run was prepared; kept for the next run")
    return same
