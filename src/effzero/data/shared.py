"""State shared between the learner and its worker processes: weights, counters, episodes, batches.

Everything is a shared-memory tensor written by one process at a time, so a worker killed
at any instruction leaves nothing locked and nothing half-published.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn


class SharedWeights:
    """A model's state dict as one flat shared-memory vector, published with a seqlock.

    The writer makes the version odd while it copies and even when done; a reader copies only
    an even version and retries if the version moved meanwhile, so it never loads a torn set.
    """

    def __init__(self, model: nn.Module):
        state = model.state_dict()
        self._names = list(state)
        self._shapes = [t.shape for t in state.values()]
        self._dtypes = [t.dtype for t in state.values()]
        self._sizes = [t.numel() for t in state.values()]
        # float32 carries integer buffers (BatchNorm's batch counter) exactly up to 2^24.
        self.flat = torch.zeros(sum(self._sizes)).share_memory_()
        self.version = torch.zeros(1, dtype=torch.int64).share_memory_()

    @staticmethod
    def nbytes_for(model: nn.Module) -> int:
        return 4 * sum(t.numel() for t in model.state_dict().values()) + 8

    def publish(self, state: dict[str, Tensor]) -> None:
        """Copy a state dict (same keys as the model's) into shared memory."""
        flat = torch.cat(
            [state[name].detach().reshape(-1).to("cpu", self.flat.dtype) for name in self._names]
        )
        self.version += 1
        self.flat.copy_(flat)
        self.version += 1

    def read(self, last_version: int) -> tuple[dict[str, Tensor] | None, int]:
        """A consistent copy newer than `last_version`, or (None, last_version) if there is none."""
        while True:
            version = int(self.version)
            if version in (0, last_version):
                return None, last_version
            if version % 2 == 1:  # a publish is under way
                time.sleep(0.0005)
                continue
            flat = self.flat.clone()
            if int(self.version) == version:
                break
        state, offset = {}, 0
        for name, shape, dtype, size in zip(
            self._names, self._shapes, self._dtypes, self._sizes, strict=True
        ):
            state[name] = flat[offset : offset + size].view(shape).to(dtype)
            offset += size
        return state, version

    def load_into(self, model: nn.Module, last_version: int) -> int:
        """Load the newest weights into `model` if they are newer; return the version held."""
        state, version = self.read(last_version)
        if state is not None:
            model.load_state_dict(state)
        return version


class Counters:
    """Shared step counters, the stop flag and the pause of collection, with the replay-ratio governor.

    The learner may take update u only once u < (env_steps − start) · ratio, and self-play may
    step its batch of environments while env_steps < start + (updates + 1) / ratio, the steps
    that the next update needs. The ratio of updates to environment steps is then the same
    whatever the speed of each side (to within one batch of environments).

    Env steps are counted where they are stored: `lane_steps` is the replay's per-lane count of
    stored transitions, summed on read, so no counted step is missing from replay whenever a
    worker dies; `add_env_steps` adds to a base (a resumed run's count; tests). Nothing here
    takes a lock: a lock held by a killed worker would stay held, and named semaphores outlive
    a SIGKILLed run in /dev/shm.

    `pause` stops collection between steps, so that a checkpoint copies a replay that no step is
    writing: each self-play worker acknowledges it in `wait_to_step` by parking with the pause's
    epoch.
    """

    ENV_STEPS, UPDATES, STOP, PAUSED, EPOCH = range(5)

    def __init__(
        self,
        start_transitions: int,
        replay_ratio: float,
        total_env_steps: int,
        lane_steps: Tensor | None = None,
        collectors: int = 1,
    ):
        self.values = torch.zeros(5, dtype=torch.int64).share_memory_()
        self.parked = torch.zeros(collectors, dtype=torch.int64).share_memory_()  # per self-play worker
        self.lane_steps = lane_steps
        self.start, self.ratio, self.total = start_transitions, replay_ratio, total_env_steps

    @staticmethod
    def nbytes_for(collectors: int) -> int:
        return 8 * (5 + collectors)

    @property
    def env_steps(self) -> int:
        stored = 0 if self.lane_steps is None else int(self.lane_steps.sum())
        return int(self.values[self.ENV_STEPS]) + stored

    @property
    def updates(self) -> int:
        return int(self.values[self.UPDATES])

    @property
    def stopping(self) -> bool:
        return bool(self.values[self.STOP])

    def stop(self) -> None:
        self.values[self.STOP] = 1

    @property
    def done(self) -> bool:
        """Whether the env-step budget is spent."""
        return self.env_steps >= self.total

    def add_env_steps(self, n: int) -> int:
        """Count `n` env steps not stored in `lane_steps` (one writer); return the count before them."""
        before = self.env_steps
        self.values[self.ENV_STEPS] += n
        return before

    def set_updates(self, n: int) -> None:
        self.values[self.UPDATES] = n

    def state(self) -> Tensor:
        """(env steps, updates, 0): what a checkpoint keeps."""
        return torch.tensor([self.env_steps, self.updates, 0])

    def load_state(self, state: Tensor) -> None:
        """Restore `state()` after the replay (whose `lane_steps` hold part of the env steps)."""
        stored = 0 if self.lane_steps is None else int(self.lane_steps.sum())
        self.values.zero_()
        self.values[self.ENV_STEPS] = int(state[0]) - stored
        self.values[self.UPDATES] = int(state[1])

    def env_steps_allowed(self) -> int:
        """Self-play may step (another batch) while env_steps is below this."""
        if self.ratio <= 0:
            return self.total
        return min(self.total, self.start + math.ceil((self.updates + 1) / self.ratio))

    def update_allowed(self) -> bool:
        """Whether the learner may take its next update now."""
        env_steps = self.env_steps
        if env_steps >= self.total:
            return True  # collection is over: offline updates
        return self.updates < (env_steps - self.start) * self.ratio

    def wait(self, condition: Callable[[], bool], poll: float = 0.001) -> bool:
        """Sleep until `condition()` or the stop flag; False if stopping."""
        while not condition():
            if self.stopping:
                return False
            time.sleep(poll)
        return not self.stopping

    def wait_to_step(self, collector: int, beat: Callable[[], None], poll: float = 0.001) -> bool:
        """Block until self-play worker `collector` may step its environments.

        Returns False once the run stops or the budget is spent. Beats the worker's heartbeat
        while it waits: waiting for the learner is not hanging.
        """
        while True:
            beat()
            if self.stopping or self.done:
                return False
            if self.values[self.PAUSED]:
                self.parked[collector] = self.values[self.EPOCH]  # between steps: acknowledge
            elif self.env_steps < self.env_steps_allowed():
                return True
            time.sleep(poll)

    def pause(self) -> int:
        """Ask self-play to stop between steps; returns the epoch its workers park with."""
        epoch = int(self.values[self.EPOCH]) + 1
        self.values[self.EPOCH] = epoch  # before the flag: a worker that sees the flag reads this epoch
        self.values[self.PAUSED] = 1
        return epoch

    def parked_at(self, collector: int, epoch: int) -> bool:
        return int(self.parked[collector]) == epoch

    def resume(self) -> None:
        self.values[self.PAUSED] = 0


class EpisodeLog:
    """Episodes finished by each self-play worker, (return, length, env step), for the learner to log.

    A ring of rows per worker and a count of rows written: a row is whole before the count
    covers it, so a killed worker leaves no torn row (a queue's pipe and lock would be left
    mid-message and held). A learner more than `capacity` rows behind loses the oldest.
    """

    CAPACITY = 1024

    def __init__(self, workers: int):
        self.rows = torch.zeros(workers, self.CAPACITY, 3, dtype=torch.float64).share_memory_()
        self.count = torch.zeros(workers, dtype=torch.int64).share_memory_()
        self.read = [0] * workers  # the learner's position in each ring (only the learner reads)

    @classmethod
    def nbytes_for(cls, workers: int) -> int:
        return workers * (cls.CAPACITY * 3 + 1) * 8

    def add(self, worker: int, episode_return: float, length: int, step: int) -> None:
        n = int(self.count[worker])
        self.rows[worker, n % self.rows.shape[1]] = torch.tensor([episode_return, length, step])
        self.count[worker] = n + 1

    def drain(self) -> list[tuple[str, float, int, int]]:
        """("episode", return, length, env step) of every episode added since the last call."""
        capacity, items = self.rows.shape[1], []
        for worker, read in enumerate(self.read):
            count = int(self.count[worker])
            for i in range(max(read, count - capacity), count):
                episode_return, length, step = self.rows[worker, i % capacity].tolist()
                items.append(("episode", episode_return, int(length), int(step)))
            self.read[worker] = count
        return items


BatchLayout = dict[str, tuple[tuple[int, ...], torch.dtype]]  # name -> (shape, dtype) of one batch


class BatchSlots:
    """Ready batches in shared memory: a fixed number of slots, each filled by one reanalyse worker.

    In place of a multiprocessing queue, which a killed writer can leave locked, with half a
    message in its pipe, or holding tensors that only the dead process could hand over. Slot i
    belongs to worker i % workers: only its owner fills it (FREE → data → READY) and only the
    learner empties it (READY → copy → FREE), so a worker killed mid-fill leaves a FREE slot
    and a READY slot always holds a whole batch. Memory is fixed when it is created.
    """

    FREE, READY = 0, 1

    def __init__(self, layout: BatchLayout, slots: int, workers: int):
        self.tensors = {
            name: torch.zeros(slots, *shape, dtype=dtype).share_memory_()
            for name, (shape, dtype) in layout.items()
        }
        self.state = torch.zeros(slots, dtype=torch.int64).share_memory_()
        self.ready_at = torch.zeros(slots, dtype=torch.float64).share_memory_()  # oldest batch first
        self.workers = workers

    @staticmethod
    def nbytes_for(layout: BatchLayout, slots: int) -> int:
        per_batch = sum(math.prod(shape) * dtype.itemsize for shape, dtype in layout.values())
        return slots * (per_batch + 16)

    def free_slot(self, worker: int) -> int | None:
        """A slot of `worker`'s that is free to fill, if any."""
        for slot in range(worker, self.state.shape[0], self.workers):
            if int(self.state[slot]) == self.FREE:
                return slot
        return None

    def put(self, slot: int, batch: dict[str, Tensor]) -> None:
        """Fill a free slot of the caller's and hand it to the learner."""
        if set(batch) != set(self.tensors):
            raise ValueError(
                f"batch entries {sorted(batch)} differ from the batch slots' {sorted(self.tensors)}"
            )
        for name, target in self.tensors.items():
            value = batch[name]
            if value.shape != target.shape[1:] or value.dtype != target.dtype:
                raise ValueError(
                    f"batch entry {name!r} is {(tuple(value.shape), value.dtype)}, "
                    f"the batch slots hold {(tuple(target.shape[1:]), target.dtype)}"
                )
            target[slot].copy_(value)
        self.ready_at[slot] = time.monotonic()
        self.state[slot] = self.READY  # last: the learner reads only whole batches

    def take(self) -> dict[str, Tensor] | None:
        """A copy of the oldest ready batch, its slot freed; None if none is ready."""
        ready = (self.state == self.READY).nonzero().flatten()
        if len(ready) == 0:
            return None
        slot = int(ready[self.ready_at[ready].argmin()])
        batch = {name: tensor[slot].clone() for name, tensor in self.tensors.items()}
        self.state[slot] = self.FREE
        return batch

    def qsize(self) -> int:
        """Ready batches waiting for the learner."""
        return int((self.state == self.READY).sum())
