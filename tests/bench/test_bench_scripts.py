"""Every benchmark runs with --quick and prints its machine line and its figures.

The five scripts start at once (they spend most of their time importing and spawning
workers), so the module takes about as long as the slowest one, e2e.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# script -> what its figure line must hold
FIGURES = {
    "search": r"^effzero B=16 N=16 .*sims_per_s=\d+ .*search/model=[\d.]+",
    "learner": r"^learner config=cartpole B=16 .*updates_per_s=[\d.]+ .*learner_bound_wall=",
    "selfplay": r"^selfplay config=cartpole .*env_steps_per_s=[\d.]+ .*selfplay_bound_wall=",
    "reanalyse": r"^reanalyse config=cartpole B=16 .*samples_per_s=[\d.]+ .*reanalyse_bound_wall=",
    "e2e": r"^e2e config=cartpole .*updates_per_s=[\d.]+ .*learner_step=\d+% wait_selfplay=\d+% "
    r"wait_reanalyse=\d+% other=\d+%",
}


@pytest.fixture(scope="module")
def outputs() -> dict[str, subprocess.CompletedProcess]:
    procs = {
        name: subprocess.Popen(
            [sys.executable, f"bench/{name}.py", "--quick", "--device", "cpu"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in FIGURES
    }
    results = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for other in procs.values():
                other.kill()
            raise
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return results


@pytest.mark.parametrize("name", list(FIGURES))
def test_bench_script_prints_machine_and_figures(outputs, name):
    result = outputs[name]
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^# machine: .+, \d+ cores, .*torch [\w.+]+, .*device cpu", result.stdout, re.M)
    assert re.search(FIGURES[name], result.stdout, re.M), result.stdout[-3000:]
    if name != "e2e":  # e2e's figures are the projection's own line
        return
    assert re.search(r"^projection config=cartpole full_run_updates=\d+ full_run_wall=", result.stdout, re.M)


def test_the_component_scripts_need_no_mlflow():
    # The GPU machines they are run on may lack MLflow (only e2e.py trains with a logger).
    code = (
        "import importlib, sys; sys.path[:0] = ['bench', '.']\n"
        "for name in ('search', 'learner', 'selfplay', 'reanalyse'): importlib.import_module(name)\n"
        "assert 'mlflow' not in sys.modules, 'mlflow was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
