"""The learner's losses against an independent computation, and its schedule helpers."""

import math

import pytest
import torch

from effzero.agent import EZAgent, lr_factor
from effzero.config import AlgoConfig, DataConfig, ImageModelConfig, OptimConfig
from effzero.envs import EnvSpec
from effzero.nets.world_model import scale_gradient
from tests.small import small_model

SPEC = EnvSpec("toy", (4,), "float32", "discrete", 3, 0, (), (), 0.9, None)
SMALL = small_model()


def test_lr_schedule_warms_up_then_steps_down():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, decay_every=10, decay_rate=0.5)
    assert [lr_factor(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(13, cfg) == 1.0 and lr_factor(14, cfg) == 0.5 and lr_factor(34, cfg) == 0.125
    assert lr_factor(10**6, OptimConfig(warmup_steps=1, decay_every=0)) == 1.0


def test_scale_gradient_keeps_the_value_and_scales_the_gradient():
    x = torch.tensor([2.0, -1.0], requires_grad=True)
    y = scale_gradient(x, 0.5)
    assert torch.equal(y, x.detach())
    (3 * y).sum().backward()
    assert x.grad.tolist() == [1.5, 1.5]


def step_gradient_norms(scale: float, heads: bool, k: int) -> tuple[float, float, float]:
    """Gradient norms of the value loss at unroll step k alone, into the representation, the
    dynamics' action encoder and the value head."""
    torch.manual_seed(0)
    algo = AlgoConfig(
        unroll_steps=2, consistency=False, latent_grad_scale=scale, latent_grad_scale_heads=heads
    )
    agent = EZAgent(SMALL, algo, OptimConfig(), DataConfig(), SPEC)
    model = agent.model.eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    b = 4
    only_k = torch.zeros(b, 3)
    only_k[:, k] = 1.0
    batch = {
        "frames": torch.randn(b, 3, 4),
        "action": torch.randint(0, 3, (b, 2)),
        "reward": torch.zeros(b, 2),
        "reward_mask": torch.zeros(b, 2),
        "value": torch.rand(b, 3) * 5,
        "value_mask": only_k,
        "policy": torch.full((b, 3, 3), 1 / 3),
        "policy_mask": torch.zeros(b, 3),
        "consistency_mask": torch.zeros(b, 2),
    }
    agent.losses(batch)[0]["value"].sum().backward()
    return tuple(
        float(torch.cat([p.grad.flatten() for p in module.parameters()]).norm())
        for module in (model.representation, model.action_encoder, model.value_head)
    )


def test_the_latent_gradient_scale_reaches_the_heads_of_its_step_only_with_the_hook():
    # The chain rule: the value loss at step k reaches the representation through k unrolled
    # latents. EfficientZero's hook scales each latent's whole gradient, its own step's head
    # included (×0.5^k); MuZero's pseudocode scales after the heads (×0.5^(k−1)).
    for k, hook, pseudocode in ((1, 0.5, 1.0), (2, 0.25, 0.5)):
        full = step_gradient_norms(1.0, True, k)
        for heads, factor in ((True, hook), (False, pseudocode)):
            representation, dynamics, value_head = step_gradient_norms(0.5, heads, k)
            assert math.isclose(representation, factor * full[0], rel_tol=1e-5), (k, heads)
            if k == 1:  # (at k = 2 the dynamics' weights get both steps' gradients, scaled apart)
                assert math.isclose(dynamics, factor * full[1], rel_tol=1e-5), heads
            assert math.isclose(value_head, full[2], rel_tol=1e-6), (
                k,
                heads,
            )  # the head's own weights: unscaled


def two_hot_ce(
    logits: torch.Tensor, target: torch.Tensor, low: float, high: float, bins: int
) -> torch.Tensor:
    """Cross-entropy against a two-hot target in h-space, written out independently."""

    def h(x):
        return torch.sign(x) * (torch.sqrt(x.abs() + 1) - 1) + 0.001 * x

    atoms = torch.linspace(h(torch.tensor(low)).item(), h(torch.tensor(high)).item(), bins)
    y = h(target).clamp(atoms[0], atoms[-1])
    step = atoms[1] - atoms[0]
    position = (y - atoms[0]) / step
    lower = position.floor().clamp(max=bins - 2).long()
    upper_weight = position - lower
    target_dist = torch.zeros(*y.shape, bins)
    target_dist.scatter_(-1, lower[..., None], (1 - upper_weight)[..., None])
    target_dist.scatter_add_(-1, (lower + 1)[..., None], upper_weight[..., None])
    return -(target_dist * torch.log_softmax(logits, -1)).sum(-1)


def test_losses_match_an_independent_unroll():
    torch.manual_seed(0)
    unroll = 2
    agent = EZAgent(SMALL, AlgoConfig(unroll_steps=unroll), OptimConfig(), DataConfig(), SPEC)
    model = agent.model.eval()  # eval mode: BatchNorm and the normaliser are deterministic
    for p in model.parameters():  # zero-initialised heads would make every term trivial
        torch.nn.init.normal_(p, std=0.3)
    b = 5
    batch = {
        "frames": torch.randn(b, unroll + 1, 4),
        "action": torch.randint(0, 3, (b, unroll)),
        "reward": torch.rand(b, unroll),
        "reward_mask": torch.tensor([[1.0, 1.0]] * 4 + [[1.0, 0.0]]),
        "value": torch.rand(b, unroll + 1) * 5,
        "value_mask": torch.ones(b, unroll + 1),
        "policy": torch.softmax(torch.randn(b, unroll + 1, 3), -1),
        "policy_mask": torch.ones(b, unroll + 1),
        "consistency_mask": torch.ones(b, unroll),
    }
    losses, value0 = agent.losses(batch)
    with torch.no_grad():
        state, v_logits, p_logits = model.initial_inference(batch["frames"][:, 0])
        value = two_hot_ce(v_logits, batch["value"][:, 0], -20, 20, 15)
        policy = -(batch["policy"][:, 0] * torch.log_softmax(p_logits, -1)).sum(-1)
        reward = torch.zeros(b)
        consistency = torch.zeros(b)
        for k in range(1, unroll + 1):
            state, r_logits, v_logits, p_logits, _ = model.recurrent_inference(
                state, batch["action"][:, k - 1]
            )
            reward += (
                two_hot_ce(r_logits, batch["reward"][:, k - 1], -2, 2, 9) * batch["reward_mask"][:, k - 1]
            )
            value += two_hot_ce(v_logits, batch["value"][:, k], -20, 20, 15)
            policy += -(batch["policy"][:, k] * torch.log_softmax(p_logits, -1)).sum(-1)
            future = model.project(model.initial_inference(batch["frames"][:, k])[0], with_predictor=False)
            predicted = model.project(state, with_predictor=True)
            cos = (predicted * future).sum(-1) / (predicted.norm(dim=-1) * future.norm(dim=-1))
            consistency -= cos
    for name, expected in {
        "reward": reward,
        "value": value,
        "policy": policy,
        "consistency": consistency,
    }.items():
        torch.testing.assert_close(losses[name].detach(), expected, rtol=1e-4, atol=1e-4, msg=name)
    assert value0.shape == (b,) and math.isfinite(value0.sum().item())


def continuous_batch(b: int, unroll: int, d: int, candidates: int) -> dict[str, torch.Tensor]:
    return {
        "frames": torch.randn(b, unroll + 1, 4),
        "action": torch.rand(b, unroll, d) * 2 - 1,
        "reward": torch.rand(b, unroll),
        "reward_mask": torch.ones(b, unroll),
        "value": torch.rand(b, unroll + 1),
        "value_mask": torch.ones(b, unroll + 1),
        "policy": torch.softmax(torch.randn(b, unroll + 1, candidates), -1),
        "policy_mask": torch.tensor([[1.0] * unroll + [0.0]] * b),
        "consistency_mask": torch.ones(b, unroll),
        "candidates": torch.rand(b, unroll + 1, candidates, d) * 1.8 - 0.9,
        "best_action": torch.rand(b, unroll + 1, d) * 1.8 - 0.9,
    }


def squashed_log_density(params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log p of tanh-squashed N(5 tanh(μ/5), softplus(σ + 1) + 0.1), via torch.distributions."""
    from torch.distributions import Independent, Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    raw_mean, raw_std = params.chunk(2, -1)
    base = Normal(5 * torch.tanh(raw_mean / 5), torch.nn.functional.softplus(raw_std + 1) + 0.1)
    dist = TransformedDistribution(Independent(base, 1), [TanhTransform()])
    return dist.log_prob(actions.transpose(0, -2)).transpose(0, -1)


def test_continuous_policy_loss_over_candidates_and_best_action():
    torch.manual_seed(1)
    for d, candidates in ((1, 5), (3, 4)):
        spec = EnvSpec("toy", (4,), "float32", "continuous", 0, d, (-1.0,) * d, (1.0,) * d, 0.9, None)
        agent = EZAgent(SMALL, AlgoConfig(unroll_steps=2), OptimConfig(), DataConfig(), spec)
        model = agent.model.eval()
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.3)
        batch = continuous_batch(6, 2, d, candidates)
        losses, _ = agent.losses(batch)
        with torch.no_grad():
            state, _, params = model.initial_inference(batch["frames"][:, 0])
            expected = torch.zeros(6)
            for k in range(3):
                if k > 0:
                    state, _, _, params, _ = model.recurrent_inference(state, batch["action"][:, k - 1])
                if k == 2:
                    break  # position 2 is masked
                if d == 1:  # the full loss over the K candidates
                    log_p = squashed_log_density(params, batch["candidates"][:, k])
                    expected -= (batch["policy"][:, k] * log_p).sum(-1)
                else:  # the simple loss: −log p of the chosen candidate
                    expected -= squashed_log_density(params, batch["best_action"][:, k, None])[:, 0]
        torch.testing.assert_close(losses["policy"].detach(), expected, atol=2e-3, rtol=2e-3)
        assert "entropy" in losses


def test_value_prefix_lstm_state_is_carried_through_the_unroll_and_reset_every_horizon():
    """Unroll 3 with horizon 2: the LSTM starts from zeros at steps 1 and 3 and carries (h, c) into step 2."""
    import dataclasses

    torch.manual_seed(2)
    unroll = 3
    cfg = dataclasses.replace(SMALL, value_prefix=True, lstm_hidden=8, lstm_horizon=2)
    agent = EZAgent(cfg, AlgoConfig(unroll_steps=unroll), OptimConfig(), DataConfig(), SPEC)
    model = agent.model.eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    b = 4
    batch = {
        "frames": torch.randn(b, unroll + 1, 4),
        "action": torch.randint(0, 3, (b, unroll)),
        "reward": torch.rand(b, unroll),  # prefix targets, as reanalyse makes them
        "reward_mask": torch.ones(b, unroll),
        "value": torch.rand(b, unroll + 1),
        "value_mask": torch.ones(b, unroll + 1),
        "policy": torch.softmax(torch.randn(b, unroll + 1, 3), -1),
        "policy_mask": torch.ones(b, unroll + 1),
        "consistency_mask": torch.ones(b, unroll),
    }
    losses, _ = agent.losses(batch)
    with torch.no_grad():
        latent = model.initial_inference(batch["frames"][:, 0])[0]
        lstm = model.reward_head.lstm
        h = c = torch.zeros(b, 8)
        expected = torch.zeros(b)
        for k in range(1, unroll + 1):
            latent = model.dynamics(latent, batch["action"][:, k - 1])
            if k in (1, 3):
                h = c = torch.zeros(b, 8)
            h, c = lstm(latent, (h, c))
            logits = model.reward_head.out(model.reward_head.norm(h).relu())
            expected += two_hot_ce(logits, batch["reward"][:, k - 1], -2, 2, 9)
    torch.testing.assert_close(losses["reward"].detach(), expected, rtol=1e-4, atol=1e-4)


def test_a_samples_future_stacks_share_one_augmentation_and_its_current_stack_has_its_own():
    # Frames of one white pixel: where it lands after the shift, and how bright, give the draw.
    torch.manual_seed(0)
    b, unroll, stack = 8, 2, 2
    spec = EnvSpec(
        "img", (3 * stack, 96, 96), "uint8", "discrete", 3, 0, (), (), 0.9, None, frame_stack=stack
    )
    image = ImageModelConfig(
        channels=8, reduced_channels=4, lstm_hidden=16, proj_hidden=16, proj_dim=8, pred_hidden=8
    )
    agent = EZAgent(image, AlgoConfig(unroll_steps=unroll), OptimConfig(), DataConfig(), spec)
    frames = torch.zeros(b, unroll + stack, 3, 96, 96, dtype=torch.uint8)
    frames[..., 48, 48] = 200
    inputs = []
    real = agent.model.initial_inference
    agent.model.initial_inference = lambda obs: inputs.append(obs.clone()) or real(obs)
    batch = {
        "frames": frames,
        "action": torch.zeros(b, unroll, dtype=torch.long),
        "reward": torch.zeros(b, unroll),
        "reward_mask": torch.ones(b, unroll),
        "value": torch.zeros(b, unroll + 1),
        "value_mask": torch.ones(b, unroll + 1),
        "policy": torch.full((b, unroll + 1, 3), 1 / 3),
        "policy_mask": torch.ones(b, unroll + 1),
        "consistency_mask": torch.ones(b, unroll),
    }
    agent.losses(batch)
    current, future = inputs[0], inputs[1].view(b, unroll, 3 * stack, 96, 96)

    def draws(x: torch.Tensor) -> torch.Tensor:
        """(pixel index, brightness) of each image's first channel [..., 2]."""
        flat = x[..., 0, :, :].flatten(-2)
        return torch.stack((flat.argmax(-1).float(), flat.amax(-1)), -1)

    assert torch.equal(draws(future), draws(future[:, :1]).expand(-1, unroll, -1))  # one draw per sample
    assert len(set(draws(future)[:, 0, 0].tolist())) > 1  # samples draw apart
    assert not torch.equal(draws(current), draws(future[:, 0]))  # the current stack draws apart


def test_a_checkpoint_older_than_a_setting_resumes_while_the_setting_is_off_and_names_it_if_not():
    agent = EZAgent(SMALL, AlgoConfig(), OptimConfig(), DataConfig(), SPEC)
    old = {"env": {"id": "walker-walk"}, "model": {"hidden": 16}}  # written before env.value_bounds
    checkpoint = {
        "effzero_config": old,
        "target_state": agent.target_state,
        "next_target_state": agent.next_target_state,
        "global_step": 40,
    }
    agent.run_config = {"env": {"id": "walker-walk", "value_bounds": None}, "model": {"hidden": 16}}
    agent.on_load_checkpoint(checkpoint)
    assert agent.target_step == 40
    agent.run_config["env"]["value_bounds"] = [0.0, 1e5]
    with pytest.raises(ValueError, match=r"other env settings \(env\.value_bounds differ\)"):
        agent.on_load_checkpoint(checkpoint)
