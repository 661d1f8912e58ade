"""One rank's data side: replay, shared weights, counters, supervised workers, and the batch stream."""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.utils.data import IterableDataset

from effzero.config import AlgoConfig, DataConfig, EnvConfig, TrainConfig
from effzero.data.reanalyse import ReanalyseJob, batch_layout, run_reanalyse
from effzero.data.replay import Replay, ReplayLayout
from effzero.data.selfplay import SelfPlayJob, run_selfplay
from effzero.data.shared import BatchSlots, Counters, EpisodeLog, SharedWeights
from effzero.data.supervisor import Supervisor, Worker
from effzero.data.workers import SHM_DIR, Heartbeat, WorkerStatus
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


def shm_free() -> int | None:
    """Free bytes of /dev/shm, where torch's shared tensors live (Docker's default is 64 MiB)."""
    if SHM_DIR != "/dev/shm":
        return None
    stat = os.statvfs(SHM_DIR)
    return stat.f_bavail * stat.f_frsize


def check_memory(parts: dict[str, tuple[int, str]]) -> None:
    """Refuse to start if the shared buffers, {name: (bytes, the setting that sizes them)}, do not fit.

    They must fit in /dev/shm and leave a fifth of the available RAM to the processes themselves.
    """
    need = sum(size for size, _ in parts.values())
    free, shm = available_memory(), shm_free()
    if (free is None or need <= 0.8 * free) and (shm is None or need <= shm):
        return
    room = [] if free is None else [f"{free / 2**30:.2f} GiB of RAM is available"]
    room += [] if shm is None else [f"/dev/shm has {shm / 2**30:.2f} GiB free"]
    detail = "\n".join(
        f"  {name}: {size / 2**30:.2f} GiB (lower {setting})" for name, (size, setting) in parts.items()
    )
    hint = "" if shm is None or need <= shm else " — or give /dev/shm more room (docker run --shm-size=...)"
    raise MemoryError(
        f"the data pipeline needs {need / 2**30:.2f} GiB of shared memory but {' and '.join(room)}; "
        f"lower the settings below{hint}:\n{detail}"
    )


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
    """Replay + supervised self-play and reanalyse workers of one rank, feeding shared batch slots.

    Every shared buffer is sized from the config and checked against the free memory before
    anything is allocated or started. Workers that die or hang are restarted (`Supervisor`);
    a self-play worker's lanes are repaired first (`Replay.recover`), a reanalyse worker needs
    nothing (`BatchSlots`).
    """

    SEED_STRIDE = 100_003  # between a worker's incarnations: a prime far above the rank and worker offsets

    def __init__(self, run: TrainConfig, spec: EnvSpec, template: nn.Module, rank: RankInfo = RankInfo()):
        data, world = run.data, rank.world_size
        # Transition ids and data ages count this rank's env steps (1 / world of the run's), so
        # the algorithm's spans in env steps shrink with them: T2's newest transitions, EZ-V1's
        # correction span.
        algo = replace(
            run.algo,
            mixed_t2=math.ceil(run.algo.mixed_t2 / world),
            correction_span=math.ceil(run.algo.correction_span / world),
        )
        self.env, self.model, self.search, self.algo, self.data = run.env, run.model, run.search, algo, data
        self.spec, self.seed, self.rank = spec, run.seed + 1000 * rank.rank, rank
        layout = replay_layout(data, run.env, run.algo, spec, world)
        self.batch_size = max(data.batch_size // world, 1)
        batch = batch_layout(run.model, spec, run.search, run.algo, layout, self.batch_size)
        slots = self._batch_slot_count()
        workers = data.selfplay_workers + data.reanalyse_workers
        check_memory(
            {
                "replay": (layout.nbytes(), "data.capacity or data.total_env_steps"),
                "batch slots": (BatchSlots.nbytes_for(batch, slots), "data.queue_size or data.batch_size"),
                "weights (learner and target)": (2 * SharedWeights.nbytes_for(template), "the model's size"),
                "counters, episode log, worker status": (
                    Counters.nbytes_for(data.selfplay_workers)
                    + EpisodeLog.nbytes_for(data.selfplay_workers)
                    + WorkerStatus.nbytes_for(workers),
                    "data.selfplay_workers or data.reanalyse_workers",
                ),
            }
        )
        self.replay = Replay(layout)
        log.info(
            "replay (rank %d): %d lanes × %d slots = %d transitions, %.1f MiB of shared memory; "
            "%d batch slots, %.1f MiB",
            rank.rank,
            layout.lanes,
            layout.lane_length,
            layout.capacity,
            layout.nbytes() / 2**20,
            slots,
            BatchSlots.nbytes_for(batch, slots) / 2**20,
        )
        self.weights = SharedWeights(template)
        self.target_weights = SharedWeights(template)
        self.counters = Counters(
            start_transitions=math.ceil(data.start_transitions / world),
            replay_ratio=data.replay_ratio * world,
            total_env_steps=math.ceil(data.total_env_steps / world),
            lane_steps=self.replay.transitions,
            collectors=data.selfplay_workers,
        )
        self.batches = BatchSlots(batch, slots, data.reanalyse_workers)
        self.episodes = EpisodeLog(data.selfplay_workers)
        self.supervisor = Supervisor(
            [self._selfplay(w) for w in range(data.selfplay_workers)]
            + [self._reanalyse(w) for w in range(data.reanalyse_workers)],
            data.max_worker_restarts,
            data.worker_timeout_s,
            data.worker_threads,
            self.counters.stop,
        )

    def _batch_slot_count(self) -> int:
        return max(self.data.queue_size, self.data.reanalyse_workers)  # every reanalyse worker owns a slot

    def _selfplay(self, w: int) -> Worker:
        num_envs = self.env.num_envs
        lanes = list(range(w * num_envs, (w + 1) * num_envs))

        def job(incarnation: int, beat: Heartbeat) -> SelfPlayJob:
            return SelfPlayJob(
                self.env,
                self.model,
                self.search,
                self.spec,
                self.replay,
                self.weights,
                self.counters,
                self.episodes,
                w,
                lanes,
                self.seed + w + self.SEED_STRIDE * incarnation,  # a restart must not replay its episodes
                beat,
                self.data.worker_device,
                self.data.worker_precision,
            )

        def recover() -> str:
            dropped = self.replay.recover(lanes)
            return f"its lanes' unfinished episodes were closed as time-limit cuts ({dropped} last action(s) dropped)"

        return Worker(f"selfplay-{self.rank.rank}-{w}", run_selfplay, job, recover)

    def _reanalyse(self, w: int) -> Worker:
        def job(incarnation: int, beat: Heartbeat) -> ReanalyseJob:
            return ReanalyseJob(
                self.model,
                self.search,
                self.algo,
                self.spec,
                self.replay,
                self.target_weights,
                self.counters,
                self.batches,
                w,
                self.batch_size,
                self.data.priority_alpha,
                self.data.priority_beta,
                self.seed + 100 + w + self.SEED_STRIDE * incarnation,
                beat,
                self.data.worker_device,
                self.data.worker_precision,
            )

        return Worker(f"reanalyse-{self.rank.rank}-{w}", run_reanalyse, job)

    @property
    def started(self) -> bool:
        return self.supervisor.started

    @property
    def restarts(self) -> int:
        """Workers restarted so far in this run (all of this rank's workers together)."""
        return self.supervisor.restarts

    def start(self) -> None:
        """Spawn the workers (weights must be published first)."""
        atexit.register(self.stop)  # an exception that skips the teardown hooks still stops them
        self.supervisor.start()

    def stop(self) -> None:
        self.supervisor.stop()
        atexit.unregister(self.stop)

    def wait_for_update(self) -> None:
        """Block until the replay-ratio governor lets the learner take its next update."""
        while not self.counters.update_allowed():
            self.supervisor.check()
            time.sleep(0.002)

    def next_batch(self) -> dict[str, Tensor]:
        """The next ready batch; raises if workers failed for good or none came for `batch_timeout_s`."""
        deadline = time.monotonic() + self.data.batch_timeout_s
        while True:
            self.supervisor.check()
            batch = self.batches.take()
            if batch is not None:
                return batch
            if self.supervisor.status.any_compiling():  # slow, but not stuck
                deadline = time.monotonic() + self.data.batch_timeout_s
            elif time.monotonic() > deadline:
                raise TimeoutError(
                    f"no batch from the reanalyse workers for {self.data.batch_timeout_s:.0f} s "
                    f"(env steps {self.counters.env_steps}, sampleable slots {self.replay.num_sampleable()}, "
                    f"batch {self.batch_size}); raise data.batch_timeout_s if the machine is this slow"
                )
            time.sleep(0.001)

    def drain_stats(self) -> list[tuple]:
        """("episode", return, length, env step) of the episodes self-play finished since the last call."""
        return self.episodes.drain()

    def update_priorities(self, lanes: Tensor, slots: Tensor, priorities: Tensor) -> None:
        self.replay.update_priorities(lanes.cpu(), slots.cpu(), priorities.detach().cpu())

    def state_dict(self) -> dict[str, Tensor]:
        """The replay, the counters and the workers' incarnations, copied while no self-play step is half-written."""
        with self._collection_paused():
            return {
                "replay": self.replay.state_dict(),
                "counters": self.counters.state(),
                "incarnations": torch.tensor([worker.incarnation for worker in self.supervisor.workers]),
            }

    def load_state_dict(self, state: dict) -> None:
        self.replay.load_state_dict(state["replay"])
        self.counters.load_state(state["counters"])
        # The checkpoint holds no environment states: the episodes it cut short end there, as
        # time-limit cuts, or the new episodes would be stored as their continuations.
        dropped = self.replay.recover(list(range(self.replay.layout.lanes)))
        log.info(
            "resumed: the %d episode(s) the checkpoint cut short were closed as time-limit cuts", dropped
        )
        # A resumed run's workers are new incarnations of all those before the checkpoint, so
        # their seeds are new too: its environments must not replay the episodes already stored.
        first = int(state["incarnations"].max()) + 1 if "incarnations" in state else 1
        for worker in self.supervisor.workers:
            worker.incarnation = first

    @contextlib.contextmanager
    def _collection_paused(self) -> Iterator[None]:
        """Hold self-play between steps: each worker parks, or has finished its budget."""
        if not self.started:
            yield
            return
        epoch = self.counters.pause()
        try:
            collectors = range(self.data.selfplay_workers)  # the first workers are self-play
            while not all(
                self.counters.parked_at(w, epoch) or self.supervisor.finished(w) for w in collectors
            ):
                self.supervisor.check()  # a worker that died meanwhile is repaired and restarted
                time.sleep(0.001)
            yield
        finally:
            self.counters.resume()


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
