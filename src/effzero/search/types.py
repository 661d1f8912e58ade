"""Types shared by every search: the callbacks it takes and the result it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

# A recurrent state: a tensor or a tuple/list/dict of them, each with a leading batch dim.
State = Any
# fn(state, action [B] or [B, d]) -> (reward [B], value [B], policy [B, P], next_state).
# `policy` is the prior logits [B, A] for discrete actions, the policy parameters otherwise.
RecurrentFn = Callable[[State, Tensor], tuple[Tensor, Tensor, Tensor, State]]
# fn(policy [B, P], n, std_scale) -> actions [B, n, d] drawn from the policy with its standard
# deviation multiplied by `std_scale`; the search knows no distributions.
SampleFn = Callable[[Tensor, int, float], Tensor]
# fn(policy [B, P], actions [B, K, d], std_scale) -> log-density [B, K] of each action.
LogProbFn = Callable[[Tensor, Tensor, float], Tensor]


@dataclass(frozen=True)
class SearchOutput:
    """What a search returns for `B` roots over `C` root children (actions or candidates)."""

    action: Tensor  # [B] chosen action (discrete) or [B, d] chosen candidate (sampled)
    action_index: Tensor  # [B] the chosen root child
    improved_policy: Tensor  # [B, C] the policy target
    root_value: Tensor  # [B] mean of the root's value and every backed-up return (SVE)
    visit_counts: Tensor  # [B, C] visits of the root's children
    candidate_actions: Tensor | None = None  # [B, C, d] the root's candidates (sampled)
