"""Search at the real configs' models: one search of B roots against its bare model calls.

    python bench/search_configs.py --device cuda --bf16           # atari, dmc at 1536 roots
    python bench/search_configs.py --config atari --roots 256 768 1536
    python bench/search_configs.py --device cuda --compile        # search.compile=true, calls compiled too
    python bench/search_configs.py --device cuda --compile reduce-overhead   # + CUDA graphs
    python bench/search_configs.py --quick

What is timed is `search_roots`, the call every self-play step and reanalysis batch makes
after initial inference, with the config's world model (random weights), search settings
and worker precision (`--bf16` = data.worker_precision=bf16), from B roots of random
observations: 1536 = a reanalysis batch of 256 samples × (K + 1 = 6) unroll positions.
Beside it, `model_calls` is N sequential calls of the search's own recurrent function on
the B root states, N = search.num_simulations: the model work of N simulations with none of
the tree's. The issue's bar for a GPU is search / model_calls ≤ 2 at 1536 roots × 16
simulations (`experiment=atari_breakout`; DMC searches 32 and is reported at its own N).

Each round times `--reps` searches and call sequences of every config and root count in
turn (interleaved, against the machine's drift); figures are medians. A config is built (and
compiled) when it is first timed, and its figures are printed once its last round is done, so
a run stopped early keeps the configs it finished.
"""

from __future__ import annotations

from functools import partial

import torch
from common import (
    bench_parser,
    config_names,
    load_run,
    machine_line,
    median,
    pick_device,
    run_overrides,
    timed,
)

from effzero.config import TrainConfig
from effzero.data.acting import recurrent_fn, search_roots, search_state, worker_model
from effzero.envs import EnvSpec


class SearchBench:
    """One config's model, its random roots at each root count, and the two timed calls.

    `compile_mode` None: eager, or the run's compiled search where the config says
    search.compile=true; a torch.compile mode: `search_roots` and the model calls compiled with
    it here (what a run would do with that mode; reduce-overhead adds CUDA graphs).
    """

    def __init__(
        self,
        conf: TrainConfig,
        spec: EnvSpec,
        device: torch.device,
        roots: list[int],
        compile_mode: str | None,
    ):
        self.conf, self.spec, self.device = conf, spec, device
        self.model = worker_model(conf.model, spec, str(device), conf.data.worker_precision)
        self.calls = conf.search.num_simulations
        generator = torch.Generator().manual_seed(conf.seed)
        self.roots = {}
        with torch.inference_mode():
            for b in roots:
                if spec.obs_dtype == "uint8":
                    obs = torch.randint(0, 256, (b, *spec.obs_shape), dtype=torch.uint8, generator=generator)
                else:
                    obs = torch.randn(b, *spec.obs_shape, generator=generator)
                state, value_logits, policy = self.model.initial_inference(obs.to(device))
                self.roots[b] = (state, self.model.value_support.to_scalar(value_logits), policy)
        self.search_fn, self.model_calls = search_roots, self._model_calls
        compile_mode = compile_mode or ("default" if conf.search.compile else None)
        if compile_mode is not None:  # the calls compiled too, so that the ratio compares like with like
            self.model_calls = torch.compile(
                self._model_calls, fullgraph=True, dynamic=False, mode=compile_mode
            )
        if compile_mode not in (None, "default"):
            self.search_fn = torch.compile(search_roots, fullgraph=True, dynamic=False, mode=compile_mode)
        for b in roots:  # warm-up: caches, cuBLAS handles; compilation, CUDA graph recording
            for _ in range(1 if compile_mode is None else 3):
                self.search(b), self.bare_calls(b)

    def search(self, b: int) -> None:
        with torch.inference_mode():
            self.search_fn(self.model, *self.roots[b], self.spec, self.conf.search, explore=True)

    def _model_calls(self, state: torch.Tensor) -> torch.Tensor:
        fn = recurrent_fn(self.model)
        node = search_state(self.model, state)
        rows = state.shape[0]
        if self.spec.is_discrete:
            action = torch.zeros(rows, dtype=torch.long, device=state.device)
        else:
            action = torch.zeros(rows, self.spec.action_dim, device=state.device)
        for _ in range(self.calls):
            reward, _, _, node = fn(node, action)
        return reward

    def bare_calls(self, b: int) -> None:
        with torch.inference_mode():
            self.model_calls(self.roots[b][0])


def median_seconds(fn, reps: int, device: torch.device) -> float:
    """The median wall-clock of `reps` calls of `fn`, the device's queued work included."""
    return median([timed(fn, device).wall for _ in range(reps)])


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--roots", type=int, nargs="+", default=[1536], help="root counts B")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per root count and round")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=["default", "reduce-overhead", "max-autotune"],
        help="default: search.compile=true, as in a run; another mode: the search compiled with it here",
    )
    args = parser.parse_args()
    if args.quick:
        args.roots, args.reps, args.rounds = [16], min(args.reps, 2), 1
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line(device), flush=True)
    overrides = run_overrides(args) + (["search.compile=true"] if args.compile == "default" else [])
    print(
        f"# search_roots vs its bare model calls, median of {args.rounds} interleaved rounds of "
        f"{args.reps}; bf16={args.bf16} compile={args.compile}",
        flush=True,
    )
    benches: dict[str, SearchBench] = {}
    search_s: dict[tuple[str, int], list[float]] = {}
    calls_s: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        for name in config_names(args):
            if name not in benches:  # built (and compiled) when first timed
                conf, spec = load_run(name, overrides)
                mode = None if args.compile == "default" else args.compile
                benches[name] = SearchBench(conf, spec, device, args.roots, mode)
            bench = benches[name]
            for b in args.roots:
                search_s.setdefault((name, b), []).append(
                    median_seconds(partial(bench.search, b), args.reps, device)
                )
                calls_s.setdefault((name, b), []).append(
                    median_seconds(partial(bench.bare_calls, b), args.reps, device)
                )
            if r == args.rounds - 1:  # this config's figures are final: print them now
                search = bench.conf.search
                for b in args.roots:
                    t_search, t_calls = median(search_s[name, b]), median(calls_s[name, b])
                    print(
                        f"search_config config={name} kind={search.kind.value} B={b} "
                        f"sims={search.num_simulations} device={device} ms_per_search={t_search * 1e3:.2f} "
                        f"model_calls_ms={t_calls * 1e3:.2f} search/model={t_search / t_calls:.2f} "
                        f"sims_per_s={b * search.num_simulations / t_search:.0f}",
                        flush=True,
                    )
    print(
        "# model_calls_ms: search.num_simulations sequential calls of the search's recurrent function "
        "on the B roots (the bar on a GPU: search/model <= 2)"
    )


if __name__ == "__main__":
    main()
