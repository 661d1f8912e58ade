"""Prioritised replay in shared memory, with its capacity fixed when it is created.

Storage is one ring ("lane") per self-play environment, so every lane holds a contiguous
stream of that environment's steps, episode after episode. An episode that ends is followed
by one observation-only slot holding its final observation (the terminal state, or the state
where the time limit cut it), so unroll windows and n-step targets never need data from
outside the lane. Image observations arrive as stacks of S frames; each slot stores only the
newest frame, and a window is read back as its frames, the S − 1 before it included (the
episode's first frame repeated before its start), which `stack_frames` turns into stacks.

Slots become sampleable once the whole window after them (unroll + TD steps) is written or
their episode has ended, and stop being so when the ring overwrites them or a frame of their
stack; new transitions get the largest priority the replay holds.

A writer may be killed at any instruction. Each step it takes is a small transaction per lane
(`begin`, append / end episodes, `commit`): `recover` undoes an uncommitted step from the
journal `begin` wrote, and closes the lane's unfinished episode as a time-limit cut, so a
restarted writer starts a fresh episode in a consistent lane and nothing half-written is
ever sampleable. `transitions` counts the action-carrying slots written per lane: the env
steps the run has stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Slot kinds.
TRANSITION = 0  # a step inside an episode
TERMINATED = 1  # the last step of an episode that reached a terminal state
TRUNCATED = 2  # the last step of an episode cut by a time limit
FINAL = 3  # the observation an ended episode reached; no action was taken from it


@dataclass(frozen=True)
class ReplayLayout:
    """Shapes and sizes of a replay."""

    lanes: int  # one per self-play environment
    lane_length: int  # slots per lane
    obs_shape: tuple[int, ...]  # what the env returns: [S·C, H, W] for S stacked frames
    obs_dtype: torch.dtype
    action_shape: tuple[int, ...]  # () for discrete actions, (d,) for continuous
    action_dtype: torch.dtype
    policy_size: int  # width of the stored search policy
    window: int  # slots needed after a start slot: unroll steps + TD steps
    frame_stack: int = 1  # S; the replay stores one frame of [C, H, W] = obs_shape with C / S

    @property
    def capacity(self) -> int:
        return self.lanes * self.lane_length

    @property
    def frame_shape(self) -> tuple[int, ...]:
        if self.frame_stack == 1:
            return self.obs_shape
        return (self.obs_shape[0] // self.frame_stack, *self.obs_shape[1:])

    def nbytes(self) -> int:
        """Bytes of shared memory the replay takes."""
        per_slot = (
            int(np.prod(self.frame_shape)) * self.obs_dtype.itemsize
            + max(int(np.prod(self.action_shape)), 1) * self.action_dtype.itemsize
            + 4 * (3 + self.policy_size)  # reward, root value, priority, policy
            + 16  # global step and episode start of the slot
            + 2  # kind, sampleable
        )
        per_lane = 8 * 6 + 1  # written, episode start, transitions, journal (3), pending
        return self.capacity * per_slot + self.lanes * per_lane + 4  # + max priority


class Replay:
    """Transitions of `layout.lanes` environment streams in shared-memory tensors.

    One process writes each lane (its self-play worker); any process may sample. The learner
    writes priorities back.
    """

    def __init__(self, layout: ReplayLayout):
        self.layout = layout
        lanes, length = layout.lanes, layout.lane_length

        def shared(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.zeros(*shape, dtype=dtype).share_memory_()

        self.obs = shared(lanes, length, *layout.frame_shape, dtype=layout.obs_dtype)
        self.action = shared(lanes, length, *layout.action_shape, dtype=layout.action_dtype)
        self.reward = shared(lanes, length)
        self.kind = shared(lanes, length, dtype=torch.uint8)
        self.root_value = shared(lanes, length)
        self.policy = shared(lanes, length, layout.policy_size)
        self.step = shared(lanes, length, dtype=torch.int64)
        self.start = shared(lanes, length, dtype=torch.int64)  # absolute slot of each slot's episode start
        self.priority = shared(lanes, length)
        self.sampleable = shared(lanes, length, dtype=torch.bool)
        self.written = shared(lanes, dtype=torch.int64)  # slots written per lane, ever
        self.episode_start = shared(lanes, dtype=torch.int64)  # absolute slot of the current episode
        self.transitions = shared(lanes, dtype=torch.int64)  # action-carrying slots per lane, ever
        self.journal = shared(lanes, 3, dtype=torch.int64)  # (written, episode start, transitions) at `begin`
        self.pending = shared(lanes, dtype=torch.bool)  # a step has begun and not committed
        self.max_priority = torch.ones(1).share_memory_()

    # ------------------------------------------------------------------ writing

    def append(
        self,
        lanes: Tensor,
        obs: Tensor,
        action: Tensor,
        reward: Tensor,
        kind: Tensor,
        root_value: Tensor,
        policy: Tensor,
        step: Tensor,
    ) -> None:
        """Write one slot at the head of each lane in `lanes` [n].

        Args:
            obs: [n, *obs]; action: [n, *action]; reward, root_value: [n]; kind: [n] uint8;
            policy: [n, P]; step: [n] the global env step of each slot.
        """
        position = self.written[lanes]
        length, stack = self.layout.lane_length, self.layout.frame_stack
        slot = position % length
        # First take the slot out of sampling: it may hold an old sampleable step of the ring.
        self.sampleable[lanes, slot] = False
        # Its old frame was in the stacks of the S − 1 slots after it: those of them whose
        # episode began at or before it can no longer be read back whole.
        overwritten = position - length  # < 0 until the lane's ring has wrapped
        wrapped = overwritten >= 0
        if stack > 1 and bool(wrapped.any()):
            for k in range(1, stack):
                later = (slot + k) % length
                broken = wrapped & (self.start[lanes, later] <= overwritten)
                self.sampleable[lanes[broken], later[broken]] = False
        frame = obs if self.layout.frame_stack == 1 else obs[:, -self.layout.frame_shape[0] :]
        self.obs[lanes, slot] = frame.to(self.obs.dtype)
        self.start[lanes, slot] = self.episode_start[lanes]
        self.action[lanes, slot] = action.to(self.action.dtype)
        self.reward[lanes, slot] = reward.float()
        self.kind[lanes, slot] = kind
        self.root_value[lanes, slot] = root_value.float()
        self.policy[lanes, slot] = policy.float()
        self.step[lanes, slot] = step
        self.priority[lanes, slot] = self.max_priority * (kind != FINAL)  # a final slot is never sampled
        # The slot `window` steps back now has a complete window, if it is in an episode.
        back = position - self.layout.window
        ok = back >= self.episode_start[lanes]
        self._mark_sampleable(lanes[ok], back[ok])
        self.transitions[lanes] += (kind != FINAL).long()
        self.written[lanes] = position + 1

    def end_episodes(self, lanes: Tensor, final_obs: Tensor, step: Tensor) -> None:
        """Write the final observation [n, *obs] of the episodes that just ended in `lanes`.

        Every transition of those episodes whose window was still open becomes sampleable:
        its window now ends inside the episode or at this final slot.
        """
        start = torch.maximum(self.episode_start[lanes], self.written[lanes] - self.layout.window)
        for lane, first, last in zip(
            lanes.tolist(), start.tolist(), self.written[lanes].tolist(), strict=True
        ):
            if last > first:
                positions = torch.arange(first, last)
                self._mark_sampleable(torch.full_like(positions, lane), positions)
        n = lanes.shape[0]
        self.append(
            lanes,
            final_obs,
            torch.zeros(n, *self.layout.action_shape, dtype=self.action.dtype),
            torch.zeros(n),
            torch.full((n,), FINAL, dtype=torch.uint8),
            torch.zeros(n),
            torch.zeros(n, self.layout.policy_size),
            step,
        )
        self.episode_start[lanes] = self.written[lanes]

    def begin(self, lanes: Tensor) -> None:
        """Start a step on `lanes`: journal their state so that `recover` can undo the step."""
        self.journal[lanes] = torch.stack(
            (self.written[lanes], self.episode_start[lanes], self.transitions[lanes]), 1
        )
        self.pending[lanes] = True  # after the journal: a pending lane's journal is complete

    def commit(self, lanes: Tensor) -> None:
        """End the step begun on `lanes`: from here on `recover` keeps it."""
        self.pending[lanes] = False

    def recover(self, lanes: list[int]) -> int:
        """Repair the lanes of a writer that died; call it only while nobody writes them.

        An uncommitted step is undone. An unfinished episode is closed as a time-limit cut:
        its last slot becomes the final observation of the step before it (the observation
        that step reached), since the observation after the last action died with the writer.
        Returns the transitions dropped: one per unfinished episode (its last action).
        """
        dropped = 0
        for lane in lanes:
            if self.pending[lane]:
                self._undo(lane)
            dropped += self._close_episode(lane)
        return dropped

    def _undo(self, lane: int) -> None:
        written, start, transitions = self.journal[lane].tolist()
        # The step wrote at most two slots (a transition, a final observation) and marked
        # windows of its open episode that were not sampleable before it.
        first = max(start, written - self.layout.window)
        self._set_sampleable(lane, range(first, written + 2), False)
        self.written[lane], self.episode_start[lane], self.transitions[lane] = written, start, transitions
        self.pending[lane] = False

    def _close_episode(self, lane: int) -> int:
        written, start = int(self.written[lane]), int(self.episode_start[lane])
        if written == start:
            return 0
        last = written - 1
        length = self.layout.lane_length
        if last == start:  # only the first observation and its action: drop them
            self.sampleable[lane, last % length] = False
            self.written[lane] = start
        else:
            slot = last % length
            self.sampleable[lane, slot] = False
            self.kind[lane, (last - 1) % length] = TRUNCATED
            self.kind[lane, slot] = FINAL
            self.action[lane, slot] = 0
            self.reward[lane, slot] = 0.0
            self.root_value[lane, slot] = 0.0
            self.policy[lane, slot] = 0.0
            self.priority[lane, slot] = 0.0
            # As in `end_episodes`: the windows still open now end at the cut.
            self._set_sampleable(lane, range(max(start, last - self.layout.window), last), True)
            self.episode_start[lane] = written
        self.transitions[lane] -= 1
        return 1

    def _set_sampleable(self, lane: int, positions: range, value: bool) -> None:
        if len(positions) == 0:
            return
        slots = torch.tensor(positions) % self.layout.lane_length
        self.sampleable[lane, slots] = value

    def _mark_sampleable(self, lanes: Tensor, positions: Tensor) -> None:
        slot = positions % self.layout.lane_length
        self.sampleable[lanes, slot] = self.kind[lanes, slot] != FINAL

    # ------------------------------------------------------------------ reading

    def size(self) -> int:
        """Slots written so far over all lanes (final-observation slots included)."""
        return int(self.written.sum())

    def num_sampleable(self) -> int:
        return int(self.sampleable.sum())

    def sample(
        self, batch_size: int, alpha: float, beta: float, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draw start slots ∝ priority^α without replacement, with IS weights.

        Returns:
            lanes [B], slots [B], weights [B] = (N·P)^-β / max, clipped to [0.1, 1].
        """
        mask = self.sampleable.view(-1)
        probs = self.priority.view(-1).clamp(min=1e-12).pow(alpha) * mask
        total = probs.sum()
        count = int(mask.sum())
        if count < batch_size:
            raise ValueError(f"replay has {count} sampleable slots, fewer than a batch of {batch_size}")
        flat = torch.multinomial(probs, batch_size, replacement=False, generator=generator)
        p = probs[flat] / total
        weights = (count * p).pow(-beta)
        weights = (weights / weights.max()).clamp(0.1, 1.0)
        length = self.layout.lane_length
        return flat // length, flat % length, weights

    def windows(self, lanes: Tensor, slots: Tensor) -> dict[str, Tensor]:
        """The `window + 1` slots from each start slot, and their frames.

        Frames run from S − 1 slots before the start slot to the window's end; those before the
        start slot's episode began repeat its first frame. Positions past the episode's end
        belong to the next episode and are masked by the targets.

        Returns: frames [B, W + S, *frame], action [B, W + 1, *action],
            reward/kind/step [B, W + 1]
        """
        length, stack = self.layout.lane_length, self.layout.frame_stack
        offsets = torch.arange(self.layout.window + 1)
        ring = (slots[:, None] + offsets) % length
        rows = lanes[:, None]
        # Absolute positions: the start slot's, from which the frame positions follow.
        position = self.written[lanes] - 1 - (self.written[lanes] - 1 - slots) % length
        frame_offsets = torch.arange(1 - stack, self.layout.window + 1)
        frame_positions = torch.maximum(position[:, None] + frame_offsets, self.start[lanes, slots][:, None])
        return {
            "frames": self.obs[rows, frame_positions % length],
            "action": self.action[rows, ring],
            "reward": self.reward[rows, ring],
            "kind": self.kind[rows, ring],
            "step": self.step[rows, ring],
        }

    def update_priorities(self, lanes: Tensor, slots: Tensor, priorities: Tensor) -> None:
        """Set new priorities [B] (the learner's value errors) of sampled slots.

        New slots enter at the largest priority the replay holds now, as EZ-V2's buffer does:
        it falls as the errors shrink (the largest ever seen would pin every new slot to one
        early outlier). Final observations hold priority 0, so they do not count.
        """
        self.priority[lanes, slots] = priorities.float()
        self.max_priority.copy_(self.priority.max().view(1))

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Tensor]:
        """A copy of every tensor (written slots only matter; the layout is the same)."""
        return {name: getattr(self, name).clone() for name in self._tensor_names()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "transitions" not in state:  # a checkpoint from before the count: count what the ring holds
            state = {**state, "transitions": state["written"] - (state["kind"] == FINAL).sum(1)}
        for name in self._tensor_names():
            target = getattr(self, name)
            if state[name].shape != target.shape:
                raise ValueError(
                    f"replay checkpoint does not fit this run: {name} has shape {tuple(state[name].shape)}, "
                    f"this run's replay {tuple(target.shape)}. Lanes (the first size) come from "
                    "data.selfplay_workers × env.num_envs, slots per lane (the second) from data.capacity "
                    "or data.total_env_steps, the rest from the env and model: resume with the run's own settings"
                )
            target.copy_(state[name])
        self.priority[self.kind == FINAL] = 0.0  # checkpoints from before final slots held none

    @staticmethod
    def _tensor_names() -> tuple[str, ...]:
        return (
            "obs",
            "action",
            "reward",
            "kind",
            "root_value",
            "policy",
            "step",
            "start",
            "priority",
            "sampleable",
            "written",
            "episode_start",
            "transitions",
            "max_priority",
        )


def stack_frames(frames: Tensor, stack: int) -> Tensor:
    """Frame stacks from consecutive frames: [B, T + S − 1, C, ...] -> [B, T, S·C, ...].

    Stack t holds frames t .. t + S − 1 (oldest first), as the envs stack them.
    """
    if stack == 1:
        return frames
    windows = frames.unfold(1, stack, 1)  # [B, T, C, ..., S]
    windows = windows.movedim(-1, 2)  # [B, T, S, C, ...]
    return windows.flatten(2, 3)
