"""`--advisor command`: any executable (a coding-agent CLI, a script) reads the digest and prints a
Proposal JSON on stdout.

The argv list comes from `autopilot.advisor.command` (else $AUTOPILOT_ADVISOR_COMMAND, split like a
shell would but never run by one). The digest is written to the command's stdin; an argument containing
`{digest}` has it replaced by the path of a temporary file holding the same text, for tools that take a
file. The command runs with `autopilot.advisor.timeout_s`; a missing program, a timeout, a non-zero
exit or an answer that is not a Proposal raises `AdvisorError` with the reason (and the tail of its
stderr), so the analysis falls back to the default advisor.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from autopilot.decide.advisors import register_advisor
from autopilot.decide.advisors.external import ExternalAdvisor, parse_answer
from autopilot.decide.digest import render_digest
from autopilot.decide.records import AdvisorContext, Proposal
from autopilot.errors import AdvisorError

ENV_COMMAND = "AUTOPILOT_ADVISOR_COMMAND"
PLACEHOLDER = "{digest}"
MAX_OUTPUT = 200_000  # characters of stdout read as the answer


def advisor_argv(configured: list[str] | None, environ: Mapping[str, str]) -> list[str]:
    if configured:
        return list(configured)
    text = environ.get(ENV_COMMAND, "").strip()
    if not text:
        raise AdvisorError(f"no command: set autopilot.advisor.command to an argv list, e.g. "
                           f"[\"python\", \"my_agent.py\", \"{PLACEHOLDER}\"], or ${ENV_COMMAND}")
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise AdvisorError(f"${ENV_COMMAND}={text!r} cannot be split into arguments ({exc}); "
                           f"quote it like a shell command line") from None


@register_advisor("command")
class CommandAdvisor(ExternalAdvisor):
    def __init__(self, environ: Mapping[str, str] | None = None):
        self.environ = environ

    def propose(self, ctx: AdvisorContext) -> Proposal:
        settings = ctx.base_config.autopilot.advisor
        argv = advisor_argv(settings.command, self.environ if self.environ is not None else os.environ)
        digest = render_digest(ctx)
        with tempfile.TemporaryDirectory(prefix="autopilot-digest-") as tmp:
            path = Path(tmp) / "digest.md"
            path.write_text(digest, "utf-8")
            args = [a.replace(PLACEHOLDER, str(path)) for a in argv]
            out = _run(args, digest, settings.timeout_s)
        return parse_answer(out, advisor=self.name or "command", source=f"command {Path(argv[0]).name}")


def _run(args: list[str], digest: str, timeout_s: float) -> str:
    shown = shlex.join(args)[:200]
    try:
        proc = subprocess.run(args, input=digest, capture_output=True, text=True, timeout=timeout_s,
                              shell=False, check=False, errors="replace")
    except FileNotFoundError:
        raise AdvisorError(f"command {args[0]!r} not found (argv {shown}); give a path or a program on PATH") from None
    except PermissionError:
        raise AdvisorError(f"command {args[0]!r} is not executable (argv {shown})") from None
    except subprocess.TimeoutExpired:
        raise AdvisorError(f"command {shown} did not finish within {timeout_s:g}s "
                           f"(autopilot.advisor.timeout_s); it was killed") from None
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or "").split())[-300:]
        raise AdvisorError(f"command {shown} exited with code {proc.returncode}" + (f": {tail}" if tail else ""))
    return (proc.stdout or "")[:MAX_OUTPUT]


__all__ = ["CommandAdvisor", "advisor_argv"]
