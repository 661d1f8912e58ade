"""pUCT search (MuZero, EfficientZero V1) over discrete actions and sampled candidates.

Every node, the root included, takes the child maximising
    q̂(a) + P(a) · √N(s) / (1 + N(a)) · (c1 + log((N(s) + c2 + 1) / c2)),
with N(s) the node's own visits (its expansion counted, so the prior acts at fresh nodes),
q̂ = Q min-max normalised over the current Q of every edge in the tree (EfficientZero V1's
`update_tree_q`, recomputed after each simulation), clamped to [0, 1]. Ties go to the lowest
slot. An unvisited child has no Q; `PUCTConfig.unvisited_q` says what stands in for it:

- `parent_mean` (EfficientZero's tree, also LightZero's): the mean of the visited children's
  Q and, below the root, the mean that stood in at the parent, chained down the path
      m(root) = ΣQ(visited) / n (0 if n = 0),   m(s) = (m(parent) + ΣQ(visited)) / (n + 1);
- `zero` (MuZero's pseudocode): q̂ = 0, the lowest score, so only the prior term draws an
  unvisited child.
The policy target is the root's visit distribution; the action is drawn from it with a
temperature (0 = the most visited).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from effzero.search.gumbel import draw_candidates, search_dtype
from effzero.search.tree import ChildPriorsFn, Tree, init_tree, simulate
from effzero.search.types import LogProbFn, RecurrentFn, SampleFn, SearchOutput, State

UnvisitedQ = Literal["parent_mean", "zero"]


@dataclass(frozen=True)
class PUCTConfig:
    """pUCT constants (MuZero: 1.25, 19652), the min spread of the Q normalisation, and what
    stands in for an unvisited child's Q (see the module docstring)."""

    c1: float = 1.25
    c2: float = 19652.0
    min_spread: float = 0.01
    unvisited_q: UnvisitedQ = "parent_mean"

    def __post_init__(self) -> None:
        if self.unvisited_q not in get_args(UnvisitedQ):
            raise ValueError(f"unvisited_q={self.unvisited_q!r} is not known; valid: parent_mean, zero")


def chained_mean_q(visits: Tensor, q: Tensor, parent_mean: Tensor | None) -> Tensor:
    """EfficientZero's stand-in Q for a node's unvisited children: [B, k, C] -> [B, k].

    Args:
        visits, q: [B, k, C] the node's children's statistics (`Tree.children_stats`).
        parent_mean: [B, k] the stand-in computed at each node's parent on its path; None at
            the root.
    """
    visited = visits.clamp(max=1.0).sum(-1)
    total = q.sum(-1)  # unvisited children point at the sentinel, whose Q is 0
    if parent_mean is None:
        return torch.where(visited > 0, total / visited.clamp(min=1.0), torch.zeros_like(total))
    return (parent_mean + total) / (visited + 1)


def puct_score(
    tree: Tree, node: Tensor, visits: Tensor, q: Tensor, cfg: PUCTConfig, fill: Tensor | None
) -> Tensor:
    """The pUCT score of the children of `node` [B, k] -> [B, k, C].

    Args:
        visits, q: [B, k, C] the children's statistics (`Tree.children_stats`).
        fill: [B, k] the stand-in Q of unvisited children (`chained_mean_q`); None scores
            them q̂ = 0 (`unvisited_q="zero"`).
    """
    visited = visits.clamp(max=1.0)  # float mask: boolean selects are slow on CPU
    if fill is None:
        q_hat = tree.normalize(q) * visited
    else:
        q_hat = tree.normalize(torch.lerp(fill[..., None], q, visited))
    n_parent = tree.visits.gather(1, node)[..., None]
    c = cfg.c1 + torch.log((n_parent + cfg.c2 + 1) / cfg.c2)
    return q_hat + tree.node_rows(tree.prior, node) * n_parent.sqrt() / (1 + visits) * c


class PathSelector:
    """pUCT selection along one round's paths, carrying the chained stand-in Q down them.

    `root_slot` starts a round; `traverse` then calls the selector once per level, in order.
    """

    def __init__(self, cfg: PUCTConfig):
        self.cfg = cfg
        self.fill: Tensor | None = None  # [B, k] the stand-in at the last node selected from

    def _score(self, tree: Tree, node: Tensor, parent_fill: Tensor | None) -> Tensor:
        """The children's scores [B, k, C]; moves the stand-in one level down."""
        visits, q = tree.children_stats(node)
        self.fill = None if self.cfg.unvisited_q == "zero" else chained_mean_q(visits, q, parent_fill)
        return puct_score(tree, node, visits, q, self.cfg, self.fill)

    def root_slot(self, tree: Tree) -> Tensor:
        """The child slot taken at each root [B, 1]."""
        return (self._score(tree, tree.roots, None) + tree.root_bias[:, None]).max(-1).indices

    def __call__(self, tree: Tree, node: Tensor) -> Tensor:
        """The child slot taken at interior nodes `node` [B, k] -> [B, k]."""
        score = self._score(tree, node, self.fill)
        if tree.interior_bias is not None:
            score = score + tree.interior_bias
        return score.max(-1).indices


