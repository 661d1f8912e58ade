"""Run the real entry points in subprocesses, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ("experiment=cartpole", "debug=smoke", "trainer.enable_progress_bar=false")


def command(script: str, log_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, f"src/{script}.py", f"paths.log_dir={log_dir}", *overrides]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)  # so workers can import tests.faults
    env.pop("EFFZERO_DEBUG", None)
    return env


def run(script: str, log_dir: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(script, log_dir, *overrides),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(),
    )


def checkpoints(log_dir: Path, task: str = "debug") -> list[Path]:
    return sorted(log_dir.glob(f"{task}/runs/*/checkpoints/*.ckpt"))


def mlflow_runs(log_dir: Path, experiment: str = "cartpole"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{log_dir}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} in {log_dir}"
    return client, client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def start(
    script: str, log_dir: Path, *overrides: str, output: bool = True, own_group: bool = False
) -> subprocess.Popen:
    """Start an entry point in the background (for tests that signal or kill it).

    own_group: in a process group of its own, as a terminal or a scheduler starts a job, so
    that `os.killpg(process.pid, ...)` reaches the run's every process.
    """
    stream = subprocess.PIPE if output else subprocess.DEVNULL
    return subprocess.Popen(
        command(script, log_dir, *overrides),
        cwd=ROOT,
        env=environment(),
        stdout=stream,
        stderr=stream,
        text=True,
        start_new_session=own_group,
    )


def wait_for(condition: Callable[[], T], timeout: float, poll: float = 0.2) -> T | None:
    """Poll `condition` until it returns something truthy (returned) or `timeout` s pass (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(poll)
    return None


def children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
