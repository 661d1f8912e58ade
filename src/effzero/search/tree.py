"""The search tree as preallocated tensors, and the three steps every search shares.

Layout (mctx-style): `B` roots are searched at once; node `0` is each root and node `s + 1`
is the node expanded by simulation `s`. Node `N + 1` is a sentinel, `UNEXPANDED`: every
child slot points at it until the child is expanded, and its statistics stay zero, so
gathering a node's children never needs a mask. Python loops run over simulations and
depth only, never over roots or nodes.

A node's value is the running mean of every return backed up through it, its own network
value included as the first entry (EZ-V2's `estimated_value_lst`). The root starts with one
visit holding the network value, so after `N` simulations its mean is EZ-V2's search-based
value estimate (SVE).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from effzero.search.types import RecurrentFn, State

# fn(tree, node [B]) -> child slot [B]
SelectFn = Callable[["Tree", Tensor], Tensor]


def map_state(fn: Callable[[Tensor], Tensor], state: State) -> State:
    """Apply `fn` to every tensor of a state pytree (tensor, tuple, list or dict)."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(fn, v) for v in state)
    raise TypeError(f"search state must be a tensor or a tuple/list/dict of tensors, got {type(state)}")


def _state_leaves(state: State) -> list[Tensor]:
    leaves: list[Tensor] = []
    map_state(lambda t: leaves.append(t) or t, state)
    return leaves


def _write_state(pool: State, node: int, state: State) -> None:
    """pool leaves [B, N + 1, ...] <- state leaves [B, ...] at column `node`."""
    for dst, src in zip(_state_leaves(pool), _state_leaves(state), strict=True):
        dst[:, node] = src


