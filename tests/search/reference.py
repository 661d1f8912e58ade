"""Plain-Python reference searches: one root at a time, a Python object per node.

Written from the semantics in the docstrings of `effzero.search`, without its code, so the
tensor searches can be checked against something that shares no implementation with them.
Scalars are Python floats (float64); the model is called with a batch of one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

INF = float("inf")


@dataclass
class Node:
    logits: list[float]  # one per child slot, -inf if the slot is invalid
    reward: float = 0.0
    state: object = None
    visits: int = 0
    value_sum: float = 0.0
    children: dict[int, Node] = field(default_factory=dict)
    actions: list | None = None  # candidate actions of the slots (sampled search)

    @property
    def value(self) -> float:
        return self.value_sum / self.visits

    @property
    def prior(self) -> list[float]:
        top = max(self.logits)
        exps = [math.exp(x - top) if x > -INF else 0.0 for x in self.logits]
        total = sum(exps)
        return [e / total for e in exps]

    def child_visits(self, slot: int) -> int:
        return self.children[slot].visits if slot in self.children else 0

    def child_q(self, slot: int, discount: float) -> float:
        child = self.children[slot]
        return child.reward + discount * child.value


class MinMax:
    def __init__(self, min_spread: float):
        self.low, self.high, self.min_spread = INF, -INF, min_spread

    def update(self, x: float) -> None:
        self.low, self.high = min(self.low, x), max(self.high, x)

    def normalize(self, x: float) -> float:
        spread = max(self.high - self.low, self.min_spread)
        return min(max((x - self.low) / spread, 0.0), 1.0)


def argmax(scores: list[float]) -> int:
    best = 0
    for i, s in enumerate(scores):
        if s > scores[best]:
            best = i
    return best


def softmax(xs: list[float]) -> list[float]:
    top = max(xs)
    exps = [math.exp(x - top) if x > -INF else 0.0 for x in xs]
    return [e / sum(exps) for e in exps]


class ReferenceTree:
    def __init__(
        self, root: Node, recurrent_fn, discount: float, min_spread: float, expand_children, own_visits=False
    ):
        self.root, self.fn, self.discount = root, recurrent_fn, discount
        self.minmax = MinMax(min_spread)
        self.expand_children = expand_children  # policy [1, P] -> (logits, actions or None)
        # A node's N in v_mix and the interior rule: its own visit count (EZ-V2's code), or
        # its children's (the Gumbel MuZero paper).
        self.own_visits = own_visits

    def node_visits(self, node: Node) -> int:
        return node.visits if self.own_visits else sum(c.visits for c in node.children.values())

    def simulate(self, root_slot: int, select) -> None:
        path, slot = [self.root], root_slot
        while slot in path[-1].children:
            path.append(path[-1].children[slot])
            slot = select(path[-1])
        parent = path[-1]
        action = torch.tensor([slot]) if parent.actions is None else parent.actions[slot][None]
        reward, value, policy, state = self.fn(parent.state, action)
        logits, actions = self.expand_children(policy)
        leaf = Node(logits=logits, reward=float(reward[0]), state=state, actions=actions)
        parent.children[slot] = leaf
        path.append(leaf)
        g = float(value[0])
        for node in reversed(path):
            node.visits += 1
            node.value_sum += g
            if node is not self.root:
                g = node.reward + self.discount * g
                self.minmax.update(g)


# ---------------------------------------------------------------- Gumbel


def completed_q(tree: ReferenceTree, node: Node) -> list[float]:
    prior = node.prior
    visited = [a for a in node.children]
    if visited:
        n = tree.node_visits(node)
        mass = sum(prior[a] for a in visited)
        mean_q = sum(prior[a] * node.child_q(a, tree.discount) for a in visited) / mass
        v_mix = (node.value + n * mean_q) / (1 + n)
    else:
        v_mix = node.value
    return [node.child_q(a, tree.discount) if a in node.children else v_mix for a in range(len(prior))]


def improved_logits(tree: ReferenceTree, node: Node, c_visit=50.0, c_scale=0.1) -> list[float]:
    completed = completed_q(tree, node)
    max_n = max(node.child_visits(a) for a in range(len(node.logits)))
    return [
        lg + (c_visit + max_n) * c_scale * tree.minmax.normalize(q)
        for lg, q in zip(node.logits, completed, strict=True)
    ]


def gumbel_interior(tree: ReferenceTree, node: Node) -> int:
    pi = softmax(improved_logits(tree, node))
    n = tree.node_visits(node)
    scores = [
        pi[a] - node.child_visits(a) / (1 + n) if node.logits[a] > -INF else -INF for a in range(len(pi))
    ]
    return argmax(scores)


def phase_ends(n: int, m: int) -> dict[int, int]:
    """Simulations after which the root halves, and how many children it keeps."""
    if m <= 1:
        return {}
    out, alive, done = {}, m, 0
    budget = max(math.floor(n / (math.log2(m) * m)), 1) * m
    while True:
        done = min(done + budget, n)
        alive = max(alive // 2, 1)
        out[done] = alive
        if done == n:
            return out
        budget = max(math.floor(n / (math.log2(m) * alive)), 1) * alive if alive > 2 else n


def stable_order(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda a: (-scores[a], a))


def gumbel_root(tree: ReferenceTree, gumbel: list[float], n: int, max_considered: int):
    root = tree.root
    valid = [a for a, lg in enumerate(root.logits) if lg > -INF]
    m = min(max_considered, len(valid))
    order = stable_order([g + lg for g, lg in zip(gumbel, root.logits, strict=True)])
    alive = order[:m]  # best first
    ends = phase_ends(n, m)

    def score() -> list[float]:
        imp = improved_logits(tree, root)
        return [gumbel[a] + imp[a] if a in alive else -INF for a in range(len(imp))]

    for sim in range(n):
        if sim in ends:
            alive = [a for a in stable_order(score()) if a in alive][: ends[sim]]
        slot = min(alive, key=lambda a: (root.child_visits(a), alive.index(a)))
        tree.simulate(slot, lambda node: gumbel_interior(tree, node))
    return argmax(score())


def reference_gumbel(
    logits,
    value,
    state,
    fn,
    n,
    max_considered,
    discount,
    gumbel,
    expand=None,
    actions=None,
    min_spread=0.01,
    own_visits=False,
):
    """One root: returns (action slot, improved policy, root value, visit counts)."""
    root = Node(logits=list(logits), state=state, visits=1, value_sum=float(value), actions=actions)
    expand = expand or (lambda policy: ([float(x) for x in policy[0]], None))
    tree = ReferenceTree(root, fn, discount, min_spread, expand, own_visits)
    action = gumbel_root(tree, list(gumbel), n, max_considered)
    policy = softmax(improved_logits(tree, root))
    visits = [root.child_visits(a) for a in range(len(logits))]
    return action, policy, root.value, visits


# ---------------------------------------------------------------- pUCT


def stand_in_q(tree: ReferenceTree, node: Node, parent_stand_in: float | None) -> float:
    """EfficientZero's Q for unvisited children: the visited children's mean at the root
    (0 with none), below it averaged with the parent's stand-in as one more entry."""
    qs = [node.child_q(a, tree.discount) for a in node.children]
    if parent_stand_in is None:
        return sum(qs) / len(qs) if qs else 0.0
    return (parent_stand_in + sum(qs)) / (len(qs) + 1)


