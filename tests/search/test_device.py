"""The same searches on CPU and GPU agree (skipped without a GPU)."""

import pytest
import torch

from effzero.search import gumbel_search, sampled_gumbel_search
from tests.search.models import ContinuousToy, DiscreteToy

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def to(device, tree):
    if isinstance(tree, tuple):
        return tuple(to(device, t) for t in tree)
    return tree.to(device)


class OnDevice:
    """Moves a toy model's weights to `device`."""

    def __init__(self, model, device):
        self.model = model
        for name in ("w", "heads", "z"):
            if hasattr(model, name):
                setattr(model, name, getattr(model, name).to(device))

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args):
        return self.model(*args)


@cuda
def test_gumbel_cpu_and_gpu_agree():
    model = DiscreteToy(18, seed=1)
    logits, value, state = model.root(256)
    gumbel = torch.distributions.Gumbel(0.0, 1.0).sample((256, 18)).double()
    cpu = gumbel_search(logits, value, state, model, 16, 8, 0.95, gumbel=gumbel)
    gpu_model = OnDevice(DiscreteToy(18, seed=1), "cuda")
    gpu = gumbel_search(
        to("cuda", logits), to("cuda", value), to("cuda", state), gpu_model, 16, 8, 0.95, gumbel=gumbel.cuda()
    )
    assert torch.equal(cpu.visit_counts, gpu.visit_counts.cpu())
    assert torch.equal(cpu.action, gpu.action.cpu())
    torch.testing.assert_close(cpu.improved_policy, gpu.improved_policy.cpu(), atol=1e-9, rtol=0)
    torch.testing.assert_close(cpu.root_value, gpu.root_value.cpu(), atol=1e-9, rtol=0)


@cuda
def test_sampled_gumbel_cpu_and_gpu_agree():
    model = ContinuousToy(dim_action=6)
    policy, value, latent = model.root(64)
    zeros = torch.zeros(64, 16, dtype=torch.float64)
    cpu = sampled_gumbel_search(policy, value, latent, model, model.sample, 32, gumbel=zeros)
    gpu_model = OnDevice(ContinuousToy(dim_action=6), "cuda")
    gpu = sampled_gumbel_search(
        policy.cuda(), value.cuda(), latent.cuda(), gpu_model, gpu_model.sample, 32, gumbel=zeros.cuda()
    )
    assert torch.equal(cpu.visit_counts, gpu.visit_counts.cpu())
    torch.testing.assert_close(cpu.action, gpu.action.cpu(), atol=1e-9, rtol=0)
