"""The pure decision code never imports the code that touches the workspace, the trainer or files.

Pure (no I/O): records, sanity, trends, diagnosis, guard, notes, analysis, the digest, the generation
planner and the advisors: the package `autopilot.decide`. The I/O side: `autopilot.workspace` (reads and writes WORKDIR),
`autopilot.loop` (the running session), `autopilot.trainer`, `autopilot.atomic`. Every import statement
is checked, including those inside functions. (Before the split into packages these modules lived
side by side in `autopilot.loop`; the test knows both layouts.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import autopilot

PKG = Path(autopilot.__file__).parent
PURE_MODULES = ("records", "sanity", "trends", "diagnose", "guard", "notes", "analysis", "digest", "generation")
FLAT_IO_MODULES = ("workspace", "history", "ledger", "proposals", "recording", "report", "approval", "runner",
                   "session", "training", "launch", "commands", "parallel", "ray_task")
IO_PACKAGES = ("autopilot.trainer", "autopilot.atomic")


def _layout() -> tuple[list[Path], list[str], list[str]]:
    """(pure source files, I/O module names, I/O package prefixes) for the layout this checkout has."""
    if (PKG / "decide").is_dir():
        files = sorted((PKG / "decide").rglob("*.py"))
        return files, [], ["autopilot.workspace", "autopilot.loop", *IO_PACKAGES]
    loop = PKG / "loop"
    files = [loop / f"{m}.py" for m in PURE_MODULES if (loop / f"{m}.py").exists()]
    files += sorted((loop / "advisors").rglob("*.py"))
    return files, [f"autopilot.loop.{m}" for m in FLAT_IO_MODULES], list(IO_PACKAGES)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in `path` names (`from a import b` counts as a and a.b)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _is_io(name: str, modules: list[str], packages: list[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in (*modules, *packages))


def test_the_pure_side_never_imports_the_io_side():
    files, modules, packages = _layout()
    assert len(files) >= 7 + 2  # the seven core modules and at least two advisors were found
    offences = [f"{p.relative_to(PKG.parent)}:{line} imports {name}" for p in files
                for line, name in _imports(p) if _is_io(name, modules, packages)]
    assert not offences, "pure decision code imports the I/O side:\n" + "\n".join(offences)


def test_the_check_sees_an_offending_import(tmp_path):
    """The scanner itself: an import of the I/O side, even a lazy one inside a function, is caught."""
    files, modules, packages = _layout()
    probe = tmp_path / "probe.py"
    io_module = modules[0] if modules else "autopilot.workspace.layout"
    probe.write_text(f"import math\n\ndef f():\n    from {io_module.rpartition('.')[0]} import "
                     f"{io_module.rpartition('.')[2]}\n    return math.pi\n")
    flagged = [n for _, n in _imports(probe) if _is_io(n, modules, packages)]
    assert io_module in flagged and "math" not in flagged
