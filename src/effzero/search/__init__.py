"""Batched tree search on tensors: Gumbel (EZ-V2, Gumbel MuZero), sampled Gumbel, pUCT (MuZero,
EfficientZero V1) and sampled pUCT (Sampled MuZero). Pure functions of torch tensors; they run
on any device and import nothing else of the project."""

from effzero.search.gumbel import gumbel_search, sampled_gumbel_search
from effzero.search.halving import halving_schedule
from effzero.search.puct import PUCTConfig, puct_search, sampled_puct_search
from effzero.search.qtransform import QTransform
from effzero.search.types import LogProbFn, RecurrentFn, SampleFn, SearchOutput, State

__all__ = (
    "LogProbFn",
    "PUCTConfig",
    "QTransform",
    "RecurrentFn",
    "SampleFn",
    "SearchOutput",
    "State",
    "gumbel_search",
    "halving_schedule",
    "puct_search",
    "sampled_gumbel_search",
    "sampled_puct_search",
)
