"""The benchmark table in one command under a time budget: what a short GPU lease runs.

    python bench/suite.py --out $OUT --minutes 5.5                    # a GPU: the components
    python bench/suite.py --out $OUT --minutes 5 --only e2e_dmc search_configs_cudagraphs
                                                                      # a second call: what fits
    python bench/suite.py --quick --device cpu --out /tmp/suite       # every step, small sizes
    python bench/suite.py --list                                      # the steps, in order

Runs the bench scripts one after another as child processes, the figures the issue asks for
first. Each step may take its `cap_s` and no more than what is left of `--minutes`; a step
that outlasts that is killed (its partial output kept) and the suite goes on; a step that
would start with less than `MIN_STEP_S` left is skipped. On a GPU machine with no package
index, carry `.whl` (`bash bench/device_wheels.sh`) and start it with `bench/on_device.sh`.

Written to `--out` as they come, so that a lease cut short still returns what finished:
  suite.log    every step's command and output
  suite.json   per step: argv, status (ok, failed, timeout, skipped), seconds, figure records
  table.md     the figures in bench/README.md's layout (one column per config)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

BENCH = Path(__file__).resolve().parent
MIN_STEP_S = 20.0  # a step started with less than this left would only report its startup
GRACE_S = 15.0  # from SIGTERM to SIGKILL for a step past its time
FIGURE = re.compile(r"^(?P<figure>[\w()-]+) (?P<rest>\w+=.*)$")
PAIR = re.compile(r"(\w+(?:/\w+)?)=(.*?)(?=\s+\w+(?:/\w+)?=|$)")
E2E = ["logger=none", "data.worker_device=cuda", "data.reanalyse_workers=8"]


@dataclass(frozen=True)
class Step:
    name: str
    part: str  # components, e2e, compiled: the groups a call picks with --part
    script: str
    args: tuple[str, ...]  # on the GPU
    cap_s: float  # the most this step may take
    label: str  # its rows' name in table.md
    quick_args: tuple[str, ...] = ()  # with --quick: the script's `--quick` and these


ATARI_DMC = ("--config", "atari", "dmc")
ONE_ROUND = ("--rounds", "1")
STEPS = (
    # components: what the table needs, most wanted first
    Step("search_configs", "components", "search_configs.py", (*ATARI_DMC, "--bf16"), 90,
         "search at the config's model, bf16", ("--bf16",)),
    Step("learner_bf16", "components", "learner.py", (*ATARI_DMC, "--bf16", *ONE_ROUND, "--steps", "10"), 90,
         "learner, bf16-mixed", ("--bf16",)),
    Step("reanalyse_bf16", "components", "reanalyse.py",
         (*ATARI_DMC, "--bf16", "--fill", "random", *ONE_ROUND, "--batches", "3"), 90,
         "reanalyse, bf16 worker", ("--bf16", "--fill", "random")),
    Step("selfplay_bf16", "components", "selfplay.py", (*ATARI_DMC, "--bf16", *ONE_ROUND, "--steps", "200"), 90,
         "self-play, bf16 worker", ("--bf16",)),
    Step("learner_fp32", "components", "learner.py", (*ATARI_DMC, *ONE_ROUND, "--steps", "10"), 75,
         "learner, fp32"),
    Step("search_peer_model", "components", "search.py", ("--no-peers", *ONE_ROUND), 60,
         "search at the peers' model (bench/search.py)"),
    # e2e: real runs; the projection of a full run
    Step("e2e_dmc", "e2e", "e2e.py", ("--config", "dmc", "--minutes", "2", "--bf16", *E2E), 170,
         "end to end, bf16, 8 reanalyse workers"),
    Step("e2e_atari", "e2e", "e2e.py", ("--config", "atari", "--minutes", "2.5", "--bf16", *E2E), 200,
         "end to end, bf16, 8 reanalyse workers"),
    # compiled: what torch.compile and CUDA graphs buy (each compiles first: minutes)
    Step("search_configs_cudagraphs", "compiled", "search_configs.py",
         (*ATARI_DMC, "--bf16", *ONE_ROUND, "--compile", "reduce-overhead"), 240,
         "search at the config's model, bf16, compiled + CUDA graphs", ("--compile",)),
    Step("learner_compiled", "compiled", "learner.py", (*ATARI_DMC, "--bf16", "--compile", *ONE_ROUND, "--steps", "10"),
         240, "learner, bf16-mixed, compile=true", ("--compile",)),
    Step("search_configs_compiled", "compiled", "search_configs.py", (*ATARI_DMC, "--bf16", *ONE_ROUND, "--compile"),
         240, "search at the config's model, bf16, compiled (search.compile=true)", ("--compile",)),
    Step("selfplay_compiled", "compiled", "selfplay.py",
         (*ATARI_DMC, "--bf16", *ONE_ROUND, "--steps", "200", "search.compile=true"), 240,
         "self-play, bf16, search.compile=true", ("search.compile=true",)),
    Step("search_peer_model_cudagraphs", "compiled", "search.py",
         ("--no-peers", *ONE_ROUND, "--compile", "reduce-overhead"), 180,
         "search at the peers' model, compiled + CUDA graphs", ("--compile",)),
)  # fmt: skip
PARTS = ("components", "e2e", "compiled")


def parse_figures(text: str) -> list[dict[str, str]]:
    """The `figure key=value …` lines of a bench script's output, as dicts with 'figure'.

    Values may hold spaces (`learner_bound_wall=13.8 h`): a value runs to the next ` key=`.
    """
    records = []
    for line in text.splitlines():
        match = FIGURE.match(line.strip())
        if match:
            records.append({**dict(PAIR.findall(match["rest"])), "figure": match["figure"]})
    return records


def step_argv(step: Step, quick: bool, device: str) -> list[str]:
    args = ["--quick", *step.quick_args] if quick else list(step.args)
    return [sys.executable, str(BENCH / step.script), "--device", device, *args]


def run_step(step: Step, argv: list[str], timeout_s: float, log: TextIO) -> dict:
    """Run one step, its output teed to `log`; its status, seconds and figure records.

    The step runs in a process group of its own. At its time the group gets SIGTERM, which a
    training run (e2e.py) answers by stopping after the update in progress and reporting what it
    measured, and `GRACE_S` later SIGKILL: its worker processes hold the output pipe too, and
    the reader would wait for them.
    """
    log.write(f"\n===== {step.name}: {' '.join(argv[1:])} (up to {timeout_s:.0f} s)\n")
    log.flush()
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            log.write(line)
            log.flush()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    grace = min(GRACE_S, timeout_s / 4)
    try:
        proc.wait(timeout=timeout_s - grace)
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        status = "timeout"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what is left: the script, or workers it left
        proc.wait()
    reader.join(timeout=10)
    seconds = time.perf_counter() - start
    log.write(f"===== {step.name}: {status} (exit {proc.returncode}) after {seconds:.0f} s\n")
    log.flush()
    return {
        "argv": argv[1:],
        "status": status,
        "returncode": proc.returncode,
        "seconds": round(seconds, 1),
        "records": parse_figures("".join(lines)),
        "machine": next((line.strip() for line in lines if line.startswith("# machine:")), None),
    }


# ---------------------------------------------------------------------- the table

# Per figure: (metric, cell). Cells read the record's own keys; a missing key shows "?".
CELLS = {
    "search_config": [
        ("ms per search vs its model calls (bar ≤ 2×)",
         "{ms_per_search} vs {model_calls_ms} ms = {search/model}× ({B} roots × {sims} sims)"),
    ],
    "learner": [
        ("updates/s", "{updates_per_s} ({ms_per_update} ms)"),
        ("projected, learner-bound", "{learner_bound_wall}"),
    ],
    "h2d": [
        ("the batch's copy to the GPU, pageable vs pinned",
         "{pageable_ms} vs {pinned_ms} ms ({batch_mib} MiB; {per_update_share} of an update)"),
    ],
    "reanalyse": [
        ("samples/s, one worker", "{samples_per_s} ({s_per_batch} s/batch)"),
        ("projected, reanalysis-bound", "{reanalyse_bound_wall} (workers: {workers})"),
    ],
    "selfplay": [
        ("env steps/s, one worker", "{env_steps_per_s} ({envs} envs; envs alone {env_only_steps_per_s})"),
        ("projected, self-play-bound", "{selfplay_bound_wall} (workers: {workers})"),
    ],
    "e2e": [
        ("updates/s = env steps/s", "{updates_per_s} (startup {startup_s} s)"),
        ("learner / wait self-play / wait reanalyse / other",
         "{learner_step} / {wait_selfplay} / {wait_reanalyse} / {other}"),
        ("GPU utilisation, peak memory", "{gpu_util}, {gpu_peak_mem}"),
    ],
    "projection": [("projected full run", "{full_run_wall} ({full_run_updates} updates)")],
}  # fmt: skip


# The bar for a full run on one GPU, and the rates it takes: rows beside the figures.
TARGET_HOURS = {"atari": 2.0, "dmc": 1.0}
TARGET_LABEL = "needed for a full run in " + ", ".join(f"{h:g} h ({c})" for c, h in TARGET_HOURS.items())
NEEDED = {  # row -> (figure that knows the totals, rate per second of the target's time)
    "updates/s": ("learner", lambda r: float(r["full_run_updates"])),
    "reanalysed samples/s, all workers": (
        "reanalyse",
        lambda r: float(r["full_run_updates"]) * float(r["B"]),
    ),
    "env steps/s, all self-play workers": ("selfplay", lambda r: float(r["full_run_env_steps"])),
}


def needed_cells(config: str, first: dict[str, dict[str, str]]) -> dict[str, str]:
    """What a full run of `config` must sustain to end within its target, by row."""
    hours = TARGET_HOURS.get(config)
    cells = {}
    for metric, (figure, total) in NEEDED.items():
        if hours is not None and figure in first:
            cells[f"{TARGET_LABEL}: {metric}"] = f"{total(first[figure]) / (hours * 3600):.1f}"
    return cells


def cell(template: str, record: dict[str, str]) -> str:
    return re.sub(r"\{([\w/]+)\}", lambda m: record.get(m[1], "?"), template)


def table(results: dict[str, dict]) -> str:
    """Markdown: one table of the config figures (a column per config), one of bench/search.py's."""
    by_config: dict[tuple[str, str], str] = {}  # (row, config) -> cell
    rows: list[str] = []
    configs: list[str] = []
    search_rows: dict[str, dict[str, str]] = {}  # row -> B -> cell
    first: dict[str, dict[str, dict[str, str]]] = {}  # config -> figure -> its first record
    for step in STEPS:
        for record in results.get(step.name, {}).get("records", []):
            figure = record["figure"]
            if figure.startswith("effzero"):  # bench/search.py: one figure per batch size
                row = f"{step.label} ({figure}, {record.get('device', '?')})"
                search_rows.setdefault(row, {})[record.get("B", "?")] = cell(
                    "{ms_per_search} ms, {search/model}× model calls", record
                )
                continue
            config = record.get("config", "?")
            if config not in configs:
                configs.append(config)
            first.setdefault(config, {}).setdefault(figure, record)
            for metric, template in CELLS.get(figure, []):
                row = f"{step.label}: {metric}"
                if row not in rows:
                    rows.append(row)
                by_config[row, config] = cell(template, record)
    for config in configs:
        for row, value in needed_cells(config, first[config]).items():
            if row not in rows:
                rows.append(row)
            by_config[row, config] = value
    lines = []
    if rows:
        lines += [f"| | {' | '.join(configs)} |", "|---" * (len(configs) + 1) + "|"]
        lines += [f"| {row} | {' | '.join(by_config.get((row, c), '') for c in configs)} |" for row in rows]
    if search_rows:
        batches = sorted({b for cells in search_rows.values() for b in cells}, key=int)
        lines += ["", f"| B = | {' | '.join(batches)} |", "|---" * (len(batches) + 1) + "|"]
        lines += [
            f"| {row} | {' | '.join(c.get(b, '') for b in batches)} |" for row, c in search_rows.items()
        ]
    status = [f"{name} {r['status']} ({r['seconds']:.0f} s)" for name, r in results.items()]
    machines = sorted({r["machine"] for r in results.values() if r.get("machine")})
    return "\n".join([*machines, "", *lines, "", "steps: " + ", ".join(status), ""])


