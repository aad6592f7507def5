"""The workspace: layout, init, the lock, run ids, and tolerant reading of damaged run folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from autopilot.config.load import profile_dict
from autopilot.errors import WorkspaceError
from autopilot.workspace.layout import (
    WorkspaceLock,
    init_workspace,
    list_run_dirs,
    load_history,
    load_run,
    new_run_id,
    open_workspace,
    read_lock_info,
    run_sort_key,
)


def test_init_creates_the_design_layout_and_keeps_edits(tmp_path):
    ws = init_workspace(tmp_path / "w")
    for d in ("configs", "proposals", "proposals/rejected", "runs", "models", "journal"):
        assert (ws.root / d).is_dir(), d
    assert json.loads(ws.profile_path("quick").read_text()) == profile_dict("quick")
    assert json.loads(ws.profile_path("full").read_text()) == profile_dict("full")
    assert ws.labbook.read_text().startswith("# Lab notebook")
    ws.profile_path("quick").write_text('{"edited": true}')
    init_workspace(ws.root)  # idempotent: a person's edits survive
    assert json.loads(ws.profile_path("quick").read_text()) == {"edited": True}


def test_open_workspace_refuses_a_folder_without_runs(tmp_path):
    with pytest.raises(WorkspaceError, match="not an autopilot workspace.*autopilot init"):
        open_workspace(tmp_path)


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    ws = init_workspace(tmp_path / "w")
    with WorkspaceLock(ws, command="first"):
        assert read_lock_info(ws.lock_path)["pid"] == os.getpid()
        with pytest.raises(WorkspaceError, match=rf"in use by pid {os.getpid()} .*first"):
            WorkspaceLock(ws).acquire()
    assert read_lock_info(ws.lock_path) == {}  # released: the file stays, empty
    WorkspaceLock(ws).acquire().release()  # and can be taken again


def test_a_lock_held_by_another_process_is_refused(tmp_path):
    ws = init_workspace(tmp_path / "w")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from autopilot.workspace.layout import Workspace, WorkspaceLock;"
        f"WorkspaceLock(Workspace(Path({str(ws.root)!r})), command='holder').acquire(); print('held', flush=True);"
        "time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkspaceError, match=rf"pid {holder.pid} "):
            WorkspaceLock(ws).acquire()
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock is stale and is taken over, with a log line.
    seen = []
    WorkspaceLock(ws, warn=seen.append).acquire().release()
    assert len(seen) == 1 and f"pid {holder.pid}" in seen[0] and "stale" in seen[0]


def test_run_ids_are_unique_within_one_second_and_sort_in_time_order(tmp_path):
    ws = init_workspace(tmp_path / "w")
    now = datetime(2025, 9, 20, 15, 35, 15, tzinfo=timezone.utc)
    ids = []
    for _ in range(11):
        rid = new_run_id(ws, now)
        (ws.runs / rid).mkdir()
        (ws.runs / rid / "config.json").write_text("{}")
        ids.append(rid)
    assert ids[0] == "2025-09-20T153515Z" and ids[1] == "2025-09-20T153515Z-2" and len(set(ids)) == 11
    later = new_run_id(ws, datetime(2025, 9, 20, 15, 35, 16, tzinfo=timezone.utc))
    (ws.runs / later).mkdir()
    (ws.runs / later / "config.json").write_text("{}")
    assert [d.name for d in list_run_dirs(ws)] == ids + [later]  # -10 after -9, the next second last
    assert run_sort_key("abc") == ("abc", 0)


def test_damaged_run_files_are_reported_and_skipped_not_raised(tmp_path):
    ws = init_workspace(tmp_path / "w")
    good = ws.runs / "2025-01-01T000000Z"
    good.mkdir()
    (good / "config.json").write_text(json.dumps(profile_dict("quick")))
    (good / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')  # torn last line
    bad = ws.runs / "2025-01-01T000001Z"
    bad.mkdir()
    (bad / "config.json").write_text('{"train": {"learning_rate": ')  # truncated
    (bad / "trainer_summary.json").write_text('{"schema": 1, "status": "completed", "metrics": {"succ')
    (bad / "summary.json").write_text('{"run_id": 3, "status": []}')  # wrong types
    (bad / "override.json").write_text("[1, 2]")  # not an object
    warnings: list[str] = []
    history = load_history(ws, warnings.append)
    assert [r.run_id for r in history] == [good.name, bad.name]
    assert history[0].config is not None and [row["epoch"] for row in history[0].curve] == [1, 2]
    rec = history[1]
    assert rec.config is None and rec.trainer_summary is None and rec.loop_summary is None and rec.override == {}
    joined = "\n".join(warnings)
    assert "config.json is malformed JSON" in joined and "trainer_summary.json is malformed JSON" in joined
    assert "summary.json key" in joined and "metrics.jsonl:3" in joined


def test_a_run_folder_with_an_invalid_config_still_loads(tmp_path):
    ws = init_workspace(tmp_path / "w")
    d = ws.runs / "r1"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"train": {"no_such_knob": 1}}))
    seen: list[str] = []
    rec = load_run(d, seen.append)
    assert rec.config is None and rec.raw_config == {"train": {"no_such_knob": 1}}
    assert any("does not validate" in w for w in seen)
