"""Opening a SQLite MLflow store from many processes at once.

MLflow builds a new store's tables and runs its schema migrations on first use, unlocked:
processes that open a fresh store at the same moment (a sweep's parallel runs, DDP ranks, two
terminals) fail with "table ... already exists" and can leave it half-migrated, unusable by any
later run. `prepare_store` lets one process at a time do that first open.
"""

from __future__ import annotations

import fcntl
import logging
import time
from pathlib import Path

LOCK_POLL_S = 0.2
log = logging.getLogger(__name__)


def prepare_store(tracking_uri: str, wait_s: float = 60.0) -> None:
    """Open the store at `tracking_uri` once, creating or upgrading it, while holding `<db>.lock`.

    The first process to take the lock does the work; the others then find the store ready.
    Stores other than SQLite files (a tracking server, file stores, SQLite `file:` URIs) are left
    to MLflow, and so is a store whose folder this process cannot write (read by compare.py, say).
    """
    path = tracking_uri.removeprefix("sqlite:///").split("?")[0]
    if not tracking_uri.startswith("sqlite:///") or path in ("", ":memory:") or path.startswith("file:"):
        return
    database = Path(path)
    lock_path = database.with_name(database.name + ".lock")
    try:
        database.parent.mkdir(parents=True, exist_ok=True)  # as MLflow would
        lock = open(lock_path, "a")  # noqa: SIM115 (closing it releases the lock)
    except OSError as error:
        if not database.exists():
            log.warning("cannot create %s (%s); creating the MLflow store unlocked", lock_path, error)
        return
    deadline = time.monotonic() + wait_s
    with lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another process has held {lock_path} for over {wait_s:.0f} s while opening the "
                        f"MLflow store {database}. Find it with `fuser {lock_path}` and end it, or give this "
                        "run its own store: logger.mlflow.tracking_uri=sqlite:///<other>.db (eval: "
                        "tracking_uri=...), or logger=none"
                    ) from None
                time.sleep(LOCK_POLL_S)
            except OSError as error:  # a file system without flock (Lustre mounted without it)
                log.warning("cannot lock %s (%s); opening the MLflow store unlocked", lock_path, error)
                break
        # Imported here: the bench scripts import the training module on machines without MLflow.
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri).search_experiments(max_results=1)  # creates or migrates the tables
