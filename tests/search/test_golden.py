"""Golden search results in JSON: any change to what the searches compute shows up here.

Regenerate after an intended change with `EFFZERO_UPDATE_GOLDEN=1 pytest tests/search/test_golden.py`
and explain the change in the commit.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from effzero.search import gumbel_search, puct_search, sampled_gumbel_search, sampled_puct_search
from tests.search.models import ContinuousToy, DiscreteToy

GOLDEN = Path(__file__).parent / "golden" / "searches.json"


def noise(kind: str, shape: tuple[int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(shape, generator=g, dtype=torch.float64).clamp(1e-9, 1 - 1e-9)
    if kind == "gumbel":
        return -torch.log(-torch.log(u))
    gamma = -torch.log(u)  # Dirichlet(1) from exponentials
    return gamma / gamma.sum(-1, keepdim=True)


def run_all() -> dict:
    discrete = DiscreteToy(6, seed=21)
    logits, value, state = discrete.root(4, seed=22)
    cont = ContinuousToy(dim_action=3, seed=23)
    policy, cvalue, latent = cont.root(4, seed=24)
    results = {
        "gumbel": gumbel_search(
            logits, value, state, discrete, 24, 4, 0.95, gumbel=noise("gumbel", (4, 6), 1)
        ),
        "puct": puct_search(
            logits, value, state, discrete, 24, 0.95, noise=noise("dirichlet", (4, 6), 2), temperature=0.0
        ),
        "sampled_gumbel": sampled_gumbel_search(
            policy, cvalue, latent, cont, cont.sample, 32, 4, 4, 3.0, 2, 8, 0.95, noise("gumbel", (4, 8), 3)
        ),
        "sampled_puct": sampled_puct_search(
            policy,
            cvalue,
            latent,
            cont,
            cont.sample,
            24,
            4,
            4,
            3.0,
            3,
            cont.log_prob,
            0.95,
            noise=noise("dirichlet", (4, 8), 4),
            temperature=0.0,
        ),
    }
    return {
        name: {
            "action_index": out.action_index.tolist(),
            "visit_counts": out.visit_counts.tolist(),
            "improved_policy": out.improved_policy.tolist(),
            "root_value": out.root_value.tolist(),
        }
        for name, out in results.items()
    }


def test_searches_match_golden_results():
    results = run_all()
    if os.environ.get("EFFZERO_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(results, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for name, expected in golden.items():
        got = results[name]
        assert got["action_index"] == expected["action_index"], name
        assert got["visit_counts"] == expected["visit_counts"], name
        for key in ("improved_policy", "root_value"):
            assert torch.tensor(got[key]) == pytest.approx(torch.tensor(expected[key]), abs=1e-9), (name, key)
