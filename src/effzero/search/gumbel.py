"""Gumbel search (EZ-V2, Gumbel MuZero) over discrete actions and over sampled candidates."""

from __future__ import annotations

import torch
from torch import Tensor

from effzero.search.halving import SequentialHalving
from effzero.search.qtransform import QTransform, improved_logits, interior_select
from effzero.search.tree import ChildPriorsFn, Tree, init_tree, simulate
from effzero.search.types import RecurrentFn, SampleFn, SearchOutput, State


def draw_gumbel(shape: torch.Size, like: Tensor) -> Tensor:
    """Standard Gumbel noise of `shape` with the dtype and device of `like`."""
    return -torch.empty(shape, dtype=like.dtype, device=like.device).exponential_().log()


def search_dtype(root_value: Tensor) -> torch.dtype:
    """Statistics are kept in float32, or float64 when the root value is float64."""
    return torch.promote_types(root_value.dtype, torch.float32)


def draw_candidates(
    sample_fn: SampleFn, policy: Tensor, k_policy: int, k_wide: int, std_magnification: float
) -> Tensor:
    """`k_policy` actions from the policy and `k_wide` with its σ × `std_magnification`.

    Returns: [B, k_policy + k_wide, d]
    """
    drawn = [sample_fn(policy, k_policy, 1.0)] if k_policy > 0 else []
    if k_wide > 0:
        drawn.append(sample_fn(policy, k_wide, std_magnification))
    if not drawn:
        raise ValueError("sampled search needs k_policy + k_wide >= 1 root candidates")
    return torch.cat(drawn, 1)


