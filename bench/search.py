"""Search speed: simulations per second of `gumbel_search` against the peers, same machine.

    python bench/search.py                 # ours and the peers whose environments exist, interleaved
    python bench/search.py --rounds 5 --peers ../shared/peers
    python bench/search.py --compile       # also ours compiled (search.compile=true in a run)

The model has the shape of the peer scripts in `../shared/peers/` (latent 64, MLP dynamics
82→128→64, linear heads; A = 18, N = 16, m = 8); it runs under bf16 autocast on a GPU.
The peers run in their own environments (`.peers/mctx`, `.peers/lightzero`, see
`../shared/peers/README.md`); a missing one is skipped with a note. On a GPU the script also
times 16 bare model calls at each batch size: the search's bar is 2× that.

The machine's speed drifts (shared cores), so ours and each peer are timed in `--rounds`
interleaved rounds and every figure is the median over rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from effzero.search import gumbel_search

A, D, N, M = 18, 64, 16, 8
GAMMA = 0.997**4
ROOT = Path(__file__).resolve().parents[1]
PEERS = {
    "mctx": ("mctx_gumbel_bench.py", ".peers/mctx/bin/python", []),
    "lightzero": ("lightzero_gumbel_bench.py", ".peers/lightzero/bin/python", ["2"]),
}


class BenchModel(nn.Module):
    """tanh(W2·relu(W1·[s; onehot(a)])) and linear heads; the action column is a lookup."""

    def __init__(self) -> None:
        super().__init__()
        self.state_in = nn.Linear(D, 128)
        self.action_in = nn.Embedding(A, 128)  # = the one-hot columns of W1
        self.out = nn.Linear(128, D)
        self.heads = nn.Linear(D, A + 2)

    def recurrent(self, state: torch.Tensor, action: torch.Tensor):
        hidden = torch.relu(self.state_in(state) + self.action_in(action))
        nxt = torch.tanh(self.out(hidden))
        h = self.heads(nxt).float()
        return h[:, 0], h[:, 1], h[:, 2:], nxt


def median_time(fn, reps: int, sync) -> float:
    fn()
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


class Ours:
    """Our search and 16 bare model calls at each batch size; with `compile_mode`, each compiled
    (`torch.compile(fullgraph=True)`, as `search.compile=true` does in a run) at its first call."""

    def __init__(self, device: str, batches: list[int], compile_mode: str | None = None):
        torch.manual_seed(0)
        self.device, self.batches, self.compile_mode = device, batches, compile_mode
        self.model = BenchModel().to(device).eval()
        on_gpu = torch.device(device).type == "cuda"
        self.sync = (lambda: torch.cuda.synchronize(device)) if on_gpu else (lambda: None)
        self.autocast = torch.autocast("cuda" if on_gpu else "cpu", dtype=torch.bfloat16, enabled=on_gpu)
        # one compiled function each: a new batch size recompiles it (dynamic=False)
        self.search_call, self.model_call = self._compiled(self.search), self._compiled(self.model_only)
        self.roots = {b: torch.randn(b, D, device=device) for b in batches}
        self.compile_s: dict[int, float] = {}

    @property
    def name(self) -> str:
        return "effzero" if self.compile_mode is None else f"effzero-compiled({self.compile_mode})"

    def _compiled(self, fn):
        if self.compile_mode is None:
            return fn
        return torch.compile(fn, fullgraph=True, dynamic=False, mode=self.compile_mode)

    def search(self, root: torch.Tensor):
        h = self.model.heads(root).float()
        return gumbel_search(h[:, 2:], h[:, 1], root, self.model.recurrent, N, M, GAMMA)

    def model_only(self, root: torch.Tensor) -> torch.Tensor:
        action = torch.zeros(root.shape[0], dtype=torch.long, device=root.device)
        state = root
        for _ in range(N):
            _, _, _, state = self.model.recurrent(state, action)
        return state

    def run(self, reps: int, verbose: bool) -> dict[int, float]:
        """Simulations per second at each batch size (the median of `reps` searches)."""
        results = {}
        for batch in self.batches:
            root, search, model_only = self.roots[batch], self.search_call, self.model_call

            def timed(fn, root=root):
                def call():
                    with torch.inference_mode(), self.autocast:
                        fn(root)

                return call

            if batch not in self.compile_s:  # the first calls compile
                start = time.perf_counter()
                timed(search)(), timed(model_only)()
                self.compile_s[batch] = time.perf_counter() - start
            t_search = median_time(timed(search), reps, self.sync)
            t_model = median_time(timed(model_only), reps, self.sync)
            results[batch] = batch * N / t_search
            if verbose:
                print(
                    f"{self.name} B={batch} N={N} A={A} device={self.device} "
                    f"ms_per_search={t_search * 1e3:.2f} sims_per_s={results[batch]:.0f} "
                    f"model_calls_ms={t_model * 1e3:.2f} search/model={t_search / t_model:.2f} "
                    f"first_call_s={self.compile_s[batch]:.1f}",
                    flush=True,
                )
        return results


def bench_peer(name: str, peers_dir: Path) -> dict[int, float]:
    script, python, args = PEERS[name]
    interpreter = ROOT / python
    proc = subprocess.run(
        [str(interpreter), str(peers_dir / script), *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        print(f"# {name}: failed ({proc.stderr.strip().splitlines()[-1:]}); skipped")
        return {}
    results = {}
    for line in proc.stdout.splitlines():
        match = re.search(r"B=(\d+) .*sims_per_s=(\d+)", line)
        if match:
            results[int(match.group(1))] = float(match.group(2))
    return results


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reps", type=int, default=21, help="timed searches per batch size and round (median)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of ours and each peer")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--peers", type=Path, default=ROOT.parent / "shared" / "peers")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--quick", action="store_true", help="B = 16 and 64, 3 reps, 1 round, no peers")
    parser.add_argument(
        "--device",
        default="auto",
        help="auto: the CPU run (with the peers), then the GPU's if there is one; cpu, cuda or cuda:<i>: "
        "that one only",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=["default", "reduce-overhead", "max-autotune"],
        help="also time our search compiled with this torch.compile mode (default: default; "
        "reduce-overhead adds CUDA graphs on a GPU); compiling takes about a minute per batch size",
    )
    args = parser.parse_args()
    batches = [16, 256, 1536]
    if args.quick:
        batches, args.reps, args.rounds, args.no_peers = [16, 64], 3, 1, True
    torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    if args.device not in ("auto", "cpu") and not gpu:
        parser.error(f"--device {args.device}: expected auto, cpu, cuda or cuda:<i>")
    if gpu and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here; use --device cpu")
    cpu = platform.processor() or platform.machine()
    print(
        f"# machine: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, python {sys.version.split()[0]}, "
        f"device {args.device if args.device != 'auto' else 'cpu'}",
        flush=True,
    )
    if not args.device.startswith("cuda"):
        cpu_run(args, batches)
    if gpu:
        device = "cuda" if args.device == "auto" else args.device
        print(f"# gpu: {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}", flush=True)
        Ours(device, batches).run(args.reps, verbose=True)
        if args.compile:
            Ours(device, batches, args.compile).run(args.reps, verbose=True)


def cpu_run(args, batches: list[int]) -> None:
    """Ours (and compiled) against the peers on the CPU, in interleaved rounds."""
    peers = [] if args.no_peers else [p for p in PEERS if (ROOT / PEERS[p][1]).exists()]
    for name in set(PEERS) - set(peers):
        if not args.no_peers:
            print(
                f"# {name}: no environment at {ROOT / PEERS[name][1]} (see {args.peers / 'README.md'}); skipped"
            )
    ours = [Ours("cpu", batches)] + ([Ours("cpu", batches, args.compile)] if args.compile else [])
    rounds: dict[str, list[dict[int, float]]] = {o.name: [] for o in ours} | {p: [] for p in peers}
    for r in range(args.rounds):
        for o in ours:
            rounds[o.name].append(o.run(args.reps, verbose=r == args.rounds - 1))
        for name in peers:
            rounds[name].append(bench_peer(name, args.peers))
    figures = {
        name: {b: median([f[b] for f in runs if b in f]) for b in batches if any(b in f for f in runs)}
        for name, runs in rounds.items()
    }
    print(f"# sims/s, median of {args.rounds} interleaved rounds")
    for name, by_batch in figures.items():
        print(f"{name:10s} " + "  ".join(f"B={b}: {v:9.0f}" for b, v in by_batch.items()))
    for o in ours:
        for name in peers:
            for batch in batches:
                if batch in figures[name]:
                    ratio = figures[o.name][batch] / figures[name][batch]
                    print(f"ratio {o.name}/{name} B={batch}: {ratio:.2f}")


if __name__ == "__main__":
    main()
