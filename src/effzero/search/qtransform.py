"""Completed Q-values and the σ transform of Gumbel MuZero, as EZ-V2 uses them.

completed Q: Q for visited children, v_mix for the rest, where
    v_mix = (V + N · Σ_visited π(a) Q(a) / Σ_visited π(a)) / (1 + N)   (V if no child is visited),
V is the node's running mean value, π = softmax(prior logits) and N the node's visits: the
children's ΣN in the Gumbel MuZero paper, ΣN + 1 in EZ-V2's code, where a node also counts
its own expansion (`QTransform.visit_offset` = 0 or 1; the interior rule uses the same N).
σ(q̂) = (c_visit + max_b N(b)) · c_scale · q̂, with q̂ the tree's min-max normalisation of Q.

Every function takes node indices of shape [B, k] (k paths per tree) and works on the last
dimension, the node's child slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from effzero.search.tree import Tree


@dataclass(frozen=True)
class QTransform:
    """Constants of σ, of the min-max normalisation (EZ-V2: 50, 0.1, 0.01) and of a node's visits.

    `visit_offset`: a node's N = its children's ΣN + this (0: the Gumbel MuZero paper; 1:
    EZ-V2's code, whose nodes count their own expansion).
    """

    c_visit: float = 50.0
    c_scale: float = 0.1
    min_spread: float = 0.01
    visit_offset: float = 0.0


def completed_q(
    prior: Tensor, visits: Tensor, q: Tensor, node_value: Tensor, visit_offset: float = 0.0
) -> Tensor:
    """Q of visited children, v_mix for unvisited ones.

    Args:
        prior: [..., C] prior probabilities; visits: [..., C]; q: [..., C], 0 where unvisited;
        node_value: [...] the node's running mean value; visit_offset: see `QTransform`.
    Returns: [..., C]
    """
    # Float masks and arithmetic selects: boolean ops are far slower on CPU. With no child
    # visited, weighted_q = 0 / tiny = 0 and n = 0, so v_mix = V.
    visited = visits.clamp(max=1.0)
    total = visits.sum(-1, keepdim=True)
    n = (total + visit_offset) * total.clamp(max=1.0)
    weight = prior * visited
    mass = weight.sum(-1, keepdim=True).clamp(min=torch.finfo(q.dtype).tiny)
    v_mix = torch.addcmul(node_value[..., None], n, (weight * q).sum(-1, keepdim=True) / mass) / (1 + n)
    return torch.lerp(v_mix, q, visited)  # exact at weights 0 and 1


def improved_logits(tree: Tree, node: Tensor, qt: QTransform) -> tuple[Tensor, Tensor]:
    """logits + σ(completed Q) of the children of `node` [B, k], and their visits.

    Returns: ([B, k, C] improved logits, -inf for invalid slots; [B, k, C] visits)
    """
    visits, q = tree.children_stats(node)
    prior, value = tree.node_rows(tree.prior, node), tree.value.gather(1, node)
    completed = completed_q(prior, visits, q, value, qt.visit_offset)
    scale = (qt.c_visit + visits.amax(-1, keepdim=True)) * qt.c_scale
    return torch.addcmul(tree.node_rows(tree.prior_logits, node), scale, tree.normalize(completed)), visits


def interior_select(tree: Tree, node: Tensor, qt: QTransform) -> Tensor:
    """Gumbel MuZero's deterministic interior rule: argmax π′(a) − N(a) / (1 + N), N = ΣN + visit_offset.

    π′ = softmax(logits + σ(completed Q)). Ties go to the lowest slot. Returns: [B, k] slots.
    """
    logits, visits = improved_logits(tree, node, qt)
    score = torch.softmax(logits, -1) - visits / (1 + qt.visit_offset + visits.sum(-1, keepdim=True))
    if tree.interior_bias is not None:
        score = score + tree.interior_bias
    return score.max(-1).indices
