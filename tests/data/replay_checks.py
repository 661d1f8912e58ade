"""Invariants of a replay that no writer is writing, for the tests that kill writers."""

from __future__ import annotations

import torch

from effzero.data.replay import FINAL, TERMINATED, TRUNCATED


def replay_problems(state: dict[str, torch.Tensor], window: int) -> list[str]:
    """What is wrong with a replay (a `Replay.state_dict()`) that no writer is writing.

    Every lane must be a run of episodes — transitions, an end (terminated or cut), its final
    observation — and at most one unfinished episode at its head; every slot must know its
    episode's start; `transitions` must count the action-carrying slots; a slot is sampleable
    exactly when it is a transition whose window is written or whose episode has ended. Lanes
    the ring has wrapped are not checked.
    """
    problems = []
    length = state["kind"].shape[1]
    for lane, written in enumerate(state["written"].tolist()):
        if written > length:
            continue
        kind = state["kind"][lane, :written].tolist()
        start, sampleable = state["start"][lane].tolist(), state["sampleable"][lane].tolist()
        stored = sum(k != FINAL for k in kind)
        if stored != int(state["transitions"][lane]):
            problems.append(
                f"lane {lane}: {stored} transitions stored, counted {int(state['transitions'][lane])}"
            )
        closed, ending = [False] * written, False  # closed[p]: slot p's episode has ended
        for p in reversed(range(written)):
            ending = (ending and kind[p] != FINAL) or kind[p] in (TERMINATED, TRUNCATED)
            closed[p] = ending
        first, ended = 0, False
        for p, k in enumerate(kind):
            if start[p] != first:
                problems.append(f"lane {lane} slot {p}: episode start {start[p]}, expected {first}")
            if k == FINAL:
                if not ended:
                    problems.append(f"lane {lane} slot {p}: a final observation after no episode end")
                first, ended, expected = p + 1, False, False
            elif ended:
                problems.append(
                    f"lane {lane} slot {p}: a step between an episode's end and its final observation"
                )
                expected = False
            else:
                ended = k in (TERMINATED, TRUNCATED)
                expected = p + window < written or closed[p]
            if sampleable[p] != expected:
                problems.append(
                    f"lane {lane} slot {p} (kind {k}): sampleable {sampleable[p]}, expected {expected}"
                )
        if ended:
            problems.append(f"lane {lane}: its last episode ended without a final observation")
        if int(state["episode_start"][lane]) != first:
            problems.append(
                f"lane {lane}: episode_start {int(state['episode_start'][lane])}, expected {first}"
            )
        if any(sampleable[written:]):
            problems.append(f"lane {lane}: an unwritten slot is sampleable")
    if bool(state.get("pending", torch.zeros(1)).any()):
        problems.append("a step is pending")
    return problems
