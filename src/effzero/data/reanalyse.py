"""The reanalyse worker: sample windows, recompute every target with the lagged target model."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from effzero.config import AlgoConfig, ModelConfig, SearchConfig
from effzero.data.acting import build_model, search_roots, worker_model
from effzero.data.replay import TRANSITION, Replay, ReplayLayout, stack_frames
from effzero.data.shared import BatchLayout, BatchSlots, Counters, SharedWeights
from effzero.data.targets import (
    bootstrap_positions,
    episode_last,
    mixed_value_target,
    off_policy_td_steps,
    position_masks,
    reward_targets,
    td_value_targets,
    value_prefix_targets,
)
from effzero.data.workers import Heartbeat
from effzero.envs import EnvSpec


@torch.inference_mode()
def make_batch(
    replay: Replay,
    model: nn.Module,
    spec: EnvSpec,
    search: SearchConfig,
    algo: AlgoConfig,
    batch_size: int,
    alpha: float,
    beta: float,
    learner_step: int,
    env_steps: int,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """One training batch: sampled windows with reanalysed targets.

    The target model embeds every observation of each window: its values bootstrap the TD
    targets, and a fresh search from the first K + 1 positions gives the policy targets and
    the search-based values (SVE). With `algo.off_policy_correction` (EfficientZero V1) the
    TD horizon shrinks with the sample's age and bootstraps from a search's root value.

    Returns (K unroll steps, B samples, S stacked frames):
        frames [B, K + S, *frame] (stacked: the observations 0..K), action [B, K, *action], reward [B, K], reward_mask [B, K],
        value [B, K + 1], value_mask [B, K + 1], policy [B, K + 1, A or Kc], policy_mask [B, K + 1],
        consistency_mask [B, K], weight [B], lane [B], slot [B], learner_step [] (when sampled);
        for continuous actions also candidates [B, K + 1, Kc, d] and best_action [B, K + 1, d];
        on the CPU whatever the model's device.
    """
    unroll = algo.unroll_steps
    lanes, slots, weights = replay.sample(batch_size, alpha, beta, generator)
    device = next(model.parameters()).device  # the replay lives on the CPU, the model anywhere
    window = {k: v.to(device, non_blocking=True) for k, v in replay.windows(lanes, slots).items()}
    stack = replay.layout.frame_stack
    obs = stack_frames(window["frames"], stack)  # [B, W + 1, *obs]
    width = obs.shape[1]
    state, value_logits, policy = model.initial_inference(obs.flatten(0, 1))
    values = model.value_support.to_scalar(value_logits).view(batch_size, width)
    last, terminated = episode_last(window["kind"])
    td_steps: int | Tensor = algo.td_steps
    # Search from the K + 1 unroll positions of every window (policy targets, SVE) and, with
    # EZ-V1's off-policy correction, from each position's bootstrap observation too.
    roots = torch.arange(unroll + 1, device=device).expand(batch_size, -1)  # [B, K + 1]
    if algo.off_policy_correction:
        td_steps = off_policy_td_steps(
            window["step"][:, 0], env_steps, algo.td_steps, algo.correction_ratio, algo.correction_span
        )
        bootstrap_at = bootstrap_positions(last, td_steps, unroll, width)[1]
        roots = torch.cat((roots, bootstrap_at), 1)  # [B, 2(K + 1)]
    per_window = roots.shape[1]
    pick = (torch.arange(batch_size, device=device)[:, None] * width + roots).flatten()
    out = search_roots(
        model, state[pick], values.flatten()[pick], policy[pick], spec, search, search.noise_in_reanalyse
    )
    root_value = out.root_value.view(batch_size, per_window)
    bootstrap = values
    if algo.off_policy_correction:  # bootstrap from a fresh search's root value, not the raw value
        bootstrap = values.scatter(1, bootstrap_at, root_value[:, unroll + 1 :])
    td, td_mask = td_value_targets(
        window["reward"], bootstrap, last, terminated, spec.discount, td_steps, unroll
    )
    masks = position_masks(last, terminated, unroll)
    sve = torch.where(masks["policy"] > 0, root_value[:, : unroll + 1], 0.0)
    if algo.value_target == "td":
        value = td
    elif algo.value_target == "sve":
        value = sve
    else:
        value = mixed_value_target(
            td, sve, window["step"][:, 0], learner_step, env_steps, algo.mixed_t1, algo.mixed_t2
        )
    reward, reward_mask = reward_targets(window["reward"], last, terminated, unroll)
    if model.value_prefix:
        reward = value_prefix_targets(reward, model.lstm_horizon)
    batch = {
        "frames": window["frames"][:, : unroll + stack],  # the learner stacks them: obs 0 .. K
        "action": unroll_actions(window["action"][:, :unroll], last, spec, generator),
        "reward": reward,
        "reward_mask": reward_mask,
        "value": value,
        "value_mask": td_mask,
        "policy": out.improved_policy.view(batch_size, per_window, -1)[:, : unroll + 1],
        "policy_mask": masks["policy"],
        "consistency_mask": masks["consistency"],
        "weight": weights,
        "lane": lanes,
        "slot": slots,
        "learner_step": torch.tensor(learner_step),
    }
    if not spec.is_discrete:  # the policy target is over each position's sampled candidates
        candidates = out.candidate_actions.view(batch_size, per_window, -1, spec.action_dim)
        batch["candidates"] = candidates[:, : unroll + 1]
        batch["best_action"] = out.action.view(batch_size, per_window, spec.action_dim)[:, : unroll + 1]
    return {k: v.cpu() for k, v in batch.items()}


def unroll_actions(action: Tensor, last: Tensor, spec: EnvSpec, generator: torch.Generator | None) -> Tensor:
    """The window's actions, random past the episode's end (the model learns they do nothing).

    Args:
        action: [B, K, *action] stored actions; last: [B] from `episode_last`.
    """
    k = torch.arange(action.shape[1], device=action.device)[None, :]
    past = k > last[:, None]
    if spec.is_discrete:
        random = torch.randint(0, spec.num_actions, action.shape, generator=generator)
    else:
        random = torch.rand(action.shape, generator=generator) * 2 - 1
        past = past[..., None]
    return torch.where(past, random.to(action.device, action.dtype), action)


@dataclass
class ReanalyseJob:
    """Everything a reanalyse process needs; picklable."""

    model: ModelConfig
    search: SearchConfig
    algo: AlgoConfig
    spec: EnvSpec
    replay: Replay
    target_weights: SharedWeights
    counters: Counters
    batches: BatchSlots  # where ready batches go
    owner: int  # this worker's index among the reanalyse workers: the batch slots it fills
    batch_size: int
    alpha: float
    beta: float
    seed: int
    beat: Heartbeat
    device: str = "cpu"
    precision: str = "fp32"  # of the model's calls: fp32 or bf16


class Reanalyser:
    """One reanalyse worker's target model and sampling generator."""

    def __init__(self, job: ReanalyseJob):
        self.job = job
        self.generator = torch.Generator().manual_seed(job.seed)
        self.model = worker_model(job.model, job.spec, job.device, job.precision)
        self.version = 0  # of the target weights loaded; 0 = none published yet

    def ready(self) -> bool:
        """Load the newest target weights; whether there are weights and enough data for a batch."""
        job = self.job
        self.version = job.target_weights.load_into(self.model, self.version)
        return self.version > 0 and job.replay.num_sampleable() >= job.batch_size

    def make_batch(self) -> dict[str, Tensor]:
        """A batch reanalysed with the loaded target weights (call `ready` first)."""
        job = self.job
        return make_batch(
            job.replay,
            self.model,
            job.spec,
            job.search,
            job.algo,
            job.batch_size,
            job.alpha,
            job.beta,
            job.counters.updates,
            job.counters.env_steps,
            self.generator,
        )


