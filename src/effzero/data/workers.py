"""Worker processes: start them, notice when one dies, stop them all."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp

CONTEXT = mp.get_context("spawn")  # no fork: the learner holds threads (OpenMP, MLflow)


class WorkerDied(RuntimeError):
    """A worker process ended with an error; the message carries its traceback."""


def _exit_with_parent() -> None:
    """End this process if the learner that started it is gone (killed, crashed)."""
    parent = mp.parent_process()
    while parent is not None and parent.is_alive():
        time.sleep(1.0)
    os._exit(1)


def _worker_entry(name: str, target: Callable[[Any], None], job: Any, threads: int, errors: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    try:
        target(job)
    except BaseException:
        errors.put((name, traceback.format_exc()))
        raise SystemExit(1) from None


class WorkerSet:
    """The worker processes of one rank."""

    def __init__(self) -> None:
        self.errors = CONTEXT.Queue()
        self.processes: dict[str, mp.Process] = {}

    def start(self, name: str, target: Callable[[Any], None], job: Any, threads: int) -> None:
        process = CONTEXT.Process(
            target=_worker_entry, args=(name, target, job, threads, self.errors), name=name, daemon=True
        )
        process.start()
        self.processes[name] = process

    def check(self) -> None:
        """Raise `WorkerDied` with the worker's traceback if any worker failed."""
        try:
            name, trace = self.errors.get_nowait()
        except queue.Empty:
            name = next((n for n, p in self.processes.items() if p.exitcode not in (None, 0)), None)
            if name is None:
                return
            trace = f"(no traceback: exit code {self.processes[name].exitcode}, e.g. killed by a signal)"
        raise WorkerDied(f"worker {name!r} died; the run stops.\n--- its traceback ---\n{trace}")

    def stop(self, timeout: float = 10.0) -> None:
        """Join every worker (the caller has set the stop flag); terminate stragglers."""
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()
                process.join(1.0)
        self.processes.clear()
