"""The search tree as preallocated tensors, and the steps every search shares.

Layout (mctx-style): `B` roots are searched at once; node `0` is each root and node `s + 1`
is the node expanded by simulation `s`. Node `N + 1` is a sentinel: every child slot points
at it until the child is expanded, and its statistics stay zero, so gathering a node's
children never needs a mask. Python loops run over simulations and depth only, never over
roots or nodes.

A node's value is the running mean of every return backed up through it, its own network
value included as the first entry (EZ-V2's `estimated_value_lst`). The root starts with one
visit holding the network value, so after `N` simulations its mean is EZ-V2's search-based
value estimate (SVE).

Simulations run in rounds: a round of k simulations traverses, expands and backs up k paths
per tree at once ([B, k] node indices, one model call on B·k rows). A search may batch
simulations only where they cannot influence each other (see `gumbel.py`); a round of one is
the classic sequential step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from effzero.search.types import RecurrentFn, State

# fn(tree, node [B, k]) -> child slot [B, k]
SelectFn = Callable[["Tree", Tensor], Tensor]
# fn(policy [R, P]) -> (child logits [R, C], child actions [R, C, d] or None)
ChildPriorsFn = Callable[[Tensor], tuple[Tensor, Tensor | None]]


def map_state(fn: Callable[[Tensor], Tensor], state: State) -> State:
    """Apply `fn` to every tensor of a state pytree (tensor, tuple, list or dict)."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(fn, v) for v in state)
    raise TypeError(f"search state must be a tensor or a tuple/list/dict of tensors, got {type(state)}")


def state_leaves(state: State) -> list[Tensor]:
    """The tensors of a state pytree, in a fixed order."""
    leaves: list[Tensor] = []
    map_state(lambda t: leaves.append(t) or t, state)
    return leaves


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
    rows: Tensor  # [B, 1] arange, the tree of each row
    roots: Tensor  # [B, 1] zeros, the root of each tree
    row_offset: Tensor  # [B, 1] rows·(N + 2), the flat index of each tree's node 0
    discounts: Tensor  # [N + 4, N + 3] the discount matrix of `backup`
    depth_bound: int = 0  # no node is deeper: each round of simulations adds one level at most

    @property
    def sentinel(self) -> int:
        """Index of the unexpanded-child sentinel node."""
        return self.visits.shape[1] - 1

    def node_rows(self, per_slot: Tensor, node: Tensor) -> Tensor:
        """Rows of `node` [B, k] in a per-slot array [B, N + 2, C, ...] -> [B, k, C, ...]."""
        flat = per_slot.view(-1, *per_slot.shape[2:]).index_select(0, (self.row_offset + node).view(-1))
        return flat.view(*node.shape, *per_slot.shape[2:])

    def children_stats(self, node: Tensor) -> tuple[Tensor, Tensor]:
        """Visit counts and Q = r + γ·V of the children of `node` [B, k]: ([B, k, C], [B, k, C]).

        Unvisited children have 0 visits and Q = 0 (they point at the sentinel).
        """
        child = self.node_rows(self.children, node)
        flat = child.view(child.shape[0], -1)
        return self.visits.gather(1, flat).view_as(child), self.q.gather(1, flat).view_as(child)

    def normalize(self, q: Tensor) -> Tensor:
        """Min-max normalise Q [B, ...] over each tree, spread at least `min_spread`, into [0, 1]."""
        shape = (-1,) + (1,) * (q.dim() - 1)
        spread = (self.q_max - self.q_min).clamp(min=self.min_spread)
        return ((q - self.q_min.view(shape)) / spread.view(shape)).clamp(0.0, 1.0)


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
        root_valid: [B, C] bool legal root slots; interior_valid: [C] bool, None = all legal
            (pass None rather than all True: the search then skips the masking).
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
    for pool, leaf in zip(state_leaves(states), state_leaves(root_state), strict=True):
        pool[:, 0] = leaf
    actions = None
    if root_actions is not None:
        actions = root_actions.new_zeros((batch, nodes, slots, root_actions.shape[-1]))
        actions[:, 0] = root_actions
    rows = torch.arange(batch, device=device)[:, None]
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
        interior_bias=None if interior_valid is None else _bias(interior_valid, dtype),
        discount=discount,
        min_spread=min_spread,
        rows=rows,
        roots=torch.zeros_like(rows),
        row_offset=rows * nodes,
        discounts=discount_matrix(nodes + 1, discount, dtype, device),
    )