def draw_dirichlet(alpha: float, valid: Tensor, dtype: torch.dtype) -> Tensor:
    """Dirichlet(alpha) noise over the valid slots of each row of `valid` [B, C]."""
    concentration = torch.full(valid.shape, alpha, dtype=dtype, device=valid.device)
    gamma = torch._standard_gamma(concentration) * valid
    return gamma / gamma.sum(-1, keepdim=True).clamp(min=torch.finfo(dtype).tiny)


def _noisy_root_logits(
    prior: Tensor, valid: Tensor, noise: Tensor | None, alpha: float, fraction: float
) -> Tensor:
    """log((1 - f)·prior + f·noise) over the valid slots, -inf elsewhere: [B, C]."""
    if noise is None:
        noise = draw_dirichlet(alpha, valid, prior.dtype)
    mixed = (1 - fraction) * prior + fraction * noise.to(prior.dtype)
    return torch.where(valid, mixed.log(), float("-inf"))


def _run(
    tree: Tree, num_simulations: int, recurrent_fn: RecurrentFn, child_priors: ChildPriorsFn, cfg: PUCTConfig
) -> Tensor:
    """Run the simulations; return the root children's visits [B, C]."""
    for simulation in range(num_simulations):
        select = PathSelector(cfg)
        simulate(tree, simulation, select.root_slot(tree), select, recurrent_fn, child_priors)
        tree_q_bounds(tree, simulation + 1)
    return tree.visits.gather(1, tree.children[:, 0])


def tree_q_bounds(tree: Tree, expanded: int) -> None:
    """Set the tree's min-max to that of the current Q of nodes 1..expanded (every edge's).

    Unlike the Gumbel searches' bounds over sampled returns (EZ-V2), these follow the mean Q
    that pUCT scores, and shrink when an extreme edge's mean moves inwards (EZ-V1's rule;
    MuZero's pseudocode keeps every Q once seen, the root's γ·V included).
    """
    low, high = torch.aminmax(tree.q[:, 1 : expanded + 1], dim=1)
    tree.q_min.copy_(low)
    tree.q_max.copy_(high)


def _act(visits: Tensor, temperature: float) -> Tensor:
    """A root child drawn ∝ visits^(1/T); T = 0 takes the most visited. [B, C] -> [B]."""
    if temperature == 0:
        return visits.max(-1).indices
    weights = (visits / visits.amax(-1, keepdim=True)) ** (1.0 / temperature)
    return torch.multinomial(weights, 1).squeeze(-1)


@torch.no_grad()
def puct_search(
    root_logits: Tensor,
    root_value: Tensor,
    root_state: State,
    recurrent_fn: RecurrentFn,
    num_simulations: int,
    discount: float = 0.997,
    dirichlet_alpha: float = 0.3,
    dirichlet_fraction: float = 0.25,
    noise: Tensor | None = None,
    temperature: float = 1.0,
    invalid_actions: Tensor | None = None,
    config: PUCTConfig = PUCTConfig(),
) -> SearchOutput:
    """Batched MuZero-style pUCT search with Dirichlet noise at the root.

    Args:
        root_logits, root_value, root_state, recurrent_fn, num_simulations, discount,
            invalid_actions: as in `gumbel_search`.
        dirichlet_alpha, dirichlet_fraction: root prior = (1 - f)·softmax(logits) + f·Dir(α);
            f = 0 searches without noise.
        noise: [B, A] Dirichlet draw to use instead of drawing one.
        temperature: the action is drawn ∝ visits^(1/T); 0 takes the most visited.
    Returns:
        action [B], improved_policy [B, A] = visit distribution, root_value [B] (mean of the
        root's value and every backed-up return), visit_counts [B, A].
    """
    dtype = search_dtype(root_value)
    valid = torch.ones_like(root_logits, dtype=torch.bool)
    if invalid_actions is not None:
        valid = ~invalid_actions.to(torch.bool)
        if bool((~valid).all(-1).any()):
            raise ValueError("puct_search: a root has every action marked invalid")
    prior = torch.softmax(root_logits.to(dtype).masked_fill(~valid, float("-inf")), -1)
    logits = _noisy_root_logits(prior, valid, noise, dirichlet_alpha, dirichlet_fraction)
    tree = init_tree(
        logits, root_value.to(dtype), root_state, num_simulations, discount, config.min_spread, valid
    )
    visits = _run(tree, num_simulations, recurrent_fn, lambda p: (p, None), config)
    action = _act(visits, temperature)
    policy = visits / visits.sum(-1, keepdim=True)
    return SearchOutput(action, action, policy, tree.value[:, 0], visits)


