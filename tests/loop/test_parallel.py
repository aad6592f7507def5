"""`autopilot run --parallel K`: generation planning (pure), the worker task (in-process), and the driver
on a real Ray cluster of two nodes simulated on this machine (`ray.cluster_utils.Cluster`)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from ledgers import make_record, rid
from runner_fixtures import *  # noqa: F403 - fixtures: fake_ws, ckpt_template
from runner_fixtures import FAKE_TRAINER

from autopilot.decide.advisors import get_advisor
from autopilot.decide.generation import generation_parent, plan_generation, render_generation_note
from autopilot.decide.records import NoiseBand
from autopilot.loop import ray_task
from autopilot.workspace.layout import read_state


# -- planning (pure) ------------------------------------------------------------------------------------
def _ledger():
    return [make_record(rid(0), metrics={"success_rate": 0.30}),
            make_record(rid(1), {"train.ent_coef": 0.02}, metrics={"success_rate": 0.42}),
            make_record(rid(2), {"train.ent_coef": 0.005}, metrics={"success_rate": 0.20})]


@pytest.mark.parametrize("advisor", ["rules", "random"])
def test_plan_has_k_distinct_guarded_candidates_growing_from_the_parent(advisor):
    history = _ledger()
    parent = generation_parent(history[1:], "success_rate")
    assert parent.run_id == rid(1)  # the best trusted member, not the latest
    plan = plan_generation(history, parent, advisor=advisor, k=3, seed=3)
    assert plan.parent is parent
    assert len(plan.proposals) == 3
    overrides = [json.dumps(p.as_override(), sort_keys=True) for p in plan.proposals]
    assert len(set(overrides)) == 3, overrides
    for p in plan.proposals:
        # Candidates change the parent's config: ent_coef stays at the parent's 0.02 unless proposed.
        assert p.changes.get("train.ent_coef", 0.02) != 0.005 or "train.ent_coef" in p.changes


def test_random_propose_many_samples_k_independent_moves():
    from autopilot.config.load import config_space
    from autopilot.decide.records import AdvisorContext

    history = _ledger()
    ctx = AdvisorContext(history=history, findings=[], trends=[], space=config_space(history[-1].config),
                         base_config=history[-1].config, seed=5)
    adv = get_advisor("random")
    many = adv.propose_many(ctx, 4)
    assert len(many) == 4
    assert many[0].changes == adv.propose(ctx).changes  # the first is the plain proposal
    assert len({json.dumps(p.changes, sort_keys=True) for p in many}) == 4
    assert not any(p.seed_repeat for p in many)
    assert many == adv.propose_many(ctx, 4)  # reproducible for the same context


def test_generation_note_judges_members_against_the_band():
    members = [make_record(rid(3), metrics={"success_rate": 0.50}),
               make_record(rid(4), {"train.seed": 2}, metrics={"success_rate": 0.49}),
               make_record(rid(5), {"train.ent_coef": 0.05}, metrics={"success_rate": 0.30})]
    note = render_generation_note(2, members, parent=members[0], objective="success_rate",
                                  noise=NoiseBand(value=0.03, measured=True))
    rows = {line.split("|")[1].strip(): line for line in note.splitlines() if line.startswith("| 2025")}
    assert "best ★" in rows[rid(3)]
    assert "within the band" in rows[rid(4)] and "-0.01" in rows[rid(4)]
    assert "worse (beyond the band)" in rows[rid(5)] and "ent_coef=0.05" in rows[rid(5)]
    assert "±0.03" in note and "measured from seed repeats" in note
    assert f"warm-starts from run {rid(3)}" in note


# -- the worker task, in-process ------------------------------------------------------------------------
def test_candidate_task_trains_in_staging_and_returns_the_folder(tmp_path, fake_ws, ckpt_template):
    fake_ws.plan(default={"epochs": 2})
    config = json.dumps({"autopilot": {}}).encode()
    out = ray_task.run_candidate({
        "run_id": "2025-09-20T100000Z", "attempt": 1, "config_bytes": config, "resume_bytes": ckpt_template.read_bytes(),
        "trainer_command": [sys.executable, str(FAKE_TRAINER), "--config", "{config}", "--run-dir", "{run_dir}",
                            "--resume", "{resume}"],
        "stall_seconds": 5, "wall_seconds": 20, "grace": 2, "workspace": str(fake_ws.root)})
    assert out["returncode"] == 0 and out["reason"] == "exited"
    dest = tmp_path / "back"
    names = {p.relative_to(dest).as_posix() for p in ray_task.unpack_folder(out["files"], dest)}
    assert {"config.json", "train.log", "metrics.jsonl", "trainer_summary.json", "checkpoints/latest.pt"} <= names
    assert ray_task.RESUME_NAME not in names  # the warm start is not shipped back
    call = fake_ws.calls()[-1]
    assert call["resume"].endswith(ray_task.RESUME_NAME) and Path(call["run_dir"]).name == "2025-09-20T100000Z"
    assert not Path(call["run_dir"]).exists()  # the staging folder is gone
    log = (dest / "train.log").read_text()
    assert "started" in log and "ended" in log


def test_unpack_refuses_paths_outside_the_folder(tmp_path):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"x"
        info = tarfile.TarInfo("../escape.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(tarfile.FilterError):
        ray_task.unpack_folder(buf.getvalue(), tmp_path / "in")
    assert not (tmp_path / "escape.txt").exists()


def test_resource_request_per_candidate():
    from autopilot.config import load_config
    from autopilot.loop.parallel import _resources

    cpu = load_config("quick", {"vec.num_workers": 2, "vec.num_envs": 4})
    assert _resources(cpu, 2, 0.0) == {"num_cpus": 2.0, "num_gpus": 0.0}
    cuda = cpu.model_copy(update={"train": cpu.train.model_copy(update={"device": "cuda"})})
    assert _resources(cuda, 2, 1.0) == {"num_cpus": 2.0, "num_gpus": 0.5}  # two candidates share the GPU
    assert _resources(cuda, 4, 8.0)["num_gpus"] == 1.0  # never more than one GPU per candidate
    auto = cpu.model_copy(update={"train": cpu.train.model_copy(update={"device": "auto"})})
    assert _resources(auto, 2, 0.0)["num_gpus"] == 0.0 and _resources(auto, 2, 2.0)["num_gpus"] == 1.0


def test_parallel_option_errors(fake_ws):
    from autopilot.errors import ConfigError

    with pytest.raises(ConfigError, match="--parallel 0"):
        fake_ws.run(runs=2, parallel=0)
    with pytest.raises(ConfigError, match="--ray-address .* needs --parallel"):
        fake_ws.run(runs=2, ray_address="auto")
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        fake_ws.run(runs=2, parallel=2, ray_address="headnode")


def test_unreachable_cluster_is_a_quick_clear_error(fake_ws):
    import socket

    from autopilot.errors import ConfigError

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"nothing answers at 127.0.0.1:{port}"):
        fake_ws.run(runs=2, parallel=2, ray_address=f"127.0.0.1:{port}")
    assert time.monotonic() - start < 30
    assert not fake_ws.run_dirs()  # nothing was created


# -- the driver on Ray ----------------------------------------------------------------------------------
@pytest.fixture
def two_nodes(fake_ws):
    """A head and a second node, one CPU each: two 1-CPU candidates can only run one per node."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _kill_worker_of_first_trainer(fake_ws, ready: Path, killed: list[int]) -> None:
    import psutil

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ready.exists():
        time.sleep(0.05)
    calls = fake_ws.calls()
    if not calls:
        return
    worker = psutil.Process(calls[0]["pid"]).parent()
    killed.append(worker.pid)
    worker.send_signal(signal.SIGKILL)