def traverse(tree: Tree, root_slot: Tensor, select: SelectFn) -> tuple[Tensor, Tensor, Tensor]:
    """Walk every path of a round down to an unexpanded child slot.

    A path cannot descend past `tree.depth_bound`. Run eagerly, the walk stops as soon as every
    path has left the tree (one host sync per level); traced by `torch.compile` it walks all
    `depth_bound` levels, so the graph holds no sync (a path that left the tree sits on the
    sentinel, whose children are all the sentinel, and gathers zeros from then on).

    Args:
        root_slot: [B, k] child slot each path takes at the root.
        select: chooses the child slot at interior nodes.
    Returns:
        path: [B, k, D] nodes from the root (column 0) down to the parent of the new leaf, which
            sits in column `depth`; later columns hold the sentinel.
        depth: [B, k] depth of the parent (0 = the root).
        slot: [B, k] child slot of the new leaf under the parent.
    """
    roots = tree.roots.expand_as(root_slot)
    nodes, slots = [roots], [root_slot]
    node = tree.children[tree.rows, roots, root_slot]
    for _ in range(tree.depth_bound):
        if not torch.compiler.is_compiling() and not bool((node != tree.sentinel).any()):
            break
        nodes.append(node)
        slots.append(select(tree, node))
        node = tree.children[tree.rows, node, slots[-1]]
    if len(nodes) == 1:
        return roots[..., None], torch.zeros_like(roots), root_slot
    path = torch.stack(nodes, -1)
    depth = (path != tree.sentinel).sum(-1) - 1
    return path, depth, torch.stack(slots, -1).gather(-1, depth[..., None]).squeeze(-1)


def expand(
    tree: Tree,
    first: int,
    parent: Tensor,
    slot: Tensor,
    reward: Tensor,
    child_logits: Tensor,
    next_state: State,
    child_actions: Tensor | None = None,
) -> None:
    """Write nodes `first + 1 .. first + k` under `parent` [B, k] at `slot` [B, k].

    Args:
        reward: [B·k] reward of each new edge (row b·k + i is path i of tree b);
        child_logits: [B·k, C] priors of the new nodes' children;
        next_state: pytree of [B·k, ...]; child_actions: [B·k, C, d] (sampled search only).
    """
    batch, k = parent.shape
    new = slice(first + 1, first + k + 1)
    tree.children[tree.rows, parent, slot] = torch.arange(first + 1, first + k + 1, device=parent.device)
    tree.reward[:, new] = reward.view(batch, k)
    logits = child_logits.view(batch, k, -1)
    tree.prior_logits[:, new] = logits
    tree.prior[:, new] = torch.softmax(logits, -1, dtype=tree.prior.dtype)
    if child_actions is not None:
        tree.actions[:, new] = child_actions.view(batch, k, *child_actions.shape[1:])
    for pool, leaf in zip(state_leaves(tree.states), state_leaves(next_state), strict=True):
        pool[:, new] = leaf.view(batch, k, *leaf.shape[1:])


