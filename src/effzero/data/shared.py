"""State shared between the learner and its worker processes: weights and step counters."""

from __future__ import annotations

import math
import time

import torch
import torch.multiprocessing as mp
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
    """Shared step counters and the stop flag, with the replay-ratio governor.

    The learner may take update u only once u < (env_steps − start) · ratio, and self-play may
    step its batch of environments while env_steps < start + (updates + 1) / ratio, the steps
    that the next update needs. The ratio of updates to environment steps is then the same
    whatever the speed of each side (to within one batch of environments).
    """

    ENV_STEPS, UPDATES, STOP = 0, 1, 2

    def __init__(self, start_transitions: int, replay_ratio: float, total_env_steps: int):
        self.values = torch.zeros(3, dtype=torch.int64).share_memory_()
        self.lock = mp.get_context("spawn").Lock()
        self.start, self.ratio, self.total = start_transitions, replay_ratio, total_env_steps

    @property
    def env_steps(self) -> int:
        return int(self.values[self.ENV_STEPS])

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
        """Count `n` new env steps; return the count before them (the first new step's id)."""
        with self.lock:
            before = int(self.values[self.ENV_STEPS])
            self.values[self.ENV_STEPS] = before + n
        return before

    def set_updates(self, n: int) -> None:
        self.values[self.UPDATES] = n

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

    def wait(self, condition, poll: float = 0.001) -> bool:
        """Sleep until `condition()` or the stop flag; False if stopping."""
        while not condition():
            if self.stopping:
                return False
            time.sleep(poll)
        return not self.stopping