@dataclass
class Tree:
    """Search statistics of `B` trees with room for `N` simulations over `C` child slots."""

    children: Tensor  # [B, N + 2, C] long, node index of each child slot or the sentinel
    prior_logits: Tensor  # [B, N + 2, C] prior logits of each child slot, -inf if invalid
    prior: Tensor  # [B, N + 2, C] softmax of prior_logits
    visits: Tensor  # [B, N + 2] backups through each node, its own expansion included
    value_sum: Tensor  # [B, N + 2] sum of returns backed up through each node
    value: Tensor  # [B, N + 2] value_sum / visits, the running mean
    reward: Tensor  # [B, N + 2] reward of the edge into each node
    q: Tensor  # [B, N + 2] reward + γ·value: Q of the edge into each node
    states: State  # leaves [B, N + 1, ...] latent state of each node
    actions: Tensor | None  # [B, N + 2, C, d] action of each child slot (sampled search)
    q_min: Tensor  # [B] smallest sampled edge return seen in the tree
    q_max: Tensor  # [B] largest sampled edge return seen in the tree
    root_bias: Tensor  # [B, C] 0 for the root's legal child slots, -inf for the others
    interior_bias: Tensor | None  # [C] the same for every other node; None = all legal
    discount: float
    min_spread: float  # smallest max - min the normalisation divides by
    rows: Tensor  # [B] arange, for indexing one node per root
    roots: Tensor  # [B] zeros: the root of every tree
    row_offset: Tensor  # [B] rows·(N + 2), the flat index of each root's node 0
    discounts: Tensor  # [N + 4, N + 3] the discount matrix of `backup`
    tail: Tensor  # [B, 2] long, two sentinel columns that end every path
    ones: Tensor  # [B, N + 3] ones, one visit per path column

    @property
    def sentinel(self) -> int:
        """Index of the unexpanded-child sentinel node."""
        return self.visits.shape[1] - 1

    def flat_index(self, node: Tensor) -> Tensor:
        """Flat index of node `node[b]` of tree b in the [B·(N + 2)] node arrays: [B]."""
        return self.row_offset + node

    def node_rows(self, per_slot: Tensor, index: Tensor) -> Tensor:
        """Rows at flat node `index` [B] of a per-slot array [B, N + 2, C, ...] -> [B, C, ...]."""
        return per_slot.view(-1, *per_slot.shape[2:]).index_select(0, index)

    def children_stats(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Visit counts and Q = r + γ·V of the children of flat node `index` [B]: ([B, C], [B, C]).

        Unvisited children have 0 visits and Q = 0 (they point at the sentinel).
        """
        child = self.node_rows(self.children, index)
        return self.visits.gather(1, child), self.q.gather(1, child)

    def normalize(self, q: Tensor) -> Tensor:
        """Min-max normalise Q [B, C] over each tree, spread at least `min_spread`, into [0, 1]."""
        spread = (self.q_max - self.q_min).clamp(min=self.min_spread)
        return ((q - self.q_min[:, None]) / spread[:, None]).clamp(0.0, 1.0)


def _bias(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """0 where `valid`, -inf elsewhere: added to scores, it masks faster than a select."""
    return torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, float("-inf"))


def init_tree(
    root_logits: Tensor,
    root_value: Tensor,
    root_state: State,
    num_simulations: int,
    discount: float,
    min_spread: float,
    root_valid: Tensor,
    interior_valid: Tensor | None = None,
    root_actions: Tensor | None = None,
) -> Tree:
    """Allocate a tree for `num_simulations` and write its root.

    Args:
        root_logits: [B, C] prior logits of the root's children, -inf where invalid.
        root_value: [B] network value of the root; its dtype is the statistics' dtype.
        root_state: pytree of [B, ...] latent states.
        root_valid: [B, C] bool legal root slots; interior_valid: [C] bool, None = all legal.
        root_actions: [B, C, d] candidate actions of the root (sampled search only).
    """
    batch, slots = root_logits.shape
    nodes = num_simulations + 2
    dtype, device = root_value.dtype, root_value.device

    def zeros(*shape: int) -> Tensor:
        return torch.zeros(batch, *shape, dtype=dtype, device=device)

    prior_logits = zeros(nodes, slots)
    prior_logits[:, 0] = root_logits
    prior = zeros(nodes, slots)
    prior[:, 0] = torch.softmax(root_logits, -1)
    visits, value_sum, value = zeros(nodes), zeros(nodes), zeros(nodes)
    visits[:, 0] = 1.0
    value_sum[:, 0] = root_value
    value[:, 0] = root_value
    states = map_state(lambda t: t.new_zeros((batch, num_simulations + 1, *t.shape[1:])), root_state)
    _write_state(states, 0, root_state)
    actions = None
    if root_actions is not None:
        actions = root_actions.new_zeros((batch, nodes, slots, root_actions.shape[-1]))
        actions[:, 0] = root_actions
    return Tree(
        children=torch.full((batch, nodes, slots), nodes - 1, dtype=torch.long, device=device),
        prior_logits=prior_logits,
        prior=prior,
        visits=visits,
        value_sum=value_sum,
        value=value,
        reward=zeros(nodes),
        q=zeros(nodes),
        states=states,
        actions=actions,
        q_min=torch.full((batch,), float("inf"), dtype=dtype, device=device),
        q_max=torch.full((batch,), float("-inf"), dtype=dtype, device=device),
        root_bias=_bias(root_valid, dtype),
        interior_bias=None
        if interior_valid is None or bool(interior_valid.all())
        else _bias(interior_valid, dtype),
        discount=discount,
        min_spread=min_spread,
        rows=torch.arange(batch, device=device),
        roots=torch.zeros(batch, dtype=torch.long, device=device),
        row_offset=torch.arange(batch, device=device) * nodes,
        discounts=discount_matrix(nodes + 1, discount, dtype, device),
        tail=torch.full((batch, 2), nodes - 1, dtype=torch.long, device=device),
        ones=torch.ones(batch, nodes + 1, dtype=dtype, device=device),
    )


def traverse(tree: Tree, root_slot: Tensor, select: SelectFn) -> tuple[Tensor, Tensor, Tensor]:
    """Walk every root down to an unexpanded child slot.

    Args:
        root_slot: [B] child slot taken at the root.
        select: chooses the child slot at interior nodes.
    Returns:
        path: [B, D] nodes from the root (column 0) down to the parent of the new leaf, which
            sits in column `depth`; later columns hold the sentinel.
        depth: [B] depth of the parent (0 = the root).
        slot: [B] child slot of the new leaf under the parent.
    """
    rows = tree.rows
    nodes, slots = [tree.roots], [root_slot]
    node = tree.children[rows, tree.roots, root_slot]
    while bool((node != tree.sentinel).any()):
        # A walk that left the tree sits on the sentinel, whose children are all the sentinel.
        nodes.append(node)
        slots.append(select(tree, node))
        node = tree.children[rows, node, slots[-1]]
    if len(nodes) == 1:
        return nodes[0][:, None], nodes[0], root_slot
    path = torch.stack(nodes, 1)
    depth = (path != tree.sentinel).sum(1) - 1
    return path, depth, torch.stack(slots, 1)[rows, depth]


def expand(
    tree: Tree,
    simulation: int,
    parent: Tensor,
    slot: Tensor,
    reward: Tensor,
    child_logits: Tensor,
    next_state: State,
    child_actions: Tensor | None = None,
) -> None:
    """Write node `simulation + 1` under `parent` [B] at `slot` [B].

    Args:
        reward: [B] reward of the new edge; child_logits: [B, C] priors of the new node's
            children; child_actions: [B, C, d] their actions (sampled search only).
    """
    node = simulation + 1
    tree.children[tree.rows, parent, slot] = node
    tree.reward[:, node] = reward
    tree.prior_logits[:, node] = child_logits
    tree.prior[:, node] = torch.softmax(child_logits, -1, dtype=tree.prior.dtype)
    if child_actions is not None:
        tree.actions[:, node] = child_actions
    _write_state(tree.states, node, next_state)


def discount_matrix(size: int, discount: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """T [size + 1, size] with T[k, j] = γ^(k - j - 1) for k > j, else 0.

    For X [B, size + 1] holding the rewards along a path and the leaf value one step past the
    leaf, G = X @ T are the discounted returns at every depth. T depends on k - j only, so its
    top-left corner serves shorter paths.
    """
    k = torch.arange(size + 1, device=device)[:, None]
    j = torch.arange(size, device=device)[None, :]
    power = (k - j - 1).to(dtype)
    return torch.where(k > j, discount**power, torch.zeros((), dtype=dtype, device=device))


def backup(tree: Tree, path: Tensor, depth: Tensor, leaf: int, leaf_value: Tensor) -> None:
    """Back up `leaf_value` [B] of node `leaf`, the child of `path[b, depth[b]]`.

    The return at depth j is G_j = r_{j+1} + γ·G_{j+1}, with G at the leaf its own value.
    Every node on the path (the leaf and the root included) adds G_j to its value sum and one
    visit. Each edge's sampled return r_{j+1} + γ·G_{j+1} = G_j (j above the leaf) updates the
    tree's min-max statistics, as EZ-V2 does (it also feeds γ·G_0; we do not).
    """
    width = path.shape[1] + 1
    rows = tree.rows
    # Path columns past the leaf point at the sentinel, whose reward and statistics stay 0.
    full = torch.cat([path, tree.tail], 1)  # [B, D + 2]
    leaf_column = depth + 1
    full[rows, leaf_column] = leaf
    # X: the rewards along the path, then the leaf value, then zeros.
    x = tree.reward.gather(1, full)
    x[rows, leaf_column + 1] = leaf_value.to(x.dtype)
    on_path = full[:, :width]
    returns = x @ tree.discounts[: width + 1, :width]  # [B, D + 1], zero past the leaf
    tree.value_sum.scatter_add_(1, on_path, returns)
    tree.visits.scatter_add_(1, on_path, tree.ones[:, :width])
    tree.visits[:, tree.sentinel] = 0.0
    torch.div(tree.value_sum, tree.visits.clamp(min=1.0), out=tree.value)
    torch.add(tree.reward, tree.value, alpha=tree.discount, out=tree.q)
    # Min-max over the edge returns G_0 .. G_depth, the columns whose child is on the path;
    # the other columns repeat G_0.
    edge = full[:, 1 : width + 1] != tree.sentinel
    low, high = torch.aminmax(torch.where(edge, returns, returns[:, :1]), dim=1)
    torch.minimum(tree.q_min, low, out=tree.q_min)
    torch.maximum(tree.q_max, high, out=tree.q_max)


def expand_root_children(
    tree: Tree,
    slots: Tensor,
    recurrent_fn: RecurrentFn,
    child_priors: Callable[[Tensor], tuple[Tensor, Tensor | None]],
) -> None:
    """Simulations 0 .. k - 1 at once, when each expands a different child of the root.

    Such simulations are independent: each starts at the root and stops at an unexpanded
    child, so running them together changes only the float summation order of the root's value
    sum. They take one model call on k·B rows (row i·B + b is simulation i of root b).

    Args:
        slots: [B, k] the root child that simulation i expands, distinct along each row.
    """
    batch, k = slots.shape
    dtype = tree.value_sum.dtype
    state = map_state(lambda pool: pool[:, 0].repeat(k, *[1] * (pool.dim() - 2)), tree.states)
    flat = slots.T.reshape(-1)  # [k·B]
    action = flat
    if tree.actions is not None:
        action = tree.actions[:, 0].repeat(k, 1, 1)[torch.arange(k * batch, device=flat.device), flat]
    reward, value, policy, next_state = recurrent_fn(state, action)
    child_logits, child_actions = child_priors(policy)

    def per_root(x: Tensor) -> Tensor:  # [k·B, ...] -> [B, k, ...]
        return x.reshape(k, batch, *x.shape[1:]).transpose(0, 1)

    nodes = torch.arange(1, k + 1, device=flat.device)
    tree.children[:, 0].scatter_(1, slots, nodes.expand(batch, k))
    reward, value = per_root(reward.to(dtype)), per_root(value.to(dtype))
    tree.reward[:, 1 : k + 1] = reward
    tree.prior_logits[:, 1 : k + 1] = per_root(child_logits.to(dtype))
    tree.prior[:, 1 : k + 1] = torch.softmax(tree.prior_logits[:, 1 : k + 1], -1)
    if child_actions is not None:
        tree.actions[:, 1 : k + 1] = per_root(child_actions)
    for pool, new in zip(_state_leaves(tree.states), _state_leaves(next_state), strict=True):
        pool[:, 1 : k + 1] = per_root(new)
    returns = reward + tree.discount * value  # [B, k]
    tree.visits[:, 1 : k + 1] = 1.0
    tree.value_sum[:, 1 : k + 1] = value
    tree.visits[:, 0] += k
    tree.value_sum[:, 0] += returns.sum(1)
    torch.div(tree.value_sum, tree.visits.clamp(min=1.0), out=tree.value)
    torch.add(tree.reward, tree.value, alpha=tree.discount, out=tree.q)
    low, high = torch.aminmax(returns, dim=1)
    torch.minimum(tree.q_min, low, out=tree.q_min)
    torch.maximum(tree.q_max, high, out=tree.q_max)


def simulate(
    tree: Tree,
    simulation: int,
    root_slot: Tensor,
    select: SelectFn,
    recurrent_fn: RecurrentFn,
    child_priors: Callable[[Tensor], tuple[Tensor, Tensor | None]],
) -> None:
    """One simulation for every root: traverse, expand with one batched model call, back up.

    Args:
        root_slot: [B] child slot taken at the root.
        child_priors: policy output [B, P] -> (child logits [B, C], child actions [B, C, d] or
            None); it turns the model's policy head into the new node's child slots.
    """
    path, depth, slot = traverse(tree, root_slot, select)
    rows = tree.rows
    parent = path[rows, depth]
    pool_index = rows * tree.sentinel + parent  # states hold N + 1 nodes per root
    state = map_state(lambda pool: pool.view(-1, *pool.shape[2:]).index_select(0, pool_index), tree.states)
    action = slot if tree.actions is None else tree.actions[rows, parent, slot]
    reward, value, policy, next_state = recurrent_fn(state, action)
    child_logits, child_actions = child_priors(policy)
    expand(tree, simulation, parent, slot, reward, child_logits, next_state, child_actions)
    backup(tree, path, depth, simulation + 1, value)
