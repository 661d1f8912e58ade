"""The supervisor: crashed and hung workers restarted within a budget, run leftovers removed.

Real spawned processes with small stand-in targets: the model is beside the point here.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
import torch.multiprocessing as mp

from effzero.data.supervisor import Supervisor, Worker
from effzero.data.workers import PREFIX, WorkerDied, remove_leftovers

SPAWN = mp.get_context("spawn")


def _runs(job: tuple) -> None:
    """Beats until asked to stop."""
    _, stop, beat = job
    while not stop[0]:
        beat()
        time.sleep(0.01)


def _flaky(job: tuple) -> None:
    """Fails in its first incarnation; later ones run until asked to stop."""
    if job[0] == 0:
        raise RuntimeError("injected: first incarnation fails")
    _runs(job)


def _hangs(job: tuple) -> None:
    """Hangs (asleep, silent) in its first incarnation; later ones run until asked to stop."""
    if job[0] == 0:
        time.sleep(3600)
    _runs(job)


def _compiles(job: tuple) -> None:
    """Beats once, then spends 3 s (the test's timeout is 1 s) in a call known to be long."""
    beat = job[2]
    beat()
    with beat.compiling(period_s=0.1):
        time.sleep(3.0)
    _runs(job)


def _always_fails(job: tuple) -> None:
    raise ValueError("injected: always fails")


def _finishes(job: tuple) -> None:
    return None


def supervise(
    *targets, max_restarts: int = 2, timeout_s: float = 2.0
) -> tuple[Supervisor, torch.Tensor, list]:
    stop = torch.zeros(1, dtype=torch.bool).share_memory_()
    repairs: list[int] = []
    workers = [
        Worker(
            f"w{i}",
            target,
            lambda incarnation, beat: (incarnation, stop, beat),
            lambda i=i: repairs.append(i) or f"repaired {i}",
        )
        for i, target in enumerate(targets)
    ]
    supervisor = Supervisor(
        workers, max_restarts, timeout_s, threads=1, request_stop=lambda: stop.fill_(True)
    )
    return supervisor, stop, repairs


def check_until(supervisor: Supervisor, condition, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor.check()
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_crashed_worker_is_repaired_and_restarted_with_its_cause_logged(caplog):
    supervisor, _, repairs = supervise(_flaky, _finishes)
    supervisor.start()
    try:
        assert check_until(
            supervisor, lambda: supervisor.restarts == 1 and supervisor.status.last_beat(0) > 0
        )
        assert repairs == [0] and supervisor.workers[0].incarnation == 1
        assert supervisor.finished(1)  # a worker that ends by itself is not restarted
        warning = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        assert "worker 'w0' died; restarting it (restart 1 of" in warning
        assert "repaired 0" in warning and "injected: first incarnation fails" in warning
        time.sleep(0.5)
        supervisor.check()
        assert supervisor.restarts == 1
    finally:
        supervisor.stop()
    assert supervisor.directory is None


def test_stop_signals_to_every_process_leave_the_workers_to_the_learner():
    # Ctrl-C in a terminal and a scheduler's SIGTERM reach the workers too; the learner decides.
    supervisor, _, repairs = supervise(_runs)
    supervisor.start()
    process = supervisor.workers[0].process
    try:
        assert check_until(supervisor, lambda: supervisor.status.last_beat(0) > 0)
        for signum in (signal.SIGINT, signal.SIGTERM):
            os.kill(process.pid, signum)
        time.sleep(1.0)
        supervisor.check()
        assert process.is_alive() and supervisor.restarts == 0 and repairs == []
    finally:
        supervisor.stop()
    assert process.exitcode == 0  # stopped when asked, not by a signal


def test_failures_past_the_restart_budget_stop_every_worker_with_the_traceback():
    supervisor, stop, _ = supervise(_always_fails, _runs, max_restarts=1)
    supervisor.start()
    other = supervisor.workers[1].process
    with pytest.raises(WorkerDied) as raised:
        check_until(supervisor, lambda: False)
    message = str(raised.value)
    assert "worker 'w0' died; the run stops (1 restart(s) used, data.max_worker_restarts=1)" in message
    assert "ValueError: injected: always fails" in message
    assert bool(stop[0]) and not other.is_alive()
    assert supervisor.directory is None


def test_a_hung_worker_is_killed_within_its_timeout_with_its_stacks_and_restarted(caplog):
    supervisor, _, repairs = supervise(_hangs, timeout_s=2.0)
    supervisor.start()
    try:
        assert check_until(supervisor, lambda: supervisor.status.last_beat(0) > 0, timeout=60)
        began = time.monotonic()
        assert check_until(supervisor, lambda: supervisor.restarts == 1, timeout=30)
        assert time.monotonic() - began < 2.0 + supervisor.STACK_WAIT_S + 2.0
        assert repairs == [0]
        warning = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        assert "worker 'w0' hung; restarting it" in warning and "data.worker_timeout_s=2" in warning
        assert "in _hangs" in warning  # faulthandler's stack of the stuck thread
        assert check_until(supervisor, lambda: supervisor.status.last_beat(0) > 0, timeout=60)
    finally:
        supervisor.stop()


def test_a_compiling_worker_is_not_taken_for_hung():
    supervisor, _, _ = supervise(_compiles, timeout_s=1.0)
    supervisor.start()
    try:
        assert check_until(supervisor, supervisor.status.any_compiling, timeout=60)
        began = time.monotonic()
        assert check_until(supervisor, lambda: not supervisor.status.any_compiling(), timeout=30)
        assert time.monotonic() - began > 2.0  # silent in its loop for longer than the timeout
        time.sleep(0.5)
        supervisor.check()
        assert supervisor.restarts == 0 and supervisor.workers[0].incarnation == 0
    finally:
        supervisor.stop()


def test_leftovers_of_dead_runs_are_removed_and_live_runs_kept(tmp_path):
    dead = SPAWN.Process(target=_finishes, args=(None,))
    dead.start()
    dead.join()
    (tmp_path / f"{PREFIX}{dead.pid}-abc").mkdir()
    (tmp_path / f"{PREFIX}{dead.pid}-abc" / "w.0.stacks").write_text("")
    (tmp_path / f"{PREFIX}{os.getpid()}-def").mkdir()
    (tmp_path / "sem.mp-other").write_text("")  # not ours: never touched
    assert remove_leftovers(str(tmp_path)) == [f"{PREFIX}{dead.pid}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{PREFIX}{os.getpid()}-def", "sem.mp-other"]
