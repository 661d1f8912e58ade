"""Collection and reanalysis in the learner's process, in lock-step with its updates (`data.synchronous`).

With worker processes, which transitions a batch samples depends on how far self-play has got
when reanalysis samples, which depends on the machine's load: two runs of the same seed differ.
Here nothing runs concurrently, so a seed fixes the whole run (on the CPU; add
`trainer.deterministic=true` for the learner's own kernels). It is slower — nothing overlaps —
and meant for debugging, regression tests and runs that must be reproduced exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from effzero.config import TrainConfig
from effzero.data.pipeline import Pipeline, RankInfo
from effzero.data.reanalyse import Reanalyser
from effzero.data.selfplay import SelfPlay
from effzero.envs import EnvSpec


class PrivateRandom:
    """A CPU random stream of its own for code that draws from torch's global generator.

    A worker process seeds its global generator and the searches draw their noise from it. In
    the learner's process that generator is the learner's (augmentation, Lightning's seeding),
    so self-play and reanalysis each get a stream of their own: neither side's draws then
    depend on how much the other drew.
    """

    def __init__(self, seed: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.state = torch.get_rng_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Draw from this stream inside the block; the global generator is restored after it."""
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.state)
            yield
            self.state = torch.get_rng_state()


def _no_heartbeat() -> None:
    """Nothing watches in-process collection: it cannot hang without the learner hanging too."""


class LockstepPipeline(Pipeline):
    """`Pipeline` without worker processes: the learner collects and reanalyses between updates.

    Before each update self-play steps its workers' environments, one worker at a time, until
    the replay-ratio governor allows the update; the batch is then reanalysed on the spot with
    the current target weights. Self-play and reanalysis run the jobs (lanes, seeds) of the
    first self-play workers and the first reanalyse worker of a run with processes.
    """

    def __init__(self, run: TrainConfig, spec: EnvSpec, template: nn.Module, rank: RankInfo = RankInfo()):
        super().__init__(run, spec, template, rank)
        self._players: list[tuple[SelfPlay, PrivateRandom]] = []
        self._reanalyser: tuple[Reanalyser, PrivateRandom] | None = None

    def _batch_slot_count(self) -> int:
        return 0  # a batch is made when the learner asks for it

    @property
    def started(self) -> bool:
        return self._reanalyser is not None

    def start(self) -> None:
        """Build the environments and models (weights must be published first)."""
        workers = self.supervisor.workers
        for worker in workers[: self.data.selfplay_workers]:
            job = worker.make_job(worker.incarnation, _no_heartbeat)  # > 0 once resumed
            self._players.append((SelfPlay(job), PrivateRandom(job.seed)))
        reanalyse = workers[self.data.selfplay_workers]
        job = reanalyse.make_job(reanalyse.incarnation, _no_heartbeat)
        self._reanalyser = (Reanalyser(job), PrivateRandom(job.seed))

    def stop(self) -> None:
        for player, _ in self._players:
            player.close()
        self._players, self._reanalyser = [], None

    def wait_for_update(self) -> None:
        """Collect until the replay-ratio governor lets the learner take its next update."""
        while not self.counters.update_allowed():
            self._collect()

    def next_batch(self) -> dict[str, Tensor]:
        """A batch reanalysed now; collects more first if the replay has too few whole windows."""
        reanalyser, stream = self._reanalyser
        while not reanalyser.ready():
            if self.counters.done:
                raise ValueError(
                    f"the replay holds {self.replay.num_sampleable()} sampleable slots after the whole "
                    f"env-step budget, fewer than the batch of {self.batch_size}: raise "
                    "data.total_env_steps or lower data.batch_size"
                )
            self._collect()
        with stream.active():
            batch = reanalyser.make_batch()
        # Out of inference mode, as a batch is once it has crossed the process boundary: autograd uses it.
        return {name: value.clone() for name, value in batch.items()}

    def _collect(self) -> None:
        """One step of every self-play worker's environments that the budget still allows."""
        for player, stream in self._players:
            if self.counters.done:
                return
            with stream.active():
                player.step()

    @contextlib.contextmanager
    def _collection_paused(self) -> Iterator[None]:
        yield  # collection runs only inside wait_for_update and next_batch
