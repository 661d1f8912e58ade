"""Processes that open one fresh SQLite MLflow store at the same moment all get a working store."""

from __future__ import annotations

import errno
import fcntl
import multiprocessing as mp

import pytest
from mlflow.tracking import MlflowClient

from effzero.mlflow_store import prepare_store

PROCESSES = 4


def open_and_log(uri: str, barrier, index: int) -> None:
    barrier.wait()  # all open the store together, as a sweep's parallel runs do
    prepare_store(uri, wait_s=120)
    client = MlflowClient(uri)
    experiment = client.create_experiment(f"run-{index}")
    client.log_metric(client.create_run(experiment).info.run_id, "x", float(index))


def test_processes_opening_a_fresh_store_together_all_succeed(tmp_path):
    # Without the lock, 11 of 12 such openings failed ("table ... already exists", "duplicate
    # column") and two of three stores were left half-migrated, refusing every later run.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = mp.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    processes = [context.Process(target=open_and_log, args=(uri, barrier, i)) for i in range(PROCESSES)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
    assert [p.exitcode for p in processes] == [0] * PROCESSES
    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert names >= {f"run-{i}" for i in range(PROCESSES)}


def test_a_store_held_by_a_stuck_creator_is_named_after_the_wait(tmp_path):
    database = tmp_path / "mlflow.db"
    with open(tmp_path / "mlflow.db.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(TimeoutError, match=r"fuser .*mlflow\.db\.lock.*tracking_uri="):
            prepare_store(f"sqlite:///{database}", wait_s=0.5)
    assert not database.exists()  # nothing touched while another process creates it


def test_a_file_system_without_flock_opens_the_store_unlocked(tmp_path, monkeypatch, caplog):
    def no_flock(fd, operation):  # as Lustre mounted without flock answers
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepare_store(uri, wait_s=1)
    assert "opening the MLflow store unlocked" in caplog.text
    assert MlflowClient(uri).get_experiment_by_name("Default") is not None  # created all the same


def test_a_store_in_a_folder_not_made_yet_is_created_there(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'folder' / 'mlflow.db'}"  # MLflow makes the folder itself
    prepare_store(uri, wait_s=1)
    assert MlflowClient(uri).get_experiment_by_name("Default") is not None


@pytest.mark.parametrize(
    "uri", ["sqlite:///", "sqlite:///:memory:", "http://localhost:5000", "file:///tmp/x"]
)
def test_stores_that_are_no_sqlite_file_are_left_to_mlflow(uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepare_store(uri, wait_s=1)  # no lock file, no connection
    assert list(tmp_path.iterdir()) == []