@torch.no_grad()
def sampled_puct_search(
    root_policy: Tensor,
    root_value: Tensor,
    root_state: State,
    recurrent_fn: RecurrentFn,
    sample_fn: SampleFn,
    num_simulations: int = 50,
    k_policy: int = 20,
    k_wide: int = 0,
    std_magnification: float = 3.0,
    k_interior: int = 20,
    log_prob_fn: LogProbFn | None = None,
    discount: float = 0.997,
    dirichlet_alpha: float = 0.3,
    dirichlet_fraction: float = 0.25,
    noise: Tensor | None = None,
    temperature: float = 1.0,
    config: PUCTConfig = PUCTConfig(),
) -> SearchOutput:
    """Sampled MuZero: pUCT over K sampled candidates with the β̂/β-corrected prior.

    The root draws k_policy candidates from π and k_wide from π with σ × std_magnification, so
    the proposal is β = (k_policy·π + k_wide·π_wide) / K and the prior of candidate i is
    ∝ β̂(a_i)/β(a_i)·π(a_i) = π(a_i) / (K·β(a_i)) (continuous draws are distinct, β̂ = 1/K).
    With k_wide = 0 this is uniform and `log_prob_fn` is not needed. Other nodes draw
    `k_interior` children from their own policy (uniform prior).

    Args:
        log_prob_fn: (policy [B, P], actions [B, K, d], std_scale) -> log-density [B, K];
            required when k_wide > 0.
        other arguments: as in `sampled_gumbel_search` and `puct_search`.
    Returns:
        action [B, d], action_index [B], candidate_actions [B, K, d], improved_policy [B, K]
        (visit distribution), root_value [B], visit_counts [B, K].
    """
    dtype = search_dtype(root_value)
    candidates = draw_candidates(sample_fn, root_policy, k_policy, k_wide, std_magnification)
    batch, num_candidates, _ = candidates.shape
    if k_wide > 0:
        if log_prob_fn is None:
            raise ValueError("sampled_puct_search: k_wide > 0 needs log_prob_fn for the β̂/β prior")
        log_pi = log_prob_fn(root_policy, candidates, 1.0).to(dtype)
        log_wide = log_prob_fn(root_policy, candidates, std_magnification).to(dtype)
        log_beta = torch.logaddexp(
            log_pi + torch.log(torch.tensor(k_policy / num_candidates)),
            log_wide + torch.log(torch.tensor(k_wide / num_candidates)),
        )
        prior = torch.softmax(log_pi - log_beta, -1)
    else:
        prior = torch.full(
            (batch, num_candidates), 1.0 / num_candidates, dtype=dtype, device=candidates.device
        )
    slots = max(num_candidates, k_interior)
    slot_index = torch.arange(slots, device=candidates.device)
    root_valid = (slot_index < num_candidates).expand(batch, slots)
    interior_valid = slot_index < k_interior
    padded_prior = torch.zeros(batch, slots, dtype=dtype, device=candidates.device)
    padded_prior[:, :num_candidates] = prior
    logits = _noisy_root_logits(padded_prior, root_valid, noise, dirichlet_alpha, dirichlet_fraction)
    padded = candidates.new_zeros(batch, slots, candidates.shape[-1])
    padded[:, :num_candidates] = candidates
    tree = init_tree(
        logits,
        root_value.to(dtype),
        root_state,
        num_simulations,
        discount,
        config.min_spread,
        root_valid,
        interior_valid if k_interior < slots else None,
        padded,
    )
    interior_logits = torch.zeros(batch, slots, dtype=dtype, device=candidates.device)
    interior_logits = interior_logits.masked_fill(~interior_valid, float("-inf"))

    def child_priors(policy: Tensor) -> tuple[Tensor, Tensor]:
        children = candidates.new_zeros(policy.shape[0], slots, candidates.shape[-1])
        children[:, :k_interior] = sample_fn(policy, k_interior, 1.0)
        return interior_logits[:1].expand(policy.shape[0], slots), children

    visits = _run(tree, num_simulations, recurrent_fn, child_priors, config)[:, :num_candidates]
    action = _act(visits, temperature)
    rows = torch.arange(batch, device=candidates.device)
    return SearchOutput(
        action=candidates[rows, action],
        action_index=action,
        improved_policy=visits / visits.sum(-1, keepdim=True),
        root_value=tree.value[:, 0],
        visit_counts=visits,
        candidate_actions=candidates,
    )
