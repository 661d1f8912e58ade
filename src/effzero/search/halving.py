"""Gumbel-top-m and sequential halving at the root, with EZ-V2's phase budget.

The root keeps m "considered" children, first the top m of `g + logits`. Each simulation
visits the least-visited considered child (ties: the best ranked). At every phase boundary the
considered children are re-scored by `g + logits + σ(q̂)` and the better half is kept. The
action is the best of the last survivors under the same score.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from effzero.search.qtransform import QTransform, improved_logits
from effzero.search.tree import Tree


def halving_schedule(num_simulations: int, num_considered: int) -> tuple[tuple[int, int], ...]:
    """EZ-V2's phase budget: ((simulations done, children kept), ...) for each halving.

    The first phase takes max(⌊N / (log2(m)·m)⌋, 1)·m simulations; each later phase with
    m' > 2 survivors takes max(⌊N / (log2(m)·m')⌋, 1)·m'; once m' ≤ 2 the rest of the
    budget goes to the last phase. Boundaries are capped at N, where the last halving runs.
    """
    n, m = num_simulations, num_considered
    if m <= 1 or n <= 0:
        return ()
    log_m = math.log2(m)
    schedule = []
    current = m
    boundary = min(max(math.floor(n / (log_m * m)), 1) * m, n)
    while True:
        current = max(current // 2, 1)
        schedule.append((boundary, current))
        if boundary >= n:
            return tuple(schedule)
        if current > 2:
            boundary = min(boundary + max(math.floor(n / (log_m * current)), 1) * current, n)
        else:
            boundary = n


def ranks(score: Tensor) -> Tensor:
    """Rank of each entry of `score` [B, C] in its row, 0 = best, ties to the lower slot."""
    order = torch.argsort(score, dim=-1, descending=True, stable=True)
    positions = torch.arange(score.shape[-1], device=score.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def simulation_rounds(num_simulations: int, num_considered: int) -> tuple[int, ...]:
    """Sizes of the rounds a Gumbel search can batch, for a uniform m.

    Within a phase every survivor is visited once per round, in rank order. A round is one
    batch when its survivors have at most one visit each: their paths go to distinct root
    children and stop there or one level below, where no child has been visited yet, so the
    interior choice is the prior's argmax whatever the other paths back up. Later rounds run
    one simulation at a time.
    """
    n, m = num_simulations, max(num_considered, 1)
    rounds: list[int] = []
    done, alive, visits = 0, m, 0
    for boundary, kept in (*halving_schedule(n, m), (n, 1)):
        while done < boundary:
            size = min(alive, boundary - done)
            rounds.extend([size] if visits <= 1 else [1] * size)
            done, visits = done + size, visits + 1
        alive = kept
    return tuple(rounds)


class SequentialHalving:
    """Root child selection of one batched Gumbel search.

    Args:
        gumbel: [B, C] Gumbel noise; logits: [B, C] root prior logits, -inf where invalid.
        max_considered: m; each root considers min(m, its number of legal children).
        num_legal: the number of legal children when every root has the same number (the
            caller knows it: no host sync), None to count them on the device.
    """

    def __init__(
        self,
        gumbel: Tensor,
        logits: Tensor,
        max_considered: int,
        num_simulations: int,
        num_legal: int | None = None,
    ):
        self.gumbel = gumbel
        batch, slots = logits.shape
        if num_legal is None:  # counted on the device: one host sync
            considered = (logits > float("-inf")).sum(-1).clamp(max=max_considered)  # [B]
            distinct = considered.unique().tolist()
        else:
            distinct = [min(num_legal, max_considered)]
            considered = torch.full((batch,), distinct[0], device=logits.device)
        self.rank = ranks(gumbel + logits)
        self.considered = self.rank < considered[:, None]
        # keep[b, s]: children root b keeps before simulation s, -1 if it does not halve then.
        table = [[-1] * (num_simulations + 1) for _ in range(slots + 1)]
        for m in distinct:
            for boundary, kept in halving_schedule(num_simulations, m):
                table[m][boundary] = kept
        self.keep = torch.tensor(table, device=logits.device)[considered]  # [B, N + 1]
        self.halving_at = {b for m in distinct for b, _ in halving_schedule(num_simulations, m)}
        if len(distinct) == 1:
            self.rounds = simulation_rounds(num_simulations, distinct[0])
        else:  # the first round is common to all roots, the rest go one by one
            first = min(min(distinct), num_simulations)
            self.rounds = (first, *[1] * (num_simulations - first)) if first else (1,) * num_simulations
        # Each root visits the considered child minimising visits·(C + 1) + rank; others +inf.
        self._visit_weight = float(slots + 1)
        self._key = self._order_key(torch.zeros_like(gumbel))

    def _order_key(self, visits: Tensor) -> Tensor:
        key = visits * self._visit_weight + self.rank.to(visits.dtype)
        return torch.where(self.considered, key, float("inf"))

    def score(self, improved: Tensor) -> Tensor:
        """g + `improved` [B, C] (logits + σ(q̂)) for the considered root children, -inf elsewhere."""
        return torch.where(self.considered, self.gumbel + improved, float("-inf"))

    def root_slots(self, tree: Tree, simulation: int, k: int, qt: QTransform) -> Tensor:
        """The root children that simulations `simulation .. simulation + k - 1` visit: [B, k]."""
        if simulation in self.halving_at:
            keep = self.keep[:, simulation]
            new_rank = ranks(self.score(improved_logits(tree, tree.roots, qt)[0][:, 0]))
            halves = (keep >= 0)[:, None]
            self.considered = torch.where(halves, new_rank < keep[:, None], self.considered)
            self.rank = torch.where(halves, new_rank, self.rank)
            self._key = self._order_key(tree.visits.gather(1, tree.children[:, 0]))
        slots = (
            self._key.topk(k, largest=False, sorted=True).indices
            if k > 1
            else self._key.min(-1, keepdim=True).indices
        )
        self._key.scatter_add_(1, slots, self._key.new_full(slots.shape, self._visit_weight))
        return slots

    def action(self, improved: Tensor) -> Tensor:
        """The best surviving root child after the search, given the root's improved logits: [B]."""
        return self.score(improved).max(-1).indices
