"""The world model seen through the search: building it, and searching from observations."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from effzero.config import ImageModelConfig, ModelConfig, SearchConfig, SupportConfig, UnvisitedQ
from effzero.envs import EnvSpec
from effzero.nets import ImageWorldModel, ProprioWorldModel, Support
from effzero.nets import policy as squashed
from effzero.search import (
    PUCTConfig,
    QTransform,
    RecurrentFn,
    SearchOutput,
    gumbel_search,
    puct_search,
    sampled_gumbel_search,
    sampled_puct_search,
)


def _support(cfg: SupportConfig, clip: tuple[float, float] | None = None) -> Support:
    return Support(cfg.low, cfg.high, cfg.bins, in_h_space=cfg.in_h_space, clip=clip)


def build_model(cfg: ModelConfig | ImageModelConfig, spec: EnvSpec) -> nn.Module:
    """The world model of `cfg.kind` for an environment's observations and actions."""
    actions = {"num_actions": spec.num_actions} if spec.is_discrete else {"action_dim": spec.action_dim}
    supports = {
        "value_support": _support(cfg.value_support, spec.value_bounds),
        "reward_support": _support(cfg.reward_support),
    }
    if isinstance(cfg, ImageModelConfig):
        if len(spec.obs_shape) != 3:
            raise ValueError(f"model=image needs image observations, {spec.name} has shape {spec.obs_shape}")
        return ImageWorldModel(
            spec.obs_shape,
            channels=cfg.channels,
            num_blocks=cfg.num_blocks,
            reduced_channels=cfg.reduced_channels,
            head_hidden=tuple(cfg.head_hidden),
            policy_hidden=tuple(cfg.policy_hidden),
            action_embed=cfg.action_embed,
            value_prefix=cfg.value_prefix,
            lstm_hidden=cfg.lstm_hidden,
            lstm_horizon=cfg.lstm_horizon,
            proj_hidden=cfg.proj_hidden,
            proj_dim=cfg.proj_dim,
            pred_hidden=cfg.pred_hidden,
            zero_init_value=cfg.zero_init_value,
            **actions,
            **supports,
        )
    if len(spec.obs_shape) != 1:
        raise ValueError(f"model=proprio needs vector observations, {spec.name} has shape {spec.obs_shape}")
    return ProprioWorldModel(
        obs_dim=math.prod(spec.obs_shape),
        hidden=cfg.hidden,
        rep_hidden=cfg.rep_hidden,
        dyn_hidden=cfg.dyn_hidden,
        action_embed=cfg.action_embed,
        head_hidden=tuple(cfg.head_hidden),
        num_blocks=cfg.num_blocks,
        proj_hidden=cfg.proj_hidden,
        proj_dim=cfg.proj_dim,
        pred_hidden=cfg.pred_hidden,
        value_prefix=cfg.value_prefix,
        lstm_hidden=cfg.lstm_hidden,
        lstm_horizon=cfg.lstm_horizon,
        **actions,
        **supports,
    )


def worker_model(
    cfg: ModelConfig | ImageModelConfig, spec: EnvSpec, device: str, precision: str
) -> nn.Module:
    """A worker's model on `device`, in eval mode; with precision `bf16` its calls run under autocast.

    Only the two inference calls autocast: the search's tree arithmetic stays float32 (it
    turns autocast off for itself, too), and the value-prefix LSTM runs in its weights' dtype.
    The learner's precision is Lightning's `trainer.precision`. A GPU given with its index
    becomes the process's current one: what defaults to it (the caching allocator, CUDA graphs,
    compiled kernels) then stays on the worker's GPU.
    """
    if torch.device(device).type == "cuda" and torch.device(device).index is not None:
        torch.cuda.set_device(device)
    model = build_model(cfg, spec).to(device).eval()
    if precision != "bf16":
        return model
    device_type = torch.device(device).type
    for name in ("initial_inference", "recurrent_inference"):
        call = getattr(model, name)

        def under_autocast(*args, call=call, **kwargs):
            with torch.autocast(device_type, dtype=torch.bfloat16):
                return call(*args, **kwargs)

        setattr(model, name, under_autocast)  # an instance attribute shadows the method
    return model


def recurrent_fn(model: nn.Module) -> RecurrentFn:
    """The search's view of the dynamics: scalar reward and value, policy logits, next latent.

    A value-prefix model predicts Σ rewards since its LSTM was last reset, and resets every
    `lstm_horizon` steps (search depths 0, 5, 10, …). Its search state is the pytree
    (latent, h, c, prefix, depth), and the per-step reward is the prefix minus the parent's
    prefix, or the prefix itself right after a reset.
    """
    if not model.value_prefix:

        def fn(state: Tensor, action: Tensor):
            next_state, reward_logits, value_logits, policy, _ = model.recurrent_inference(
                state, action, None
            )
            reward = model.reward_support.to_scalar(reward_logits)
            return reward, model.value_support.to_scalar(value_logits), policy.float(), next_state

        return fn

    def prefix_fn(state: tuple[Tensor, ...], action: Tensor):
        latent, h, c, prefix, depth = state
        keep = (depth % model.lstm_horizon != 0).to(h.dtype)  # 0 where the parent starts a segment
        next_latent, prefix_logits, value_logits, policy, (h, c) = model.recurrent_inference(
            latent, action, (h * keep[:, None], c * keep[:, None])
        )
        new_prefix = model.reward_support.to_scalar(prefix_logits)
        reward = new_prefix - prefix * keep
        value = model.value_support.to_scalar(value_logits)
        return reward, value, policy.float(), (next_latent, h.float(), c.float(), new_prefix, depth + 1)

    return prefix_fn