def puct_select(tree: ReferenceTree, node: Node, stand_in: float | None, c1=1.25, c2=19652.0) -> int:
    """stand_in: Q of unvisited children; None scores them 0 after normalisation (MuZero)."""
    prior = node.prior
    n_parent = node.visits
    c = c1 + math.log((n_parent + c2 + 1) / c2)
    scores = []
    for a in range(len(prior)):
        if node.logits[a] == -INF:
            scores.append(-INF)
            continue
        if a in node.children:
            q_hat = tree.minmax.normalize(node.child_q(a, tree.discount))
        else:
            q_hat = 0.0 if stand_in is None else tree.minmax.normalize(stand_in)
        u = prior[a] * math.sqrt(n_parent) / (1 + node.child_visits(a)) * c
        scores.append(q_hat + u)
    return argmax(scores)


def path_select(tree: ReferenceTree, unvisited_q: str):
    """pUCT selection for the nodes of one path, called root first."""
    chain: list[float] = []  # the stand-ins along the path so far

    def select(node: Node) -> int:
        if unvisited_q == "zero":
            return puct_select(tree, node, None)
        chain.append(stand_in_q(tree, node, chain[-1] if chain else None))
        return puct_select(tree, node, chain[-1])

    return select


def edge_minmax(tree: ReferenceTree) -> MinMax:
    """Min-max over the current Q = r + γ·V of every edge of the tree (EZ-V1's pUCT)."""
    stats, stack = MinMax(tree.minmax.min_spread), [tree.root]
    while stack:
        node = stack.pop()
        for child in node.children.values():
            stats.update(child.reward + tree.discount * child.value)
            stack.append(child)
    return stats


def reference_puct(
    logits,
    value,
    state,
    fn,
    n,
    discount,
    expand=None,
    actions=None,
    min_spread=0.01,
    unvisited_q="parent_mean",
):
    """One root with its (already noised) prior logits: returns (visit counts, root value)."""
    root = Node(logits=list(logits), state=state, visits=1, value_sum=float(value), actions=actions)
    expand = expand or (lambda policy: ([float(x) for x in policy[0]], None))
    tree = ReferenceTree(root, fn, discount, min_spread, expand)
    for _ in range(n):
        select = path_select(tree, unvisited_q)
        tree.simulate(select(root), select)
        tree.minmax = edge_minmax(tree)  # replaces the sampled returns `simulate` fed it
    return [root.child_visits(a) for a in range(len(logits))], root.value
