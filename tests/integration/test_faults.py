"""Faults during a run: a worker that raises, a worker killed, the learner killed or interrupted."""

import os
import signal
import subprocess
import time
from pathlib import Path

import torch

from tests.integration.helpers import SMOKE, alive, checkpoints, children, run, start, wait_for

ENDLESS = ("data.total_env_steps=100000", "trainer.max_steps=100000")


def workers_of(process: subprocess.Popen) -> list[int]:
    # The spawn start method adds a resource tracker; the workers are the other children.
    assert wait_for(lambda: len(children(process.pid)) >= 3, 60), "workers did not start"
    return children(process.pid)


def test_a_killed_worker_with_no_restarts_left_stops_the_run_within_seconds(tmp_path):
    """With restarts allowed it is restarted instead (test_worker_faults)."""
    process = start("train", tmp_path, *SMOKE, *ENDLESS, "data.max_worker_restarts=0")
    try:
        pids = workers_of(process)
        time.sleep(5)
        killed_at = time.monotonic()
        for pid in pids:
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text() and alive(pid):
                os.kill(pid, signal.SIGKILL)
                break
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1
    assert time.monotonic() - killed_at < 30
    assert "died" in stderr and "exit code -9" in stderr


def test_sigkill_of_the_learner_leaves_a_resumable_checkpoint_and_no_orphans(tmp_path):
    long_run = (*ENDLESS, "trainer.limit_train_batches=10")
    process = start("train", tmp_path, *SMOKE, *long_run, output=False)
    pids = workers_of(process)
    assert wait_for(lambda: any(p.name == "last.ckpt" for p in checkpoints(tmp_path)), 120)
    time.sleep(1)
    process.kill()
    process.wait(10)
    assert wait_for(lambda: not any(alive(pid) for pid in pids), 15), "workers outlived the learner"
    last = next(p for p in checkpoints(tmp_path) if p.name == "last.ckpt")
    step = torch.load(last, weights_only=False)["global_step"]
    resumed = run(
        "train", tmp_path, *SMOKE, *long_run[:1], f"trainer.max_steps={step + 10}", f"ckpt_path={last}"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_ctrl_c_writes_a_checkpoint_and_leaves_no_worker_behind(tmp_path):
    """Resuming from it is test_interruptions' job; here: exit 0 and every worker process gone."""
    process = start("train", tmp_path, *SMOKE, *ENDLESS)
    pids = workers_of(process)
    time.sleep(8)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 0
    interrupted = [p for p in checkpoints(tmp_path) if p.name == "interrupted.ckpt"]
    assert interrupted, "no checkpoint after Ctrl-C"
    assert "global_step" in torch.load(interrupted[0], weights_only=False)
    assert wait_for(lambda: not any(alive(pid) for pid in pids), 15)