def discount_matrix(size: int, discount: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """T [size + 1, size] with T[k, j] = γ^(k - j - 1) for k > j, else 0.

    For X [..., size + 1] holding the rewards along a path and the leaf value one step past
    the leaf, G = X @ T are the discounted returns at every depth. T depends on k - j only, so
    its top-left corner serves shorter paths.
    """
    k = torch.arange(size + 1, device=device)[:, None]
    j = torch.arange(size, device=device)[None, :]
    power = (k - j - 1).to(dtype)
    return torch.where(k > j, discount**power, torch.zeros((), dtype=dtype, device=device))


def backup(tree: Tree, path: Tensor, depth: Tensor, first: int, leaf_value: Tensor) -> None:
    """Back up the values [B·k] of leaves `first + 1 + i`, the children of `path[b, i, depth]`.

    The return at depth j is G_j = r_{j+1} + γ·G_{j+1}, with G at the leaf its own value.
    Every node on a path (the leaf and the root included) adds G_j to its value sum and one
    visit. Each edge's sampled return r_{j+1} + γ·G_{j+1} = G_j (j above the leaf) updates the
    tree's min-max statistics, as EZ-V2 does (it also feeds γ·G_0; we do not).
    """
    batch, k, width = path.shape[0], path.shape[1], path.shape[2] + 1
    # Path columns past the leaf point at the sentinel, whose reward and statistics stay 0.
    full = torch.cat([path, path.new_full((batch, k, 2), tree.sentinel)], -1)  # [B, k, D + 2]
    leaf = torch.arange(first + 1, first + k + 1, device=path.device).expand(batch, k)
    full.scatter_(-1, depth[..., None] + 1, leaf[..., None])
    # X: the rewards along each path, then the leaf value, then zeros.
    x = tree.reward.gather(1, full.view(batch, -1)).view_as(full)
    x.scatter_(-1, depth[..., None] + 2, leaf_value.view(batch, k, 1).to(x.dtype))
    # The tree's arithmetic stays in its own dtype even when the caller autocasts the model.
    with torch.autocast(x.device.type, enabled=False):
        returns = x @ tree.discounts[: width + 1, :width]  # [B, k, D + 1], zero past the leaf
    on_path = full[..., :width].reshape(batch, -1)
    tree.value_sum.scatter_add_(1, on_path, returns.view(batch, -1))
    tree.visits.scatter_add_(1, on_path, torch.ones_like(on_path, dtype=returns.dtype))
    tree.visits[:, tree.sentinel] = 0.0
    torch.div(tree.value_sum, tree.visits.clamp(min=1.0), out=tree.value)
    torch.add(tree.reward, tree.value, alpha=tree.discount, out=tree.q)
    # Min-max over the edge returns G_0 .. G_depth, the columns whose child is on the path;
    # the other columns repeat G_0.
    edge = full[..., 1 : width + 1] != tree.sentinel
    edge_returns = torch.where(edge, returns, returns[..., :1])
    low, high = torch.aminmax(edge_returns.view(batch, -1), dim=1)
    torch.minimum(tree.q_min, low, out=tree.q_min)
    torch.maximum(tree.q_max, high, out=tree.q_max)


def simulate(
    tree: Tree,
    first: int,
    root_slot: Tensor,
    select: SelectFn,
    recurrent_fn: RecurrentFn,
    child_priors: ChildPriorsFn,
) -> None:
    """A round of k simulations `first .. first + k - 1` per tree, with one model call.

    Args:
        root_slot: [B, k] child slot each simulation takes at the root.
        child_priors: turns the model's policy output into the new nodes' child slots.
    """
    path, depth, slot = traverse(tree, root_slot, select)
    parent = path.gather(-1, depth[..., None]).squeeze(-1)  # [B, k]
    pool_index = (tree.rows * tree.sentinel + parent).view(-1)  # states hold N + 1 nodes per tree
    state = map_state(lambda pool: pool.view(-1, *pool.shape[2:]).index_select(0, pool_index), tree.states)
    action = slot.view(-1) if tree.actions is None else tree.actions[tree.rows, parent, slot].flatten(0, 1)
    reward, value, policy, next_state = recurrent_fn(state, action)
    child_logits, child_actions = child_priors(policy)
    expand(tree, first, parent, slot, reward, child_logits, next_state, child_actions)
    backup(tree, path, depth, first, value)
    tree.depth_bound += 1
