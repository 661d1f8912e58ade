"""Supervision of one rank's workers: restart a worker that dies or hangs, a few times per run."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch.multiprocessing as mp

from effzero.data.workers import Heartbeat, WorkerDied, WorkerStatus, run_directory, start_worker

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """A worker process the supervisor keeps running."""

    name: str
    target: Callable[[Any], None]
    make_job: Callable[[int, Heartbeat], Any]  # (incarnation, heartbeat) -> the job to run
    # Repairs what a dead incarnation left half-done; returns what it did, for the log.
    recover: Callable[[], str] | None = None
    incarnation: int = 0
    process: mp.Process | None = None


class Supervisor:
    """Starts the workers and, on every `check()`, restarts those that died or hung.

    A worker died if its process ended with an error (its traceback is in `status`) or a
    signal; it hung if its last heartbeat is older than `timeout_s` (before its first one,
    while Python and torch start, `max(timeout_s, STARTUP_S)`): it is then made to write its
    threads' stacks and killed. Either way the cause is logged as a warning,
    `Worker.recover` repairs what it left half-done, and a new incarnation starts (a new seed,
    the current weights). `max_restarts` restarts are allowed per run, all workers together;
    the next failure stops every worker and raises `WorkerDied` with the worker's traceback.

    `check()` runs in the learner's main thread, from the pipeline's waits: a learner busy
    elsewhere (evaluation, checkpoints) restarts late, never wrongly, since heartbeats are the
    workers' own.
    """

    CHECK_EVERY_S = 0.1
    STARTUP_S = 60.0  # a new process importing torch on a loaded machine, before its first heartbeat
    STACK_WAIT_S = 2.0  # for a hung worker to write its stacks before it is killed

    def __init__(
        self,
        workers: list[Worker],
        max_restarts: int,
        timeout_s: float,
        threads: int,
        request_stop: Callable[[], None],
    ):
        self.workers, self.request_stop = workers, request_stop
        self.status = WorkerStatus(len(workers))
        self.max_restarts, self.timeout_s, self.threads = max_restarts, timeout_s, threads
        self.restarts = 0  # this run's restarts so far, all workers together
        self.directory: str | None = None  # the run's stack files; set while started
        self._launched = [0.0] * len(workers)  # when each worker's incarnation was started
        self._next_check = 0.0

    @property
    def started(self) -> bool:
        return self.directory is not None

    def start(self) -> None:
        self.directory = run_directory()
        for index in range(len(self.workers)):
            self._launch(index)

    def finished(self, index: int) -> bool:
        """Whether worker `index` ended by itself, without an error (self-play after its budget)."""
        process = self.workers[index].process
        return process is not None and process.exitcode == 0

    def check(self) -> None:
        """Restart every worker that died or hung since the last check (at most every 0.1 s)."""
        now = time.monotonic()
        if not self.started or now < self._next_check:
            return
        self._next_check = now + self.CHECK_EVERY_S
        for index in range(len(self.workers)):
            cause = self._failure(index, now)
            if cause is not None:
                self._replace(index, *cause)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the workers to stop and join them; kill stragglers (they ignore SIGTERM)."""
        if not self.started:
            return
        self.request_stop()
        processes = [w.process for w in self.workers if w.process is not None]
        deadline = time.monotonic() + timeout
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(2.0)
        for worker in self.workers:
            worker.process = None
        for name in os.listdir(self.directory):
            os.unlink(os.path.join(self.directory, name))
        os.rmdir(self.directory)
        self.directory = None

    # ------------------------------------------------------------------ failures

    def _launch(self, index: int) -> None:
        worker = self.workers[index]
        self.status.reset(index)
        self._launched[index] = time.monotonic()
        job = worker.make_job(worker.incarnation, self.status.heartbeat(index))
        worker.process = start_worker(
            worker.name, worker.target, job, self.threads, self.status, index, self._stack_path(index)
        )

    def _stack_path(self, index: int) -> str:
        worker = self.workers[index]
        return os.path.join(self.directory, f"{worker.name}.{worker.incarnation}.stacks")

    def _failure(self, index: int, now: float) -> tuple[str, str] | None:
        """(what happened, its traceback) if worker `index` died or hung; None if it is fine."""
        process = self.workers[index].process
        trace = self.status.traceback(index)
        if trace is not None and process.exitcode is None:  # failed, and its exit lingers: end it
            process.kill()
            process.join(10.0)
        code = process.exitcode
        if code == 0:
            return None
        if code is not None:
            if trace is None:
                how = (
                    f", killed by {signal.Signals(-code).name}"
                    if code < 0
                    else "; it failed while starting, its error is in the output above"
                )
                trace = f"(no traceback: exit code {code}{how})"
            return "died", trace
        last = self.status.last_beat(index)
        if last > 0:  # inf once done: its exit is under way
            silent, limit = now - last, self.timeout_s
        else:  # still starting
            silent, limit = now - self._launched[index], max(self.timeout_s, self.STARTUP_S)
        if silent <= limit:
            return None
        stacks = self._kill_hung(index)
        return "hung", (
            f"no heartbeat for {silent:.0f} s (data.worker_timeout_s={self.timeout_s:g}); killed. "
            f"Its threads were at:\n{stacks}"
        )

    def _kill_hung(self, index: int) -> str:
        process, path = self.workers[index].process, self._stack_path(index)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGUSR1)  # faulthandler writes every thread's stack
        deadline = time.monotonic() + self.STACK_WAIT_S
        while os.path.getsize(path) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)  # let it finish writing
        process.kill()
        process.join(10.0)
        if process.exitcode is None:
            raise WorkerDied(
                f"worker {self.workers[index].name!r} hung and could not be killed (pid {process.pid})"
            )
        with open(path) as stacks:
            return stacks.read().strip() or "(it wrote no stacks)"

    def _replace(self, index: int, what: str, trace: str) -> None:
        worker = self.workers[index]
        if self.restarts >= self.max_restarts:
            self.stop()
            raise WorkerDied(
                f"worker {worker.name!r} {what}; the run stops ({self.restarts} restart(s) used, "
                f"data.max_worker_restarts={self.max_restarts}).\n--- its traceback ---\n{trace}"
            )
        with _signals_deferred():  # a stop signal must not leave a half-repaired replay or worker
            self.restarts += 1
            worker.process.close()
            with contextlib.suppress(FileNotFoundError):  # it may have died before opening it
                os.unlink(self._stack_path(index))
            repaired = worker.recover() if worker.recover is not None else ""
            log.warning(
                "worker %r %s; restarting it (restart %d of data.max_worker_restarts=%d)%s\n--- its traceback ---\n%s",
                worker.name,
                what,
                self.restarts,
                self.max_restarts,
                f"; {repaired}" if repaired else "",
                trace,
            )
            worker.incarnation += 1
            self._launch(index)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGALRM until the block has run.

    The learner's stop handler may raise at any instruction while the pipeline waits for data,
    and a checkpoint follows. (A worker started inside inherits the mask; it clears it.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGALRM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
