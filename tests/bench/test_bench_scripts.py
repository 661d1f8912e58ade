"""Every benchmark runs with --quick and prints its machine line and its figures; the suite
that runs them on a GPU lease tables those figures, keeps to its budget and kills what outlasts it.

The scripts start at once (they spend most of their time importing and spawning workers), so
the module takes about as long as the slowest one, e2e.py. They run without the packages the
GPU machines lack and the suite does not carry (`bench/device_wheels.sh`): importing one fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import suite  # noqa: E402

# Installed here, absent on the GPU machines (their package list: the device tool's KINDS.md).
NOT_ON_THE_DEVICE = ("mlflow", "pygame", "imageio_ffmpeg")
# script -> what its figure line must hold
FIGURES = {
    "search": r"^effzero B=16 N=16 .*sims_per_s=\d+ .*search/model=[\d.]+",
    "search_configs": r"^search_config config=cartpole kind=gumbel B=16 .*model_calls_ms=[\d.]+ search/model=[\d.]+",
    "learner": r"^learner config=cartpole B=16 .*updates_per_s=[\d.]+ .*learner_bound_wall=",
    "selfplay": r"^selfplay config=cartpole .*env_steps_per_s=[\d.]+ .*selfplay_bound_wall=",
    "reanalyse": r"^reanalyse config=cartpole B=16 .*samples_per_s=[\d.]+ .*reanalyse_bound_wall=",
    "e2e": r"^e2e config=cartpole .*updates_per_s=[\d.]+ .*learner_step=\d+% wait_selfplay=\d+% "
    r"wait_reanalyse=\d+% other=\d+%",
}


@pytest.fixture(scope="module")
def device_like_env(tmp_path_factory) -> dict[str, str]:
    """The environment with NOT_ON_THE_DEVICE unimportable (a package that raises ImportError)."""
    blocked = tmp_path_factory.mktemp("not_on_the_device")
    for name in NOT_ON_THE_DEVICE:
        (blocked / name).mkdir()
        (blocked / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not on the GPU machines')\n"
        )
    path = [str(blocked), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


@pytest.fixture(scope="module")
def outputs(device_like_env) -> dict[str, subprocess.CompletedProcess]:
    procs = {
        name: subprocess.Popen(
            [sys.executable, f"bench/{name}.py", "--quick", "--device", "cpu"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=device_like_env,
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


def test_the_suite_tables_each_scripts_figures(outputs):
    step_of = {"search_configs": "search_configs", "learner": "learner_fp32", "reanalyse": "reanalyse_bf16",
               "selfplay": "selfplay_bf16", "e2e": "e2e_dmc", "search": "search_peer_model"}  # fmt: skip
    results = {
        step_of[name]: {"status": "ok", "seconds": 1.0, "records": suite.parse_figures(out.stdout)}
        for name, out in outputs.items()
    }
    learner = next(r for r in results["learner_fp32"]["records"] if r["figure"] == "learner")
    assert learner["learner_bound_wall"].endswith((" min", " h")), learner  # values may hold spaces
    rows = {line.split(" | ")[0].lstrip("| "): line for line in suite.table(results).splitlines()}
    assert f"{learner['updates_per_s']} ({learner['ms_per_update']} ms)" in rows["learner, fp32: updates/s"]
    search = next(r for r in results["search_configs"]["records"] if r["figure"] == "search_config")
    assert f"= {search['search/model']}×" in next(
        v for k, v in rows.items() if k.startswith("search at the config")
    )
    e2e_split = rows[
        "end to end, bf16, 8 reanalyse workers: learner / wait self-play / wait reanalyse / other"
    ]
    assert re.search(r"\| \d+% / \d+% / \d+% / \d+% \|$", e2e_split), e2e_split
    assert re.search(
        r"^\| search at the peers' model .*\(effzero, cpu\) \| [\d.]+ ms, [\d.]+× model calls",
        suite.table(results),
        re.M,
    )


def test_the_suite_adds_the_rates_the_issues_targets_need():
    # Lines as the scripts print them (the GPU steps' sizes): Atari 100k is 120k updates of
    # 256 samples and 100k env steps, to end in 2 h; DMC walker 70k updates, 50k env steps, 1 h.
    lines = {
        "learner_bf16": "learner config=atari B=256 device=cuda threads=16 updates_per_s=20.00 "
        "ms_per_update=50.0 full_run_updates=120000 learner_bound_wall=1.7 h\n"
        "learner config=dmc B=256 device=cuda updates_per_s=40.00 full_run_updates=70000 learner_bound_wall=29.2 min",
        "reanalyse_bf16": "reanalyse config=atari B=256 roots=1536 sims=16 samples_per_s=900.0 "
        "full_run_updates=120000 workers=1 reanalyse_bound_wall=9.5 h",
        "selfplay_bf16": "selfplay config=dmc envs=4 sims=32 env_steps_per_s=90.0 full_run_env_steps=50000 "
        "workers=1 selfplay_bound_wall=9.3 min",
    }
    results = {
        name: {"status": "ok", "seconds": 1.0, "records": suite.parse_figures(text)}
        for name, text in lines.items()
    }
    rows = {
        line.split(" | ")[0].lstrip("| "): line.rstrip(" |").split(" | ")[1:]
        for line in suite.table(results).splitlines()
        if line.startswith("| ")
    }
    needed = "needed for a full run in 2 h (atari), 1 h (dmc)"
    assert rows[f"{needed}: updates/s"][0] == "16.7"  # atari: 120000 / 7200
    assert rows[f"{needed}: updates/s"][1] == "19.4"  # dmc: 70000 / 3600
    assert rows[f"{needed}: reanalysed samples/s, all workers"][0] == "4266.7"
    assert rows[f"{needed}: env steps/s, all self-play workers"][1] == "13.9"


def test_the_suite_runs_its_steps_and_writes_what_it_measured(tmp_path, device_like_env):
    argv = [sys.executable, "bench/suite.py", "--quick", "--only", "search_configs", "search_peer_model"]
    result = subprocess.run(
        [*argv, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, env=device_like_env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads((tmp_path / "suite.json").read_text())
    assert [(name, s["status"]) for name, s in steps.items()] == [
        ("search_configs", "ok"),
        ("search_peer_model", "ok"),
    ]
    assert steps["search_configs"]["records"][0]["config"] == "cartpole"
    assert "device cpu" in steps["search_configs"]["machine"]
    table = (tmp_path / "table.md").read_text()
    assert re.search(
        r"^\| search at the config's model.* \| [\d.]+ vs [\d.]+ ms = [\d.]+× \(16 roots × 4 sims\) \|$",
        table,
        re.M,
    )
    assert "===== search_peer_model: ok (exit 0)" in (tmp_path / "suite.log").read_text()


def test_the_suite_skips_what_its_budget_cannot_hold(tmp_path):
    argv = [sys.executable, "bench/suite.py", "--quick", "--minutes", "0.1", "--out", str(tmp_path)]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads((tmp_path / "suite.json").read_text())
    assert {s["status"] for s in steps.values()} == {"skipped"}
    assert list(steps) == [s.name for s in suite.STEPS if s.part == "components"]


def test_a_step_past_its_time_is_killed_with_the_processes_it_started(tmp_path):
    # A script that starts a worker and hangs: the worker holds the output pipe too.
    hang = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print('worker', child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    step = suite.Step("hang", "components", "-", (), 2.0, "hang")
    start = time.perf_counter()
    with open(tmp_path / "log", "w") as log:
        result = suite.run_step(step, [sys.executable, "-c", hang], 2.0, log)
    assert result["status"] == "timeout"
    assert time.perf_counter() - start < 15
    pid = int(re.search(r"worker (\d+)", (tmp_path / "log").read_text())[1])
    deadline = time.time() + 5
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_step_past_its_time_reports_what_it_measured_if_it_stops_on_sigterm(tmp_path):
    # As e2e.py does: Lightning stops the run at SIGTERM, and the script prints its figures.
    stops = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        "    print('e2e config=dmc updates_per_s=3.50 startup_s=9.0', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    step = suite.Step("stops", "e2e", "-", (), 8.0, "stops")
    with open(tmp_path / "log", "w") as log:
        result = suite.run_step(step, [sys.executable, "-c", stops], 8.0, log)
    assert result["status"] == "timeout"
    assert result["records"] == [
        {"config": "dmc", "updates_per_s": "3.50", "startup_s": "9.0", "figure": "e2e"}
    ]
    assert result["seconds"] < 8.0 + 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("script", ["search_configs", "search"])
def test_asking_for_cuda_without_one_ends_with_one_line(script):
    result = subprocess.run(
        [sys.executable, f"bench/{script}.py", "--device", "cuda", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "sees no CUDA device here" in result.stderr
    assert "Traceback" not in result.stderr
