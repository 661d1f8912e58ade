"""Search speed: simulations per second of `gumbel_search` against the peers, same machine.

    python bench/search.py                 # ours, then the peers whose environments exist
    python bench/search.py --reps 21 --peers ../shared/peers

The model has the shape of the peer scripts in `../shared/peers/` (latent 64, MLP dynamics
82→128→64, linear heads; A = 18, N = 16, m = 8); it runs under bf16 autocast on a GPU.
The peers run in their own environments (`.peers/mctx`, `.peers/lightzero`, see
`../shared/peers/README.md`); a missing one is skipped with a note. On a GPU the script also
times 16 bare model calls at each batch size: the search's bar is 2× that.
"""

from __future__ import annotations

import argparse
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


def bench_ours(device: str, batches: list[int], reps: int) -> dict[int, float]:
    torch.manual_seed(0)
    model = BenchModel().to(device).eval()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    results = {}
    for batch in batches:
        root = torch.randn(batch, D, device=device)

        def search(root=root):
            with torch.inference_mode(), autocast:
                h = model.heads(root).float()
                return gumbel_search(h[:, 2:], h[:, 1], root, model.recurrent, N, M, GAMMA)

        def model_only(root=root):
            action = torch.zeros(root.shape[0], dtype=torch.long, device=device)
            with torch.inference_mode(), autocast:
                state = root
                for _ in range(N):
                    _, _, _, state = model.recurrent(state, action)

        t_search, t_model = median_time(search, reps, sync), median_time(model_only, reps, sync)
        results[batch] = batch * N / t_search
        print(
            f"effzero_gumbel B={batch} N={N} A={A} device={device} ms_per_search={t_search * 1e3:.1f} "
            f"sims_per_s={results[batch]:.0f} model_calls_ms={t_model * 1e3:.1f} "
            f"search/model={t_search / t_model:.2f}",
            flush=True,
        )
    return results


def bench_peer(name: str, peers_dir: Path) -> dict[int, float]:
    script, python, args = PEERS[name]
    interpreter = ROOT / python
    if not interpreter.exists():
        print(f"# {name}: no environment at {interpreter} (see {peers_dir / 'README.md'}); skipped")
        return {}
    proc = subprocess.run(
        [str(interpreter), str(peers_dir / script), *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        print(f"# {name}: failed ({proc.stderr.strip().splitlines()[-1:]}); skipped")
        return {}
    results = {}
    for line in proc.stdout.splitlines():
        print(line, flush=True)
        match = re.search(r"B=(\d+) .*sims_per_s=(\d+)", line)
        if match:
            results[int(match.group(1))] = float(match.group(2))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=21, help="timed searches per batch size (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--peers", type=Path, default=ROOT.parent / "shared" / "peers")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(
        f"# machine: {cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"python {sys.version.split()[0]}"
    )
    batches = [16, 256, 1536]
    ours = bench_ours("cpu", batches, args.reps)
    peers = {} if args.no_peers else {name: bench_peer(name, args.peers) for name in PEERS}
    for name, figures in peers.items():
        for batch, sims in figures.items():
            if batch in ours:
                print(f"ratio effzero/{name} B={batch}: {ours[batch] / sims:.2f}")
    if torch.cuda.is_available():
        print(f"# gpu: {torch.cuda.get_device_name()}")
        bench_ours("cuda", batches, args.reps)


if __name__ == "__main__":
    main()