def search_state(model: nn.Module, latent: Tensor) -> Tensor | tuple[Tensor, ...]:
    """The root search state of `recurrent_fn(model)` for root latents [B, ...]."""
    if not model.value_prefix:
        return latent
    zeros = latent.new_zeros(latent.shape[0], model.lstm_hidden, dtype=torch.float32)
    scalars = latent.new_zeros(latent.shape[0], dtype=torch.float32)
    return latent, zeros, zeros.clone(), scalars, scalars.clone()


def search_roots(
    model: nn.Module,
    state: Tensor,
    value: Tensor,
    policy: Tensor,
    spec: EnvSpec,
    cfg: SearchConfig,
    explore: bool,
) -> SearchOutput:
    """Search from roots whose initial inference is done; with `cfg.compile`, as one compiled graph.

    Args:
        state: [B, ...] latent states; value: [B] decoded values; policy: [B, A] logits or
            [B, 2d] squashed-Gaussian parameters.
        explore: Gumbel / Dirichlet noise, widened candidates and visit sampling on (acting,
            reanalysis) or off (evaluation).
    """
    if cfg.compile and not torch.compiler.is_compiling():  # traced, the body below runs
        return _compiled_search_roots(model, state, value, policy, spec, cfg, explore)
    fn = recurrent_fn(model)
    state = search_state(model, state)
    logits, value = policy.float(), value.float()
    if not spec.is_discrete:
        return _sampled_search(logits, value, state, fn, spec, cfg, explore)
    if cfg.kind == "gumbel":
        qt = QTransform(cfg.c_visit, cfg.c_scale, cfg.min_spread, cfg.visit_offset)
        gumbel = None if explore else torch.zeros_like(logits)
        return gumbel_search(
            logits,
            value,
            state,
            fn,
            cfg.num_simulations,
            cfg.max_considered,
            spec.discount,
            gumbel,
            qtransform=qt,
        )
    if cfg.kind == "puct":
        return puct_search(
            logits,
            value,
            state,
            fn,
            cfg.num_simulations,
            spec.discount,
            dirichlet_alpha=cfg.dirichlet_alpha,
            dirichlet_fraction=cfg.dirichlet_fraction if explore else 0.0,
            temperature=cfg.temperature if explore else 0.0,
            config=puct_config(cfg),
        )
    raise ValueError(f"search.kind={cfg.kind!r} is not known; valid: gumbel, puct")


# A Gumbel search has no host sync (`search/tree.py`), so it compiles to one graph: model
# calls, tree arithmetic and all. Each batch size and `explore` compile once per process;
# inductor's on-disk cache serves the same graph to the other workers and to later runs.
_compiled_search_roots = torch.compile(search_roots, fullgraph=True, dynamic=False)


def _sampled_search(
    params: Tensor,
    value: Tensor,
    state: Tensor,
    fn: RecurrentFn,
    spec: EnvSpec,
    cfg: SearchConfig,
    explore: bool,
) -> SearchOutput:
    """Search over sampled candidates; without exploration all come from the unwidened policy."""
    k_policy, k_wide = (cfg.k_policy, cfg.k_wide) if explore else (cfg.k_policy + cfg.k_wide, 0)
    common = dict(
        num_simulations=cfg.num_simulations,
        k_policy=k_policy,
        k_wide=k_wide,
        std_magnification=cfg.std_magnification,
        k_interior=cfg.k_interior,
        discount=spec.discount,
    )
    if cfg.kind == "gumbel":
        noise = None
        if not (explore and cfg.continuous_noise):
            noise = torch.zeros(params.shape[0], k_policy + k_wide, device=params.device)
        qt = QTransform(cfg.c_visit, cfg.c_scale, cfg.min_spread, cfg.visit_offset)
        return sampled_gumbel_search(
            params,
            value,
            state,
            fn,
            squashed.sample,
            max_considered=cfg.max_considered,
            gumbel=noise,
            qtransform=qt,
            **common,
        )
    return sampled_puct_search(
        params,
        value,
        state,
        fn,
        squashed.sample,
        log_prob_fn=squashed.log_prob,
        dirichlet_alpha=cfg.dirichlet_alpha,
        dirichlet_fraction=cfg.dirichlet_fraction if explore else 0.0,
        temperature=cfg.temperature if explore else 0.0,
        config=puct_config(cfg),
        **common,
    )


def puct_config(cfg: SearchConfig) -> PUCTConfig:
    """The pUCT settings of `cfg`."""
    return PUCTConfig(cfg.c1, cfg.c2, cfg.min_spread, UnvisitedQ(cfg.unvisited_q).value)


def action_temperature(cfg: SearchConfig, progress: float) -> float:
    """The pUCT action temperature at `progress` ∈ [0, 1] of the env-step budget.

    With `temperature_decay`: ×1, then ×0.5 from 50% and ×0.25 from 75% (MuZero's and EZ-V1's
    schedule over training steps, which the replay-ratio governor keeps in step with env steps).
    """
    if not cfg.temperature_decay:
        return cfg.temperature
    return cfg.temperature * (1.0 if progress < 0.5 else 0.5 if progress < 0.75 else 0.25)


@torch.inference_mode()
def act(model: nn.Module, obs: Tensor, spec: EnvSpec, cfg: SearchConfig, explore: bool) -> SearchOutput:
    """Initial inference on observations [B, *obs], then the configured search."""
    state, value_logits, policy = model.initial_inference(obs)
    return search_roots(model, state, model.value_support.to_scalar(value_logits), policy, spec, cfg, explore)
