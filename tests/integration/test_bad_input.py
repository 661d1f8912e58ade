"""Bad input ends with one clear message: the cause and the fix, no traceback wall, exit code 1, no hang.

One test per row of the README's "When something goes wrong" table.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.helpers import SMOKE, checkpoints, run, start


def assert_one_clear_message(result: subprocess.CompletedProcess, *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    for text in expected:
        assert text in output, output[-3000:]
    assert "Traceback (most recent call last)" not in output


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("env.id=CartPol-v1",), "Close matches: CartPole-v1"),
        (("experiment=atari_breakout", "env.game=breakoutt"), "unknown Atari game 'breakoutt'"),
        (("experiment=dmc_walker", "env.domain=walkr"), "unknown DMC domain 'walkr'"),
        (("experiment=dmc_walker", "env.task=wlk"), "unknown DMC task 'wlk' for domain 'walker'"),
        (("data.batch_size=abc",), "data.batch_size"),
        (("data.batchsize=64",), "batchsize"),
        (("env=atarii",), "env"),
        (("ckpt_path=/nonexistent/last.ckpt",), "does not exist"),
        (("optim.name=adagrad",), "expected one of [adam, adamw, sgd]"),
        (("search.num_simulation=3",), "Did you mean search.num_simulations?"),
        (("seedd=1",), "the train config has no setting 'seedd'. Did you mean seed?"),
        (("algo=muzeroo",), "Could not find 'algo/muzeroo'"),
        (("algo=muzero", "search.compile=true"), "search.compile=true needs search.kind=gumbel"),
        (("env.value_bounds=[1,0]",), "must be [low, high] with low < high, e.g. env.value_bounds=[0,1e5]"),
        (("data.reanalyse_workers=0",), "data.reanalyse_workers=0 must be at least 1"),
        (("eval.episodes=0",), "eval.episodes=0 must be at least 1"),
    ],
)
def test_bad_input_gets_one_clear_message(tmp_path, overrides, expected):
    result = run("train", tmp_path, *SMOKE, *overrides, timeout=120)
    assert_one_clear_message(result, expected)


def test_an_unwritable_log_dir_is_named(tmp_path):
    (tmp_path / "file").write_text("a file where the log directory should be")
    result = run("train", tmp_path / "file" / "logs", *SMOKE, timeout=120)
    assert_one_clear_message(result, "cannot write the log directory", "paths.log_dir=")


# ------------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """last.ckpt of a short smoke run (shared: the tests below only read it)."""
    log_dir = tmp_path_factory.mktemp("trained")
    result = run("train", log_dir, *SMOKE, "trainer.max_steps=10")
    assert result.returncode == 0, result.stderr[-3000:]
    return next(p for p in checkpoints(log_dir) if p.name == "last.ckpt")


def damaged_copy(checkpoint: Path, directory: Path, how: str) -> Path:
    """A copy of `checkpoint` cut in half, or with bytes flipped in the middle, beside a good one."""
    data = bytearray(checkpoint.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    shutil.copy(checkpoint, directory / "last.ckpt")
    damaged = directory / "step_0000010.ckpt"
    damaged.write_bytes(bytes(data))
    return damaged


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
@pytest.mark.parametrize("script", ["train", "eval"])
def test_a_damaged_checkpoint_is_refused_with_the_alternatives(tmp_path, trained, script, how):
    damaged = damaged_copy(trained, tmp_path, how)
    overrides = (*SMOKE, f"ckpt_path={damaged}") if script == "train" else (f"ckpt_path={damaged}",)
    result = run(script, tmp_path / "logs", *overrides, timeout=120)
    assert_one_clear_message(result, f"cannot load checkpoint {damaged}", "last.ckpt")


def test_a_checkpoint_of_another_config_names_the_differences(tmp_path, trained):
    result = run("train", tmp_path, *SMOKE, "model.hidden=32", f"ckpt_path={trained}", timeout=120)
    assert_one_clear_message(result, "other model settings", "model.hidden")


# ------------------------------------------------------------------ MLflow


def lock_database(path: Path) -> sqlite3.Connection:
    """Create an MLflow store at `path` and hold SQLite's exclusive lock on it (as a stuck writer would)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{path}").search_experiments()
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("BEGIN EXCLUSIVE")
    return connection


def test_a_locked_mlflow_database_is_waited_for_then_named(tmp_path):
    connection = lock_database(tmp_path / "mlflow.db")
    try:
        started = time.monotonic()
        result = run("train", tmp_path, *SMOKE, "tracking_wait_s=5", timeout=120)
    finally:
        connection.close()
    assert_one_clear_message(result, "the MLflow database is locked", "logger.mlflow.tracking_uri=")
    assert time.monotonic() - started < 90


def test_a_briefly_locked_mlflow_database_only_delays_the_run(tmp_path):
    connection = lock_database(tmp_path / "mlflow.db")
    process = start("train", tmp_path, *SMOKE, "trainer.max_steps=5")
    try:
        deadline, waited = time.monotonic() + 180, False
        while not waited and time.monotonic() < deadline:
            line = process.stdout.readline()
            waited = "MLflow database is locked by another process; retrying" in line
            if not line and process.poll() is not None:
                break
        connection.close()  # the other writer finishes
        _, stderr = process.communicate(timeout=300)
    finally:
        connection.close()
        process.kill()
    assert waited, "the run did not wait for the lock"
    assert process.returncode == 0, stderr[-3000:]
