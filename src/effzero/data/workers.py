"""Worker processes: start them so that they die with the learner, and what they share with it.

Each worker has a row in `WorkerStatus` (shared memory): a heartbeat it refreshes in its loops
and its traceback if it fails. On SIGUSR1 a worker writes the stacks of its threads to a file
(faulthandler), so that the supervisor can say where a hung worker was stuck.

A run's named files (those stack files) live in a directory `effzero-<pid>-*` under /dev/shm.
A run killed with SIGKILL cannot remove its own, so every start removes those whose owner is
gone. The rest of the shared memory needs no names: torch shares tensors through descriptors
of segments unlinked at creation (the kernel frees them with the last process that maps
them), and nothing here creates a named semaphore.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import Tensor

CONTEXT = mp.get_context("spawn")  # no fork: the learner holds threads (OpenMP, MLflow)
SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
PREFIX = "effzero-"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class WorkerDied(RuntimeError):
    """A worker process failed for good; the message carries its traceback."""


class Heartbeat:
    """Calling it records that the worker is alive: a timestamp in shared memory (~1 µs)."""

    def __init__(self, beats: Tensor, index: int, compiling: Tensor):
        self.beats, self.index, self.flags = beats, index, compiling

    def __call__(self) -> None:
        self.beats[self.index] = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process

    @contextlib.contextmanager
    def compiling(self, period_s: float = 1.0) -> Iterator[None]:
        """While the body runs, beat from a thread and flag the worker as compiling.

        A worker's first compiled search (`search.compile=true`) runs for minutes without
        coming back to its loop: that is work, not a hang, and the learner does not count it
        against `data.batch_timeout_s` either.
        """
        done = threading.Event()

        def beat_until_done() -> None:
            while not done.wait(period_s):
                self()

        thread = threading.Thread(target=beat_until_done, name="heartbeat", daemon=True)
        self.flags[self.index] = True
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self.flags[self.index] = False
            self()


class WorkerStatus:
    """Per worker: the time of its last heartbeat, whether it is compiling, and the traceback it failed with."""

    TRACE_BYTES = 16384  # the end of a longer traceback is kept: the error is at its end

    def __init__(self, workers: int):
        self.beats = torch.zeros(workers, dtype=torch.float64).share_memory_()
        self.compiling = torch.zeros(workers, dtype=torch.bool).share_memory_()
        self.trace = torch.zeros(workers, self.TRACE_BYTES, dtype=torch.uint8).share_memory_()
        self.trace_length = torch.zeros(workers, dtype=torch.int64).share_memory_()

    @classmethod
    def nbytes_for(cls, workers: int) -> int:
        return workers * (8 + 1 + cls.TRACE_BYTES + 8)

    def heartbeat(self, index: int) -> Heartbeat:
        return Heartbeat(self.beats, index, self.compiling)

    def any_compiling(self) -> bool:
        return bool(self.compiling.any())

    def last_beat(self, index: int) -> float:
        """`time.monotonic()` of the worker's last heartbeat; 0 before its first, inf once it is done."""
        return float(self.beats[index])

    def reset(self, index: int) -> None:
        """Before (re)starting a worker: no heartbeat yet, not compiling, no traceback."""
        self.beats[index] = 0.0
        self.compiling[index] = False
        self.trace_length[index] = 0

    def set_traceback(self, index: int, text: str) -> None:
        data = text.encode()[-self.TRACE_BYTES :]
        self.trace[index, : len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        self.trace_length[index] = len(data)  # last: a reader sees a whole traceback or none

    def traceback(self, index: int) -> str | None:
        length = int(self.trace_length[index])
        if length == 0:
            return None
        return bytes(self.trace[index, :length].tolist()).decode(errors="replace")


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when the learner ends, however it ends.

    Linux's parent-death signal works even while this process hangs with the GIL held; it
    fires when the learner's thread that started this process ends, so workers are started
    from the learner's main thread. Elsewhere a thread polls for the learner.
    """
    try:
        armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    except (OSError, AttributeError):
        armed = False
    if not armed:
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    elif os.getppid() != parent:  # the learner ended before the signal was armed
        os._exit(1)


def _worker_entry(
    target: Callable[[Any], None],
    job: Any,
    threads: int,
    status: WorkerStatus,
    index: int,
    stack_path: str,
    parent: int,
) -> None:
    # Ctrl-C and a scheduler's SIGTERM reach every process of the run; stopping is the
    # learner's to do: it asks its workers to stop (and SIGKILL follows it, see below). Ignored
    # before the mask the supervisor may have held is cleared, one pending is discarded. (One
    # that arrives while the interpreter starts, before this, still ends the worker.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    _die_with_parent(parent)
    torch.set_num_threads(threads)
    with open(stack_path, "w") as stacks:
        faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
        status.heartbeat(index)()
        try:
            target(job)
        except BaseException:
            status.set_traceback(index, traceback.format_exc())
            raise SystemExit(1) from None
        status.beats[index] = math.inf  # done: the interpreter's exit, however slow, is not a hang


def start_worker(
    name: str,
    target: Callable[[Any], None],
    job: Any,
    threads: int,
    status: WorkerStatus,
    index: int,
    stack_path: str,
) -> mp.Process:
    """Start `target(job)` in a new process that reports to row `index` of `status`."""
    process = CONTEXT.Process(
        target=_worker_entry,
        args=(target, job, threads, status, index, stack_path, os.getpid()),
        name=name,
        daemon=True,
    )
    with _main_script_hidden():
        process.start()
    return process


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Keep spawn from re-running the learner's main script in the new process.

    Spawn runs it so that objects pickled from `__main__` can be found; workers' jobs hold
    none, and the script's imports (Lightning, MLflow, Hydra for src/train.py) would triple
    a worker's start, which every restart waits for.
    """
    main = sys.modules["__main__"]
    spec, path = getattr(main, "__spec__", None), getattr(main, "__file__", None)
    main.__spec__ = None  # spawn reads both: a module name, else a path
    if path is not None:
        del main.__file__
    try:
        yield
    finally:
        main.__spec__ = spec
        if path is not None:
            main.__file__ = path


def run_directory() -> str:
    """A new directory for this process's named files, after removing dead runs' leftovers."""
    remove_leftovers()
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=SHM_DIR)


def remove_leftovers(directory: str = SHM_DIR) -> list[str]:
    """Remove the `effzero-<pid>-*` entries of `directory` whose process is gone; return their names."""
    removed = []
    for entry in sorted(os.listdir(directory)):
        match = re.match(rf"{PREFIX}(\d+)-", entry)
        if match is None or _alive(int(match[1])):
            continue
        path = os.path.join(directory, entry)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):  # another start removed it first
                os.unlink(path)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
