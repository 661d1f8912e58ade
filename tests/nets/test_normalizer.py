"""RunningMeanStd equals the statistics of all data plus its (mean 0, variance 1) prior."""

import numpy as np
import pytest
import torch

from effzero.nets import RunningMeanStd


def prior_weighted_moments(data: np.ndarray, prior_count: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of `data` pooled with `prior_count` pseudo-samples of mean 0, var 1.

    The pseudo-samples contribute 0 to the sum and prior_count · (0² + 1) to the sum of squares.
    """
    total = prior_count + len(data)
    mean = data.sum(0) / total
    second_moment = (prior_count * 1.0 + (data**2).sum(0)) / total
    return mean, second_moment - mean**2


def test_default_prior_count_is_ezv2s():
    norm = RunningMeanStd(3)
    assert norm.count.item() == 1e3
    assert torch.equal(norm.mean, torch.zeros(3))
    assert torch.equal(norm.var, torch.ones(3))


@pytest.mark.parametrize("prior", [1e3, 10.0])
def test_matches_pooled_statistics(prior: float):
    rng = np.random.default_rng(0)
    norm = RunningMeanStd(4, init_count=prior).train()
    batches = [rng.normal(loc=[5, -2, 0, 100], scale=[1, 3, 0.1, 20], size=(n, 4)) for n in (7, 64, 1, 300)]
    for batch in batches:
        norm(torch.as_tensor(batch, dtype=torch.float32))
    data = np.concatenate(batches)
    mean, var = prior_weighted_moments(data, prior)
    np.testing.assert_allclose(norm.mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.var.numpy(), var, rtol=1e-4, atol=1e-5)
    assert norm.count.item() == prior + len(data)


def test_train_output_uses_updated_statistics():
    norm = RunningMeanStd(2, init_count=2.0).train()
    x = torch.tensor([[4.0, 0.0], [8.0, 2.0]])
    out = norm(x)
    mean, var = prior_weighted_moments(x.numpy().astype(np.float64), 2.0)
    expected = (x.numpy() - mean) / np.sqrt(var + 1e-8)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5)


def test_frozen_in_eval_mode():
    norm = RunningMeanStd(3, init_count=5.0).train()
    norm(torch.randn(16, 3) * 4 + 1)
    norm.eval()
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    x = torch.randn(32, 3) * 10
    out = norm(x)
    for key, value in norm.state_dict().items():
        assert torch.equal(value, before[key]), key
    torch.testing.assert_close(out, (x - before["mean"]) / torch.sqrt(before["var"] + 1e-8))


def test_statistics_are_saved_and_never_trained():
    norm = RunningMeanStd(3)
    assert set(norm.state_dict()) == {"mean", "var", "count"}
    assert list(norm.parameters()) == []
    x = torch.randn(8, 3, requires_grad=True)
    norm.train()(x).sum().backward()
    assert x.grad is not None