# ---------------------------------------------------------------------- main


def chosen_steps(args) -> list[Step]:
    if args.only:
        unknown = set(args.only) - {s.name for s in STEPS}
        if unknown:
            sys.exit(
                f"--only: no step {', '.join(sorted(unknown))}; steps: {', '.join(s.name for s in STEPS)}"
            )
        return [s for s in STEPS if s.name in args.only]
    return [s for s in STEPS if s.part in args.part]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="where the log, json and table go")
    parser.add_argument("--minutes", type=float, default=5.5, help="the whole suite's budget")
    parser.add_argument("--part", nargs="+", choices=PARTS, default=["components"])
    parser.add_argument("--only", nargs="+", default=None, help="these steps (names: --list), in order")
    parser.add_argument(
        "--device", default=None, help="the scripts' --device (default: cuda; cpu with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="each script's --quick sizes, on the CPU")
    parser.add_argument("--list", action="store_true", help="print the steps and exit")
    args = parser.parse_args()
    if args.list:
        for s in STEPS:
            print(f"{s.name:30s} {s.part:11s} cap {s.cap_s:3.0f} s  {s.script} {' '.join(s.args)}")
        return
    if args.out is None:
        parser.error("--out DIR is needed (on the device machine: --out $OUT)")
    device = args.device or ("cpu" if args.quick else "cuda")
    steps = chosen_steps(args)
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.minutes * 60
    results: dict[str, dict] = {}
    with open(args.out / "suite.log", "a") as log:
        log.write(f"# suite {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv[1:])}\n")
        for step in steps:
            argv = step_argv(step, args.quick, device)
            left = deadline - time.perf_counter()
            if left < MIN_STEP_S:
                results[step.name] = {"argv": argv[1:], "status": "skipped", "seconds": 0.0, "records": []}
                print(f"# {step.name}: skipped ({left:.0f} s of the budget left)", flush=True)
            else:
                print(f"# {step.name} ...", flush=True)
                result = results[step.name] = run_step(step, argv, min(step.cap_s, left), log)
                print(f"# {step.name}: {result['status']} in {result['seconds']:.0f} s", flush=True)
            (args.out / "suite.json").write_text(json.dumps(results, indent=1))
            (args.out / "table.md").write_text(table(results))
    print(table(results), flush=True)


if __name__ == "__main__":
    main()
