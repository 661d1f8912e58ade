"""Runs started in the same second get a directory each, never one between them."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
from pathlib import Path

from hydra import compose, initialize_config_dir

from effzero.cli import claim_dir, register_resolvers
from effzero.config import register_schemas
from tests.integration.helpers import ROOT, command, environment

PROCESSES = 4
register_schemas()
register_resolvers()


def claim_together(path: str, barrier, claims) -> None:
    barrier.wait()
    claims.put(claim_dir(path))


def test_processes_claiming_one_directory_each_get_their_own(tmp_path):
    path = str(tmp_path / "runs" / "2026-11-22_12-00-00")
    context = mp.get_context("fork")
    barrier, claims = context.Barrier(PROCESSES), context.Queue()
    processes = [
        context.Process(target=claim_together, args=(path, barrier, claims)) for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    got = sorted(claims.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert got == sorted([path, f"{path}_2", f"{path}_3", f"{path}_4"])


def test_a_process_asking_again_gets_its_own_claim_back(tmp_path):
    path = str(tmp_path / "run")
    (tmp_path / "run").mkdir()  # another run's
    assert claim_dir(path) == claim_dir(path) == f"{path}_2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run_2"]


def test_a_trailing_slash_claims_the_same_directory(tmp_path):
    (tmp_path / "run").mkdir()  # another run's
    assert claim_dir(f"{tmp_path / 'run'}/") == str(tmp_path / "run_2")


def test_entry_points_started_together_write_to_directories_of_their_own(tmp_path):
    # The same directory for both whatever the second they start in, as runs in one second get;
    # compare.py stops in seconds (no such experiment) after Hydra has made its run directory.
    same = f"hydra.run.dir=${{claim_dir:{tmp_path / 'runs' / 'same'}}}"
    started = [
        subprocess.Popen(
            command("compare", tmp_path, "experiments=none", "mlflow=false", same),
            cwd=ROOT,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    for process in started:
        process.wait(timeout=120)
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["same", "same_2"]
    assert all((tmp_path / "runs" / run / "compare.log").exists() for run in runs)


def test_the_default_run_directory_is_claimed_once(tmp_path):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.log_dir={tmp_path}"], return_hydra_config=True)
    run_dir = Path(cfg.hydra.run.dir)
    assert run_dir.is_dir() and run_dir.parent == tmp_path / "train" / "runs"  # made by resolving it
    assert Path(cfg.hydra.run.dir) == run_dir
    assert list(run_dir.parent.iterdir()) == [run_dir]
