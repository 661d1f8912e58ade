"""One rank's data side: replay, shared weights, counters, workers, and the batch stream."""

from __future__ import annotations

import logging
import math
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import IterableDataset

from effzero.config import AlgoConfig, DataConfig, EnvConfig, TrainConfig
from effzero.data.reanalyse import ReanalyseJob, run_reanalyse
from effzero.data.replay import Replay, ReplayLayout
from effzero.data.selfplay import SelfPlayJob, run_selfplay
from effzero.data.shared import Counters, SharedWeights
from effzero.data.workers import CONTEXT, WorkerSet
from effzero.envs import EnvSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1


def available_memory() -> int | None:
    """Bytes of RAM available to new allocations (Linux), None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def replay_layout(
    data: DataConfig, env: EnvConfig, algo: AlgoConfig, spec: EnvSpec, world_size: int
) -> ReplayLayout:
    """The replay of one rank: a lane per self-play env, long enough for the rank's whole budget."""
    lanes = data.selfplay_workers * env.num_envs
    window = algo.unroll_steps + algo.td_steps
    if data.capacity is None:
        # Each episode adds one final-observation slot; a quarter more covers episodes of ≥ 4 steps.
        steps = math.ceil(data.total_env_steps / world_size / lanes)
        length = math.ceil(steps * 1.25) + 2 * window + 16
    else:
        length = math.ceil(data.capacity / world_size / lanes)
    if length <= 2 * window:
        raise ValueError(f"data.capacity gives {length} slots per lane; need more than {2 * window}")
    obs_dtype = torch.uint8 if spec.obs_dtype == "uint8" else torch.float32
    action_dtype = torch.long if spec.is_discrete else torch.float32
    policy = spec.num_actions if spec.is_discrete else 0
    return ReplayLayout(
        lanes,
        length,
        spec.obs_shape,
        obs_dtype,
        spec.action_shape,
        action_dtype,
        policy,
        window,
        spec.frame_stack,
    )


class Pipeline:
    """Replay + self-play and reanalyse workers of one rank, feeding a bounded batch queue."""

    def __init__(self, run: TrainConfig, spec: EnvSpec, template: nn.Module, rank: RankInfo = RankInfo()):
        self.env, self.model, self.search, self.algo, self.data = (
            run.env,
            run.model,
            run.search,
            run.algo,
            run.data,
        )
        self.spec, self.seed, self.rank = spec, run.seed + 1000 * rank.rank, rank
        data = run.data
        layout = replay_layout(data, run.env, run.algo, spec, rank.world_size)
        free = available_memory()
        if free is not None and layout.nbytes() > 0.8 * free:
            raise MemoryError(
                f"the replay needs {layout.nbytes() / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB of RAM is "
                "available; lower data.capacity or data.total_env_steps (or use a machine with more RAM)"
            )
        self.replay = Replay(layout)
        log.info(
            "replay (rank %d): %d lanes × %d slots = %d transitions, %.1f MiB of shared memory",
            rank.rank,
            layout.lanes,
            layout.lane_length,
            layout.capacity,
            layout.nbytes() / 2**20,
        )
        self.weights = SharedWeights(template)
        self.target_weights = SharedWeights(template)
        world = rank.world_size
        self.counters = Counters(
            start_transitions=math.ceil(data.start_transitions / world),
            replay_ratio=data.replay_ratio * world,
            total_env_steps=math.ceil(data.total_env_steps / world),
        )
        self.batch_size = max(data.batch_size // world, 1)
        self.stats = CONTEXT.Queue()
        self.batches = CONTEXT.Queue(maxsize=data.queue_size)
        self.workers = WorkerSet()

    @property
    def started(self) -> bool:
        return bool(self.workers.processes)

    def start(self) -> None:
        """Spawn the workers (weights must be published first)."""
        num_envs = self.env.num_envs
        for w in range(self.data.selfplay_workers):
            job = SelfPlayJob(
                self.env,
                self.model,
                self.search,
                self.spec,
                self.replay,
                self.weights,
                self.counters,
                self.stats,
                list(range(w * num_envs, (w + 1) * num_envs)),
                self.seed + w,
                self.data.worker_device,
            )
            self.workers.start(f"selfplay-{self.rank.rank}-{w}", run_selfplay, job, self.data.worker_threads)
        for w in range(self.data.reanalyse_workers):
            job = ReanalyseJob(
                self.model,
                self.search,
                self.algo,
                self.spec,
                self.replay,
                self.target_weights,
                self.counters,
                self.batches,
                self.batch_size,
                self.data.priority_alpha,
                self.data.priority_beta,
                self.seed + 100 + w,
                self.data.worker_device,
            )
            self.workers.start(
                f"reanalyse-{self.rank.rank}-{w}", run_reanalyse, job, self.data.worker_threads
            )

    def stop(self) -> None:
        self.counters.stop()
        self.workers.stop()

    def wait_for_update(self) -> None:
        """Block until the replay-ratio governor lets the learner take its next update."""
        while not self.counters.update_allowed():
            self.workers.check()
            time.sleep(0.002)

    def next_batch(self) -> dict[str, Tensor]:
        """The next ready batch; raises if a worker died or none came for `batch_timeout_s`."""
        deadline = time.monotonic() + self.data.batch_timeout_s
        while True:
            try:
                return self.batches.get(timeout=0.5)
            except queue.Empty:
                self.workers.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"no batch from the reanalyse workers for {self.data.batch_timeout_s:.0f} s "
                        f"(env steps {self.counters.env_steps}, sampleable slots {self.replay.num_sampleable()}, "
                        f"batch {self.batch_size}); raise data.batch_timeout_s if the machine is this slow"
                    ) from None

    def drain_stats(self) -> list[tuple]:
        """Episode statistics the self-play workers sent since the last call."""
        items = []
        while True:
            try:
                items.append(self.stats.get_nowait())
            except queue.Empty:
                return items

    def update_priorities(self, lanes: Tensor, slots: Tensor, priorities: Tensor) -> None:
        self.replay.update_priorities(lanes.cpu(), slots.cpu(), priorities.detach().cpu())

    def state_dict(self) -> dict[str, Tensor]:
        return {"replay": self.replay.state_dict(), "counters": self.counters.values.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.replay.load_state_dict(state["replay"])
        self.counters.values.copy_(state["counters"])
        self.counters.values[Counters.STOP] = 0


class BatchStream(IterableDataset):
    """The learner's view of the pipeline: an endless stream of ready, collated batches.

    Wrapped in `DataLoader(batch_size=None)`, so Lightning moves each batch to the device.
    `on_start` publishes the first weights; it runs on the first iteration, after any
    checkpoint has been restored.
    """

    def __init__(self, pipeline: Pipeline, on_start: Callable[[], None]):
        self.pipeline, self.on_start = pipeline, on_start

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        if not self.pipeline.started:
            self.on_start()
            self.pipeline.start()
        while True:
            self.pipeline.wait_for_update()
            yield self.pipeline.next_batch()