def run_reanalyse(job: ReanalyseJob) -> None:
    """Produce batches into the worker's free batch slots until the run stops (a worker process's loop).

    A batch is made only once a slot of its own is free (no one else fills it), so it is as
    fresh as the learner's demand allows and is never held while the worker waits.
    """
    torch.manual_seed(job.seed)
    reanalyser = Reanalyser(job)
    compiled = not job.search.compile  # else the first search compiles, for minutes
    while not job.counters.stopping:
        job.beat()
        slot = job.batches.free_slot(job.owner)
        if slot is None or not reanalyser.ready():
            time.sleep(0.002)
            continue
        with contextlib.nullcontext() if compiled else job.beat.compiling():
            job.batches.put(slot, reanalyser.make_batch())
        compiled = True


def batch_layout(
    model: ModelConfig,
    spec: EnvSpec,
    search: SearchConfig,
    algo: AlgoConfig,
    layout: ReplayLayout,
    batch_size: int,
) -> BatchLayout:
    """Shapes and dtypes of the batches `make_batch` makes for a replay of `layout`.

    Found by making a batch of two on one short lane of zeros with an untrained model, so they
    follow `make_batch` wherever it goes; every entry is batch-first, or a scalar.
    """
    replay = Replay(dataclasses.replace(layout, lanes=1, lane_length=layout.window + 3))
    zero = torch.zeros(1)
    for i in range(layout.window + 2):  # slots 0 and 1 get whole windows
        replay.append(
            torch.tensor([0]),
            torch.zeros(1, *layout.obs_shape, dtype=layout.obs_dtype),
            torch.zeros(1, *layout.action_shape, dtype=layout.action_dtype),
            zero,
            torch.tensor([TRANSITION], dtype=torch.uint8),
            zero,
            torch.zeros(1, layout.policy_size),
            torch.tensor([i]),
        )
    net = build_model(model, spec).eval()
    search = dataclasses.replace(search, compile=False)  # a compiled search would compile for batch 2
    batch = make_batch(replay, net, spec, search, algo, 2, 1.0, 1.0, 0, 0, torch.Generator().manual_seed(0))
    return {
        name: ((batch_size, *value.shape[1:]) if value.dim() else (), value.dtype)
        for name, value in batch.items()
    }
