"""Gumbel-top-m and sequential halving at the root, with EZ-V2's phase budget.

The root keeps m "considered" children, first the top m of `g + logits`. Each simulation
visits the least-visited considered child (ties: the best ranked). At every phase boundary the
considered children are re-scored by `g + logits + σ(q̂)` and the better half is kept. The
action is the best of the last survivors under the same score.
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import Tensor

from effzero.search.qtransform import QTransform, improved_logits
from effzero.search.tree import Tree


@cache
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
    """Rank of each entry of `score` [B, C] in its row, 0 = best, ties to the lower slot.

    rank_i = #{j: s_j > s_i} + #{j < i: s_j = s_i}, by pairwise comparison ([B, C, C] is
    small, and faster than a stable sort for short rows).
    """
    left, right = score[:, :, None], score[:, None, :]  # i, j
    earlier = torch.ones(score.shape[-1], score.shape[-1], device=score.device).tril(-1).bool()
    beats = (right > left) | ((right == left) & earlier)
    return beats.sum(-1)


class SequentialHalving:
    """Root child selection of one batched Gumbel search.

    Args:
        gumbel: [B, C] Gumbel noise; logits: [B, C] root prior logits, -inf where invalid.
        max_considered: m; each root considers min(m, its number of legal children).
    """

    def __init__(self, gumbel: Tensor, logits: Tensor, max_considered: int, num_simulations: int):
        self.gumbel = gumbel
        slots = logits.shape[-1]
        considered = (logits > float("-inf")).sum(-1).clamp(max=max_considered)  # [B]
        self.rank = ranks(gumbel + logits)
        self.considered = self.rank < considered[:, None]
        # keep[b, s]: children root b keeps before simulation s, -1 if it does not halve then.
        table = torch.full((slots + 1, num_simulations + 1), -1, dtype=torch.long)
        for m in range(slots + 1):
            for boundary, kept in halving_schedule(num_simulations, m):
                table[m, boundary] = kept
        self.keep = table.to(logits.device)[considered]  # [B, N + 1]
        self.min_considered = int(considered.min())
        self.halving_at = {
            boundary
            for m in considered.unique().tolist()
            for boundary, _ in halving_schedule(num_simulations, m)
        }
        # Each root visits the considered child minimising visits·(C + 1) + rank; others +inf.
        self._visit_weight = float(slots + 1)
        self._key = self._order_key(torch.zeros_like(gumbel))

    def _order_key(self, visits: Tensor) -> Tensor:
        key = visits * self._visit_weight + self.rank.to(visits.dtype)
        return torch.where(self.considered, key, float("inf"))

    def score(self, tree: Tree, qt: QTransform) -> Tensor:
        """g + logits + σ(q̂) of the considered root children, -inf elsewhere: [B, C]."""
        logits, _ = improved_logits(tree, tree.row_offset, qt)
        return torch.where(self.considered, self.gumbel + logits, float("-inf"))

    def first_slots(self, k: int) -> Tensor:
        """The root children of simulations 0 .. k - 1, k ≤ every root's m: [B, k].

        With no child visited yet, simulation i visits the child ranked i, once each.
        """
        order = torch.empty_like(self.rank).scatter_(
            1, self.rank, torch.arange(self.rank.shape[1], device=self.rank.device).expand_as(self.rank)
        )
        slots = order[:, :k]
        self._key.scatter_add_(1, slots, self._key.new_full(slots.shape, self._visit_weight))
        return slots

    def root_slot(self, tree: Tree, simulation: int, qt: QTransform) -> Tensor:
        """The root child that simulation `simulation` visits: [B]."""
        if simulation in self.halving_at:
            keep = self.keep[:, simulation]
            new_rank = ranks(self.score(tree, qt))
            halves = (keep >= 0)[:, None]
            self.considered = torch.where(halves, new_rank < keep[:, None], self.considered)
            self.rank = torch.where(halves, new_rank, self.rank)
            self._key = self._order_key(tree.visits.gather(1, tree.children[:, 0]))
        slot = self._key.min(-1).indices
        self._key.scatter_add_(1, slot[:, None], self._key.new_full((slot.shape[0], 1), self._visit_weight))
        return slot

    def action(self, tree: Tree, qt: QTransform) -> Tensor:
        """The best surviving root child after the search: [B]."""
        return self.score(tree, qt).max(-1).indices
