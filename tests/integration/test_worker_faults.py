"""Worker faults in real runs of `src/train.py`: restarts, the restart budget, hangs, memory.

Faults come from the envs in tests/faults.py (a worker builds its envs from `env.id`) or from
this test, which SIGKILLs processes. Shared memory is checked by name: what the run's
processes map or hold open under /dev/shm must be gone when they are (other runs on the
machine use /dev/shm at the same time, so a plain before/after listing would not say whose).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import torch

from effzero.data.workers import PREFIX, SHM_DIR
from tests.data.replay_checks import replay_problems
from tests.faults import FAULT_FILE
from tests.integration.helpers import SMOKE, alive, checkpoints, children, command, environment, run, wait_for

SHORT = (*SMOKE, "data.total_env_steps=400")  # 40 updates
ENDLESS = ("data.total_env_steps=100000", "trainer.max_steps=100000")


def shm_names(pid: int) -> set[str]:
    """Names under /dev/shm that process `pid` maps or holds open (deleted segments excluded)."""
    names = set()
    try:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            if "/dev/shm/" in line and not line.endswith("(deleted)"):
                names.add(line.split("/dev/shm/", 1)[1])
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("/dev/shm/") and not target.endswith("(deleted)"):
                names.add(target.removeprefix("/dev/shm/"))
    except OSError:  # it ended meanwhile
        pass
    return names


def workers_of(learner: int) -> dict[str, int]:
    """{worker name: pid}, read from the stack file each worker holds open."""
    found = {}
    for pid in children(learner):
        for name in shm_names(pid):
            match = re.search(r"/((?:selfplay|reanalyse)-\d+-\d+)\.\d+\.stacks$", name)
            if match:
                found[match[1]] = pid
    return found


def run_dirs(pid: int) -> list[Path]:
    return sorted(Path(SHM_DIR).glob(f"{PREFIX}{pid}-*"))


def start(log_dir: Path, *overrides: str) -> subprocess.Popen:
    """Start a run in the background; its output goes to `log_dir/output.log` (see `output`)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "output.log", "w") as log:
        return subprocess.Popen(
            command("train", log_dir, *overrides),
            cwd=Path(__file__).resolve().parents[2],
            env=environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def output(log_dir: Path) -> str:
    return (log_dir / "output.log").read_text()


def last_checkpoint(log_dir: Path) -> dict:
    last = next(p for p in checkpoints(log_dir) if p.name == "last.ckpt")
    return torch.load(last, weights_only=False)


def check_replay(checkpoint: dict) -> dict:
    """The checkpoint's replay is consistent and holds exactly the env steps counted; returns its shard."""
    shard = checkpoint["ReplayDataModule"]["shards"][0]
    algo = checkpoint["effzero_config"]["algo"]
    assert replay_problems(shard["replay"], algo["unroll_steps"] + algo["td_steps"]) == []
    assert int(shard["counters"][0]) == int(shard["replay"]["transitions"].sum())
    return shard


def test_a_crashed_worker_is_restarted_and_the_run_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_FILE, str(tmp_path / "fault"))
    result = run("train", tmp_path, *SHORT, "env.id=tests.faults:ExplodingOnceCartPole-v0", timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert (tmp_path / "fault").exists()  # the fault did fire
    assert "worker 'selfplay-0-0' died; restarting it (restart 1 of data.max_worker_restarts=3)" in output
    assert "RuntimeError: ExplodingOnceCartPole: injected fault" in output
    shard = check_replay(last_checkpoint(tmp_path))
    assert int(shard["counters"][0]) >= 400  # the budget was collected in full


def test_failures_past_the_restart_budget_stop_the_run_with_the_traceback(tmp_path):
    began = time.monotonic()
    result = run(
        "train", tmp_path, *SHORT, "env.id=tests.faults:ExplodingCartPole-v0", "data.max_worker_restarts=1"
    )
    assert result.returncode == 1
    assert "worker 'selfplay-0-0' died; restarting it (restart 1 of data.max_worker_restarts=1)" in (
        result.stdout + result.stderr
    )
    assert "worker 'selfplay-0-0' died; the run stops (1 restart(s) used" in result.stderr
    assert "RuntimeError: ExplodingCartPole: injected fault" in result.stderr
    assert time.monotonic() - began < 150


def test_a_ddp_rank_whose_worker_dies_for_good_ends_the_run_instead_of_waiting(tmp_path, monkeypatch):
    # One rank stops mid-run; the other is in a collective of its own. Writing a checkpoint
    # would gather both ranks' replay shards, and the two would wait for each other for ever.
    monkeypatch.setenv(FAULT_FILE, str(tmp_path / "fault"))
    ddp = ("trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu")
    began = time.monotonic()
    result = run(
        "train",
        tmp_path,
        *SMOKE,
        *ddp,
        "env.id=tests.faults:ExplodingLateOnceCartPole-v0",
        "data.max_worker_restarts=0",
        timeout=300,
    )
    assert result.returncode != 0
    log = "".join(p.read_text() for p in tmp_path.glob("debug/runs/*/*.log"))  # every rank's
    assert re.search(r"rank (\d) stopped by WorkerDied: worker 'selfplay-\1-0' died", log)  # either rank's
    assert "ExplodingOnceCartPole: injected fault" in log
    assert "resume from the last periodic checkpoint" in log
    assert time.monotonic() - began < 240


def test_a_hung_worker_is_detected_within_its_timeout_and_restarted(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_FILE, str(tmp_path / "fault"))
    result = run(
        "train",
        tmp_path,
        *SHORT,
        "env.id=tests.faults:HangingOnceCartPole-v0",
        "data.worker_timeout_s=5",
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "worker 'selfplay-0-0' hung; restarting it (restart 1 of" in output
    silent = int(re.search(r"no heartbeat for (\d+) s \(data.worker_timeout_s=5\)", output)[1])
    assert 5 <= silent <= 6  # checked every 0.1 s
    assert "tests/faults.py" in output and "in fault" in output  # where it hung
    check_replay(last_checkpoint(tmp_path))


def test_a_sigkilled_worker_is_restarted_and_replay_stays_whole(tmp_path):
    process = start(tmp_path, *SMOKE, "data.total_env_steps=1200")
    try:
        workers = wait_for(lambda: len(workers_of(process.pid)) == 2 and workers_of(process.pid), 90)
        assert workers, "workers did not start"
        time.sleep(3)
        os.kill(workers["selfplay-0-0"], signal.SIGKILL)
        process.wait(240)
    finally:
        process.kill()
    text = output(tmp_path)
    assert process.returncode == 0, text[-3000:]
    assert "worker 'selfplay-0-0' died; restarting it" in text and "killed by SIGKILL" in text
    shard = check_replay(last_checkpoint(tmp_path))
    assert int(shard["counters"][0]) >= 1200


def test_no_shared_memory_outlives_a_run(tmp_path):
    before = set(os.listdir(SHM_DIR))
    process = start(tmp_path, *SHORT)
    used: set[str] = set()
    try:
        while process.poll() is None:
            for pid in (process.pid, *children(process.pid)):
                used |= shm_names(pid)
            time.sleep(0.5)
    finally:
        process.kill()
    assert process.returncode == 0, output(tmp_path)[-3000:]
    assert used, "the run's files were never seen"
    assert all(name.startswith(PREFIX) for name in used), used  # no named semaphores, no torch names
    assert not any((Path(SHM_DIR) / name).exists() for name in used)
    assert not [n for n in set(os.listdir(SHM_DIR)) - before if n.startswith(f"{PREFIX}{process.pid}-")]


def test_a_sigkilled_run_leaves_its_files_to_the_next_start_which_removes_them(tmp_path):
    process = start(tmp_path, *SMOKE, *ENDLESS)
    try:
        workers = wait_for(lambda: len(workers_of(process.pid)) == 2 and workers_of(process.pid), 90)
        assert workers, "workers did not start"
        leftovers = run_dirs(process.pid)
        assert leftovers
    finally:
        process.kill()
    process.wait(10)
    # The workers die with the learner: the kernel kills them (parent-death signal).
    assert wait_for(lambda: not any(alive(pid) for pid in workers.values()), 10), (
        "workers outlived the learner"
    )
    result = run("train", tmp_path / "next", *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any(path.exists() for path in leftovers)


def test_a_replay_too_big_for_memory_is_refused_with_the_setting_to_lower(tmp_path):
    began = time.monotonic()
    result = run("train", tmp_path, *SMOKE, "data.capacity=1000000000000", timeout=120)
    assert result.returncode == 1
    message = result.stderr
    assert re.search(
        r"the data pipeline needs [\d.]+ GiB of shared memory but [\d.]+ GiB of RAM is available", message
    )
    assert "replay: " in message and "(lower data.capacity or data.total_env_steps)" in message
    assert time.monotonic() - began < 60