def test_generation_spreads_over_two_nodes_and_survives_a_killed_worker(fake_ws, two_nodes, tmp_path):
    ready = tmp_path / "ready"
    # Invocation 0 announces itself, so the test can kill the Ray worker under it; every candidate is slow
    # enough that its sibling still holds the other node's only CPU when the retry is placed.
    slow = {"epochs": 4, "epoch_sleep": 1.0}
    fake_ws.plan({**slow, "ready_file": str(ready)}, default=slow)
    killed: list[int] = []
    killer = threading.Thread(target=_kill_worker_of_first_trainer, args=(fake_ws, ready, killed), daemon=True)
    killer.start()
    assert fake_ws.run(runs=2, parallel=2) == 0, fake_ws.output()
    killer.join(5)
    assert killed, "no worker was killed"
    fake_ws.assert_complete(2)
    states = [read_state(d) for d in fake_ws.run_dirs()]
    assert {st["generation"] for st in states} == {1} and sorted(st["member"] for st in states) == [0, 1]
    assert len({st["worker"]["node"] for st in states}) == 2  # one candidate per node
    summaries = fake_ws.summaries()
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    victim = next(d for d in fake_ws.run_dirs() if "lost its Ray worker" in (d / "train.log").read_text())
    assert json.loads((victim / "summary.json").read_text())["attempts"] == 2
    assert "generation 1" in (victim / "generation.md").read_text().lower()
    assert fake_ws.ws.labbook.read_text().count("<!-- autopilot:generation ") == 1
    assert fake_ws.best() is not None


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_driver_stopped_mid_generation_resumes_without_duplicates(fake_ws, sig):
    import psutil

    fake_ws.plan(default={"epochs": 6, "epoch_sleep": 0.5})
    args = ("run", "--runs", "4", "--parallel", "2", "--workdir", str(fake_ws.root))
    proc = fake_ws.popen(*args)
    try:
        fake_ws.wait_for(lambda: any(read_state(d).get("phase") == "training" and read_state(d).get("generation") == 2
                                     for d in fake_ws.run_dirs()), timeout=240, what="generation 2 training")
        time.sleep(1.0)
        proc.send_signal(sig)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == (-9 if sig == signal.SIGKILL else 143)
    done = fake_ws.cli(*args, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    dirs = fake_ws.run_dirs()
    assert len(dirs) == 4 and len({d.name for d in dirs}) == 4
    statuses = []
    for d in dirs:
        assert read_state(d)["phase"] == "done", d.name
        statuses.append(json.loads((d / "summary.json").read_text())["status"])
    assert set(statuses) <= {"completed", "interrupted"} and "interrupted" in statuses, statuses
    assert sorted((read_state(d)["generation"], read_state(d)["member"]) for d in dirs) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert fake_ws.labbook_sections() == 4
    best = fake_ws.best()
    assert best is not None and (fake_ws.root / "runs" / best["run_id"]).is_dir()
    # No trainer outlives the driver that launched it (the worker dies with it; the trainer follows).
    deadline = time.monotonic() + 30
    alive = [c["pid"] for c in fake_ws.calls()]
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    assert not alive
