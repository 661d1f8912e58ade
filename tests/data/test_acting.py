"""The search's view of the model: per-step rewards from value prefixes, bf16 workers, the config's constants."""

import dataclasses

import pytest
import torch

from effzero.config import SearchConfig
from effzero.data.acting import act, action_temperature, recurrent_fn, search_state, worker_model
from effzero.envs import EnvSpec
from effzero.nets import policy as squashed
from effzero.search import PUCTConfig, QTransform, gumbel_search, puct_search, sampled_puct_search
from tests.small import small_model


class Decoder:
    """Logits that are the scalar itself (the adapter under test only decodes them)."""

    @staticmethod
    def to_scalar(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 0]


class PerfectPrefixModel:
    """A value-prefix model whose LSTM sums the true rewards r(depth) = depth + 1 since its reset.

    The latent holds the depth; the LSTM cell c holds the running sum, h counts steps.
    """

    value_prefix = True
    lstm_hidden = 1
    lstm_horizon = 5
    reward_support = value_support = Decoder()

    def recurrent_inference(self, latent, action, hidden):
        h, c = hidden
        reward = latent + 1
        c = c + reward
        value = torch.zeros_like(latent)
        return latent + 1, c, value, torch.zeros(latent.shape[0], 2), (h + 1, c)


def test_prefixes_become_per_step_rewards_across_resets():
    model = PerfectPrefixModel()
    fn = recurrent_fn(model)
    state = search_state(model, torch.zeros(3, 1))
    rewards, steps_since_reset = [], []
    for _ in range(12):
        reward, _, _, state = fn(state, torch.zeros(3, dtype=torch.long))
        rewards.append(reward[0].item())
        steps_since_reset.append(state[1][0, 0].item())
    assert rewards == [float(d) for d in range(1, 13)]  # the true r(depth) at every depth
    # The LSTM restarts at depths 0, 5 and 10: it has seen 1..5, 1..5, 1..2 steps.
    assert steps_since_reset == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]


def test_models_without_a_prefix_keep_a_plain_latent_state():
    class Plain(PerfectPrefixModel):
        value_prefix = False

        def recurrent_inference(self, latent, action, hidden):
            assert hidden is None
            return latent + 1, latent + 7, latent, torch.zeros(latent.shape[0], 2), None

    model = Plain()
    state = search_state(model, torch.zeros(2, 1))
    assert isinstance(state, torch.Tensor)
    reward, _, _, state = recurrent_fn(model)(state, torch.zeros(2, dtype=torch.long))
    assert reward.tolist() == [7.0, 7.0] and state.tolist() == [[1.0], [1.0]]