def _run(
    tree: Tree,
    gumbel: Tensor,
    max_considered: int,
    num_simulations: int,
    recurrent_fn: RecurrentFn,
    child_priors: ChildPriorsFn,
    qt: QTransform,
    num_legal: int | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run the simulations; return (action slot, improved policy, root value, visits)."""
    halving = SequentialHalving(gumbel, tree.prior_logits[:, 0], max_considered, num_simulations, num_legal)

    def select(t: Tree, node: Tensor) -> Tensor:
        return interior_select(t, node, qt)

    simulation = 0
    for size in halving.rounds:
        simulate(
            tree,
            simulation,
            halving.root_slots(tree, simulation, size, qt),
            select,
            recurrent_fn,
            child_priors,
        )
        simulation += size
    logits, visits = improved_logits(tree, tree.roots, qt)
    logits = logits[:, 0]
    return halving.action(logits), torch.softmax(logits, -1), tree.value[:, 0], visits[:, 0]


@torch.no_grad()
def gumbel_search(
    root_logits: Tensor,
    root_value: Tensor,
    root_state: State,
    recurrent_fn: RecurrentFn,
    num_simulations: int,
    max_considered: int = 16,
    discount: float = 0.997,
    gumbel: Tensor | None = None,
    invalid_actions: Tensor | None = None,
    qtransform: QTransform = QTransform(),
) -> SearchOutput:
    """Batched Gumbel MuZero search with EZ-V2's root schedule and value estimate.

    Args:
        root_logits: [B, A] prior logits at the roots; mark illegal actions with
            `invalid_actions`, not with -inf logits (without it, every action is legal).
        root_value: [B] network values of the roots.
        root_state: pytree of [B, ...] latent states, handed to `recurrent_fn`.
        recurrent_fn: (state, action [B]) -> (reward [B], value [B], logits [B, A], state).
        num_simulations: N, one batched model call each.
        max_considered: m, the children kept by Gumbel-top-m at each root.
        discount: per-step discount inside the search.
        gumbel: [B, A] noise; None draws it, zeros search without noise (evaluation).
        invalid_actions: [B, A] bool, True where an action is illegal at the root (the search
            then counts the legal ones on the device: one host sync, so it cannot be compiled whole).
    Returns:
        action [B], improved_policy [B, A] = softmax(logits + σ(completed Q)), root_value [B]
        (SVE), visit_counts [B, A].
    """
    dtype = search_dtype(root_value)
    valid = torch.ones_like(root_logits, dtype=torch.bool)
    if invalid_actions is not None:
        valid = ~invalid_actions.to(torch.bool)
        if bool((~valid).all(-1).any()):
            raise ValueError("gumbel_search: a root has every action marked invalid")
    logits = root_logits.to(dtype).masked_fill(~valid, float("-inf"))
    tree = init_tree(
        logits, root_value.to(dtype), root_state, num_simulations, discount, qtransform.min_spread, valid
    )
    gumbel = draw_gumbel(logits.shape, logits) if gumbel is None else gumbel.to(dtype)
    num_legal = None if invalid_actions is not None else logits.shape[-1]
    slot, policy, value, visits = _run(
        tree,
        gumbel,
        max_considered,
        num_simulations,
        recurrent_fn,
        lambda p: (p, None),
        qtransform,
        num_legal,
    )
    return SearchOutput(
        action=slot, action_index=slot, improved_policy=policy, root_value=value, visit_counts=visits
    )


@torch.no_grad()
def sampled_gumbel_search(
    root_policy: Tensor,
    root_value: Tensor,
    root_state: State,
    recurrent_fn: RecurrentFn,
    sample_fn: SampleFn,
    num_simulations: int = 32,
    k_policy: int = 4,
    k_wide: int = 12,
    std_magnification: float = 3.0,
    k_interior: int = 2,
    max_considered: int = 16,
    discount: float = 0.997,
    gumbel: Tensor | None = None,
    qtransform: QTransform = QTransform(),
) -> SearchOutput:
    """Gumbel search over K sampled candidate actions (EZ-V2, continuous control).

    The root gets K = k_policy + k_wide candidates with a uniform prior; every other node gets
    `k_interior` children drawn from its own policy, also with a uniform prior.

    Args:
        root_policy: [B, P] policy parameters at the roots, handed to `sample_fn`.
        root_value, root_state, recurrent_fn, num_simulations, discount: as in `gumbel_search`;
            `recurrent_fn` takes actions [B, d] and returns policy parameters [B, P].
        sample_fn: (policy [B, P], n, std_scale) -> actions [B, n, d].
        gumbel: [B, K] noise; None draws it, zeros search without noise (EZ-V2's DMC setting).
    Returns:
        action [B, d], action_index [B], candidate_actions [B, K, d], improved_policy [B, K],
        root_value [B], visit_counts [B, K].
    """
    dtype = search_dtype(root_value)
    candidates = draw_candidates(sample_fn, root_policy, k_policy, k_wide, std_magnification)
    batch, num_candidates, _ = candidates.shape
    slots = max(num_candidates, k_interior)
    slot_index = torch.arange(slots, device=candidates.device)
    root_valid = (slot_index < num_candidates).expand(batch, slots)
    interior_valid = slot_index < k_interior
    zeros = torch.zeros(batch, slots, dtype=dtype, device=candidates.device)
    root_logits = zeros.masked_fill(~root_valid, float("-inf"))
    interior_logits = zeros.masked_fill(~interior_valid, float("-inf"))
    padded = candidates.new_zeros(batch, slots, candidates.shape[-1])
    padded[:, :num_candidates] = candidates
    tree = init_tree(
        root_logits,
        root_value.to(dtype),
        root_state,
        num_simulations,
        discount,
        qtransform.min_spread,
        root_valid,
        interior_valid if k_interior < slots else None,
        padded,
    )

    def child_priors(policy: Tensor) -> tuple[Tensor, Tensor]:
        children = candidates.new_zeros(policy.shape[0], slots, candidates.shape[-1])
        children[:, :k_interior] = sample_fn(policy, k_interior, 1.0)
        return interior_logits[:1].expand(policy.shape[0], slots), children

    noise = zeros[:, :num_candidates] if gumbel is None else gumbel.to(dtype)
    if gumbel is None:
        noise = draw_gumbel(noise.shape, noise)
    noise = torch.cat([noise, zeros[:, num_candidates:]], 1)
    slot, policy, value, visits = _run(
        tree, noise, max_considered, num_simulations, recurrent_fn, child_priors, qtransform, num_candidates
    )
    rows = torch.arange(batch, device=candidates.device)
    return SearchOutput(
        action=candidates[rows, slot],
        action_index=slot,
        improved_policy=policy[:, :num_candidates],
        root_value=value,
        visit_counts=visits[:, :num_candidates],
        candidate_actions=candidates,
    )
