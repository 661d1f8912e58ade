"""The LightningModule: the world model, EZ-V2's losses, the optimiser and the target model."""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import MLFlowLogger
from torch import Tensor

from effzero.config import AlgoConfig, DataConfig, ModelConfig, OptimConfig
from effzero.data.acting import build_model
from effzero.data.replay import stack_frames
from effzero.envs import EnvSpec
from effzero.nets import augment
from effzero.nets import policy as squashed
from effzero.nets.world_model import scale_gradient

log = logging.getLogger(__name__)


def lr_factor(step: int, cfg: OptimConfig) -> float:
    """Linear warm-up to the base rate, then ×decay_rate every `decay_every` steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.decay_every <= 0:
        return 1.0
    return cfg.decay_rate ** ((step - cfg.warmup_steps) // cfg.decay_every)


class NonFiniteLoss(FloatingPointError):
    """More than `max_nonfinite_steps` updates in a row had a NaN or infinite loss or gradient."""


class EZAgent(L.LightningModule):
    """EfficientZero V2's learner.

    Per sample, with K unroll steps and masks from the reanalysed targets:
        L = Σ_k reward_coef·CE(r̂_k, r_k) + value_coef·CE(v̂_k, z_k) + policy_coef·CE(p̂_k, π′_k)
            + consistency_coef·(−cos(pred(proj(ŝ_k)), sg(proj(h(o_k)))))
    weighted by the IS weights; the gradient is ×1/K and ×latent_grad_scale into each unrolled
    latent (from all that reads it, its own step's heads too, unless latent_grad_scale_heads=false).
    """

    def __init__(
        self,
        model: ModelConfig,
        algo: AlgoConfig,
        optim: OptimConfig,
        data: DataConfig,
        spec: EnvSpec,
        max_nonfinite_steps: int = 20,
    ):
        super().__init__()
        self.model = build_model(model, spec)
        self.algo, self.optim_cfg, self.data_cfg, self.spec = algo, optim, data, spec
        # Target weights lag the learner by target_refresh to 2·target_refresh steps: at each
        # swap the snapshot taken at the previous swap becomes the target.
        self.target_state = self._snapshot()
        self.next_target_state = self._snapshot()
        self.target_step = 0  # the learner step of the last target refresh
        self._clock = (time.monotonic(), 0, 0)
        self.run_config: dict | None = None  # the resolved run config, saved in checkpoints
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_steps = 0  # updates skipped for a NaN/inf loss or gradient, this session
        self._nonfinite_in_a_row = 0

    # ------------------------------------------------------------------ weights for the workers

    def _snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    @property
    def pipeline(self):
        return self.trainer.datamodule.pipeline

    def publish_initial_weights(self) -> None:
        self.pipeline.weights.publish(self.model.state_dict())
        self.pipeline.target_weights.publish(self.target_state)
        self.pipeline.counters.set_updates(self.global_step)

    def on_train_batch_end(self, outputs: Any, batch: dict[str, Tensor], batch_idx: int) -> None:
        step = self.global_step
        self.pipeline.counters.set_updates(step)
        if step % self.data_cfg.selfplay_refresh == 0:
            self.pipeline.weights.publish(self.model.state_dict())
        self._refresh_target(step)
        self._log_progress(batch)

    def _refresh_target(self, step: int) -> None:
        """Once at every `target_refresh`-th step: the snapshot of the last refresh becomes the target."""
        if step % self.data_cfg.target_refresh != 0 or step == self.target_step:
            return  # (a skipped update repeats its step: it must not refresh twice)
        self.target_step = step
        self.target_state, self.next_target_state = self.next_target_state, self._snapshot()
        self.pipeline.target_weights.publish(self.target_state)

    def _log_progress(self, batch: dict[str, Tensor]) -> None:
        episodes = [s for s in self.pipeline.drain_stats() if s[0] == "episode"]
        if episodes:
            returns = torch.tensor([e[1] for e in episodes])
            self.log("train/episode_return", returns.mean(), on_step=True, batch_size=len(episodes))
            self.log("train/episode_length", float(sum(e[2] for e in episodes)) / len(episodes), on_step=True)
        counters = self.pipeline.counters
        now, env_steps = time.monotonic(), counters.env_steps
        then, steps_then, updates_then = self._clock
        if now - then >= 10.0:
            self.log("perf/updates_per_s", (self.global_step - updates_then) / (now - then))
            self.log("perf/env_steps_per_s", (env_steps - steps_then) / (now - then))
            self.log("perf/queue_depth", float(self.pipeline.batches.qsize()))
            self._clock = (now, env_steps, self.global_step)
        self.log("train/env_steps", float(env_steps * self.trainer.world_size), on_step=True)
        self.log("workers/restarts", float(self.pipeline.restarts), on_step=True)
        self.log("perf/batch_staleness", float(self.global_step - int(batch["learner_step"])), on_step=True)

    # ------------------------------------------------------------------ losses

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        # Running statistics (normaliser, BatchNorm) move in the forward pass: kept to undo a skipped step.
        buffers = [b.clone() for b in self.model.buffers()]
        losses, value0 = self.losses(batch)
        algo = self.algo
        per_sample = (
            algo.reward_coef * losses["reward"]
            + algo.value_coef * losses["value"]
            + algo.policy_coef * losses["policy"]
            + algo.consistency_coef * losses.get("consistency", 0.0)
            + algo.entropy_coef * losses.get("entropy", 0.0)
        )
        loss = (batch["weight"] * per_sample).mean()
        finite = bool(torch.isfinite(loss))
        if not finite:
            for saved, buffer in zip(buffers, self.model.buffers(), strict=True):
                buffer.copy_(saved)
            self._skip_nonfinite("loss")
        # (a step skipped later, for its gradient, is counted from the next step on)
        self.log("train/nonfinite_steps", float(self.nonfinite_steps), on_step=True)
        if not finite:
            if self.trainer.world_size == 1:
                return None  # Lightning then skips backward and the optimiser step
            # DDP cannot skip a step on one rank (the others wait in its gradient all-reduce):
            # this rank contributes zero gradients to it instead.
            return sum(p.sum() for p in self.model.parameters()) * 0.0
        with torch.no_grad():
            priority = (value0 - batch["value"][:, 0]).abs() + 1e-6
            self.pipeline.update_priorities(batch["lane"], batch["slot"], priority)
        for name, value in losses.items():
            self.log(f"loss/{name}", value.mean(), on_step=True)
        self.log("loss/total", loss, on_step=True, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True)
        return loss / algo.unroll_steps  # EZ-V2 scales the gradient by 1/K

    def losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        """Per-sample loss terms [B] summed over the unroll, and the decoded value at k = 0 [B]."""
        model, unroll = self.model, self.algo.unroll_steps
        obs, action = stack_frames(batch["frames"], self.spec.frame_stack), batch["action"]
        current, future = obs[:, 0], obs[:, 1:]  # [B, *obs], [B, K, *obs]
        if self.algo.augmentation and len(self.spec.obs_shape) == 3:
            # Images: one draw for the current stack, one for all of a sample's future stacks
            # (EZ-V2 augments a sample's future frames as one image).
            current, future = augment(current), augment(future.flatten(1, 2)).view(future.shape)
        future = future.flatten(0, 1)  # [B·K, *obs]
        value_ce, reward_ce = model.value_support.cross_entropy, model.reward_support.cross_entropy
        state, value_logits, policy = model.initial_inference(current)
        value0 = model.value_support.to_scalar(value_logits.detach())
        value = value_ce(value_logits, batch["value"][:, 0]) * batch["value_mask"][:, 0]
        policy_loss, entropy = self._policy_terms(policy, batch, 0)
        reward = torch.zeros_like(value)
        consistency = torch.zeros_like(value)
        consistent = self.algo.consistency and self.algo.consistency_coef > 0
        if consistent:
            with torch.no_grad():
                future = model.initial_inference(future)[0]
                targets = model.project(future, with_predictor=False).view(obs.shape[0], unroll, -1)
        heads_scale = self.algo.latent_grad_scale if self.algo.latent_grad_scale_heads else 1.0
        hidden = None  # the value-prefix LSTM state, reset before steps 1, 1 + H, … as the targets are
        for k in range(1, unroll + 1):
            if model.value_prefix and (k - 1) % model.lstm_horizon == 0:
                hidden = None
            state, reward_logits, value_logits, policy, hidden = model.recurrent_inference(
                state, action[:, k - 1], hidden, grad_scale=heads_scale
            )
            if not self.algo.latent_grad_scale_heads:  # MuZero's pseudocode: the later steps' gradient only
                state = scale_gradient(state, self.algo.latent_grad_scale)
            reward = (
                reward + reward_ce(reward_logits, batch["reward"][:, k - 1]) * batch["reward_mask"][:, k - 1]
            )
            value = value + value_ce(value_logits, batch["value"][:, k]) * batch["value_mask"][:, k]
            step_policy, step_entropy = self._policy_terms(policy, batch, k)
            policy_loss, entropy = policy_loss + step_policy, entropy + step_entropy
            if consistent:
                predicted = model.project(state, with_predictor=True)
                cosine = F.cosine_similarity(predicted, targets[:, k - 1], dim=-1)
                consistency = consistency - cosine * batch["consistency_mask"][:, k - 1]
        losses = {"reward": reward, "value": value, "policy": policy_loss}
        if consistent:
            losses["consistency"] = consistency
        if not self.spec.is_discrete:
            losses["entropy"] = -entropy  # minimised: a bonus on the entropy
        return losses, value0

    def _policy_terms(self, policy: Tensor, batch: dict[str, Tensor], k: int) -> tuple[Tensor, Tensor]:
        """Masked policy loss and policy entropy [B] at unroll position k.

        Discrete: cross-entropy against the improved policy. Continuous: the cross-entropy over
        the K sampled candidates, −Σ π′(a_i) log p(a_i), for 1-D actions or with
        `continuous_policy_loss=candidates` (Sampled MuZero); otherwise (EZ-V2) −log p(a*) of
        the search's chosen candidate.
        """
        mask = batch["policy_mask"][:, k]
        if self.spec.is_discrete:
            loss = -(batch["policy"][:, k] * F.log_softmax(policy.float(), -1)).sum(-1)
            return loss * mask, torch.zeros_like(mask)
        if self.spec.action_dim == 1 or self.algo.continuous_policy_loss == "candidates":
            loss = -(batch["policy"][:, k] * squashed.log_prob(policy, batch["candidates"][:, k])).sum(-1)
        else:
            loss = -squashed.log_prob(policy, batch["best_action"][:, k, None])[:, 0]
        if self.algo.entropy_coef == 0:
            return loss * mask, torch.zeros_like(mask)
        return loss * mask, squashed.entropy(policy, self.algo.entropy_samples) * mask

    # ------------------------------------------------------------------ non-finite updates

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop a step whose gradient is NaN/inf (a finite loss can still have one, e.g. at atanh(±1))."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return  # training_step skipped this update (non-finite loss)
        fp16 = self.trainer.precision in ("16-mixed", "16-true")  # its scaler skips these steps itself
        if not fp16 and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            optimizer.zero_grad(set_to_none=True)  # the optimiser leaves gradient-less weights alone
            self._skip_nonfinite("gradient")
            return
        self._nonfinite_in_a_row = 0

    def _skip_nonfinite(self, what: str) -> None:
        """Count a skipped update; stop the run once too many come in a row (the weights are untouched)."""
        self.nonfinite_steps += 1
        self._nonfinite_in_a_row += 1
        log.warning(
            "step %d: non-finite %s, update skipped (%d in a row, %d in all)",
            self.global_step,
            what,
            self._nonfinite_in_a_row,
            self.nonfinite_steps,
        )
        if self._nonfinite_in_a_row > self.max_nonfinite_steps:
            raise NonFiniteLoss(
                f"the {what} was NaN or infinite in {self._nonfinite_in_a_row} updates in a row (to step "
                f"{self.global_step}, max_nonfinite_steps={self.max_nonfinite_steps}); they were skipped, so "
                "the weights are those of the last good update. Try a lower optim.lr (now "
                f"{self.optim_cfg.lr:g}) or a longer optim.warmup_steps; trainer.precision=32-true if it is "
                "bf16-mixed or 16-mixed; a smaller trainer.gradient_clip_val; and check that the env's "
                "rewards and observations are finite"
            )

    # ------------------------------------------------------------------ optimiser

    def on_train_start(self) -> None:
        """The optimiser's settings come from the config, also when resumed: a checkpoint restores
        its moments and step, and with them the rate and decay it ran with, which would
        silently override a changed `optim.lr` (the remedy the non-finite-loss message gives)."""
        cfg, scheduler = self.optim_cfg, self.lr_schedulers()
        groups = self.optimizers().param_groups
        for group in groups:
            group["initial_lr"], group["weight_decay"] = cfg.lr, cfg.weight_decay
            group["lr"] = cfg.lr * lr_factor(scheduler.last_epoch, cfg)
            if "momentum" in group:
                group["momentum"] = cfg.momentum
        scheduler.base_lrs = [cfg.lr] * len(groups)

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optim_cfg
        params = self.model.parameters()
        if cfg.name == "adam":
            optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.name == "sgd":
            optimizer = torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        else:
            raise ValueError(f"optim.name={cfg.name!r} is not known; valid: adam, adamw, sgd")
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A stop inside a callback's on_train_batch_end (an evaluation, a checkpoint) comes
        # before this module's: the step's target refresh happens here then, or the resumed
        # run, which starts after the step, would never make it.
        self._refresh_target(self.global_step)
        checkpoint["target_state"] = copy.deepcopy(self.target_state)
        checkpoint["next_target_state"] = copy.deepcopy(self.next_target_state)
        checkpoint["effzero_config"] = self.run_config
        # eval.py tags its runs with the training run, so compare.py can pair them.
        run_ids = [lg.run_id for lg in self.trainer.loggers if isinstance(lg, MLFlowLogger)]
        checkpoint["mlflow_run_id"] = run_ids[0] if run_ids else None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("effzero_config") or {}
        for group in ("env", "model"):
            if self.run_config is None:
                break
            then, now = saved.get(group, {}), self.run_config[group]
            # A setting newer than the checkpoint compares as None: off, as the code that wrote it ran.
            differ = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
            if differ:
                raise ValueError(
                    f"the checkpoint was trained with other {group} settings ({', '.join(f'{group}.{k}' for k in differ)}"
                    f" differ); resume with the run's own config or start a new run"
                )
        self.target_state = checkpoint["target_state"]
        self.next_target_state = checkpoint["next_target_state"]
        self.target_step = checkpoint["global_step"]