def test_bf16_workers_call_the_model_in_bf16_and_search_in_float32():
    spec = EnvSpec("toy", (3,), "float32", "discrete", 2, 0, (), (), 0.9, None)
    config = small_model(value=(-50, 50, 21), reward=(-2, 2, 11))
    torch.manual_seed(0)
    full, half = worker_model(config, spec, "cpu", "fp32"), worker_model(config, spec, "cpu", "bf16")
    half.load_state_dict(full.state_dict())  # as a worker loads the published weights
    obs = torch.randn(8, 3)
    state, value, policy = half.initial_inference(obs)
    step = half.recurrent_inference(state, torch.zeros(8, dtype=torch.long))
    assert {t.dtype for t in (state, value, policy, *step[:4])} == {torch.bfloat16}
    assert {t.dtype for t in full.initial_inference(obs)} == {torch.float32}
    search = SearchConfig(num_simulations=8, max_considered=2)
    reference, out = act(full, obs, spec, search, explore=False), act(half, obs, spec, search, explore=False)
    assert out.improved_policy.dtype == out.root_value.dtype == torch.float32
    # bf16 keeps ~3 significant digits: the search's results move by about that much
    torch.testing.assert_close(out.improved_policy, reference.improved_policy, atol=0.03, rtol=0)
    torch.testing.assert_close(out.root_value, reference.root_value, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_the_puct_constants_of_the_config_reach_the_search(action):
    discrete = action == "discrete"
    spec = EnvSpec("toy", (3,), "float32", action, 4 if discrete else 2, 0, (), (), 0.9, None)
    torch.manual_seed(0)
    model = worker_model(small_model(), spec, "cpu", "fp32")
    for p in model.parameters():  # zero-initialised heads would make every child alike
        torch.nn.init.normal_(p, std=0.5)
    obs = torch.randn(16, 3)
    base = SearchConfig(kind="puct", num_simulations=24, k_policy=4, k_wide=0, k_interior=2)
    state, value_logits, policy = model.initial_inference(obs)
    value = model.value_support.to_scalar(value_logits)

    def visits(cfg: SearchConfig, puct: PUCTConfig) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(1)  # the same candidates for a sampled search
        through_config = act(model, obs, spec, cfg, explore=False).visit_counts
        torch.manual_seed(1)
        fn, latent = recurrent_fn(model), search_state(model, state)
        quiet = dict(dirichlet_fraction=0.0, temperature=0.0, config=puct)  # explore=False
        if discrete:
            direct = puct_search(policy, value, latent, fn, 24, spec.discount, **quiet)
        else:
            direct = sampled_puct_search(
                policy,
                value,
                latent,
                fn,
                squashed.sample,
                num_simulations=24,
                k_policy=4,
                k_wide=0,
                k_interior=2,
                log_prob_fn=squashed.log_prob,
                discount=spec.discount,
                **quiet,
            )
        return through_config, direct.visit_counts

    default, default_direct = visits(base, PUCTConfig())
    # c2 = 1 makes the exploration weight grow with the parent's visits: another visit pattern.
    changed = dataclasses.replace(base, c1=0.1, c2=1.0, min_spread=0.5)
    other, other_direct = visits(changed, PUCTConfig(0.1, 1.0, 0.5))
    assert torch.equal(default, default_direct) and torch.equal(other, other_direct)
    assert not torch.equal(default, other)
    pessimistic, pessimistic_direct = visits(
        dataclasses.replace(base, unvisited_q="zero"), PUCTConfig(unvisited_q="zero")
    )
    assert torch.equal(pessimistic, pessimistic_direct) and not torch.equal(default, pessimistic)


def test_the_gumbel_visit_offset_of_the_config_reaches_the_search():
    spec = EnvSpec("toy", (3,), "float32", "discrete", 6, 0, (), (), 0.9, None)
    torch.manual_seed(0)
    model = worker_model(small_model(), spec, "cpu", "fp32")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    obs = torch.randn(16, 3)
    state, value_logits, policy = model.initial_inference(obs)
    value = model.value_support.to_scalar(value_logits)
    policies = []
    for offset in (0.0, 1.0):
        cfg = SearchConfig(num_simulations=12, max_considered=4, visit_offset=offset)
        through_config = act(model, obs, spec, cfg, explore=False).improved_policy
        direct = gumbel_search(
            policy,
            value,
            search_state(model, state),
            recurrent_fn(model),
            12,
            4,
            spec.discount,
            torch.zeros(16, 6),
            qtransform=QTransform(visit_offset=offset),
        ).improved_policy
        assert torch.equal(through_config, direct)
        policies.append(through_config)
    assert not torch.allclose(*policies)  # two unvisited actions' v_mix weigh N apart


def test_the_puct_temperature_halves_at_half_the_budget_and_halves_again_at_three_quarters():
    fixed = SearchConfig(kind="puct", temperature=0.8)
    decaying = dataclasses.replace(fixed, temperature_decay=True)
    progress = [0.0, 0.49, 0.5, 0.74, 0.75, 1.0]
    assert [action_temperature(fixed, p) for p in progress] == [0.8] * 6
    assert [action_temperature(decaying, p) for p in progress] == [0.8, 0.8, 0.4, 0.4, 0.2, 0.2]


@pytest.mark.slow  # inductor compiles each search for about a minute on 2 cores
@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_compiled_search_gives_the_eager_search_results(kind):
    discrete = kind == "discrete"
    bounds = ((), ()) if discrete else ((-1.0, -1.0), (1.0, 1.0))
    spec = EnvSpec("toy", (3,), "float32", kind, 3 * discrete, 2 * (not discrete), *bounds, 0.9, None)
    # the discrete model predicts value prefixes: the search state is then a pytree
    config = dataclasses.replace(small_model(value=(-50, 50, 21)), value_prefix=discrete)
    torch.manual_seed(0)
    model = worker_model(config, spec, "cpu", "fp32")
    obs = torch.randn(8, 3)
    eager = SearchConfig(num_simulations=8, max_considered=4, k_policy=4, k_wide=4)
    compiled = dataclasses.replace(eager, compile=True)
    torch.manual_seed(1)
    reference = act(model, obs, spec, eager, explore=False)
    # Sampled searches draw their candidates: inductor then draws the same numbers as eager.
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with torch._inductor.config.patch(fallback_random=True):
        torch.manual_seed(1)
        out = act(model, obs, spec, compiled, explore=False)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs + 1  # one graph, compiled
    torch.testing.assert_close(out.improved_policy, reference.improved_policy, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.root_value, reference.root_value, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.visit_counts, reference.visit_counts)
