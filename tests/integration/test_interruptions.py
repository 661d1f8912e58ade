"""Stopping a run: SIGINT and SIGTERM end it cleanly with a checkpoint (exit 0); SIGKILL tears none.

The first tests drive the real callback and checkpoint IO through a real Lightning Trainer in
this process, with signals sent at chosen moments; the others run `src/train.py` as a user would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader

from effzero import checkpointing
from effzero.callbacks import InterruptCheckpoint, Interrupted
from effzero.data.pipeline import BatchStream
from tests.integration.helpers import (
    ROOT,
    SMOKE,
    checkpoints,
    children,
    environment,
    mlflow_runs,
    run,
    start,
    wait_for,
)

ENDLESS = ("data.total_env_steps=100000", "trainer.max_steps=100000", "trainer.limit_train_batches=10")


def interrupt_self(times: int = 1) -> None:
    for _ in range(times):
        os.kill(os.getpid(), signal.SIGINT)


class FakePipeline:
    """What BatchStream asks of the data pipeline; `on_fetch(n)` runs as the n-th batch is fetched."""

    def __init__(self, on_fetch: Callable[[int], None]):
        self.started, self.fetched, self.on_fetch = False, 0, on_fetch

    def start(self) -> None:
        self.started = True

    def wait_for_update(self) -> None:
        pass

    def next_batch(self) -> torch.Tensor:
        self.fetched += 1
        self.on_fetch(self.fetched)
        return torch.randn(8, 3)


class Learner(L.LightningModule):
    """One linear layer; `on_step(step)` runs in the middle of every training step."""

    def __init__(self, on_step: Callable[[int], None]):
        super().__init__()
        self.layer, self.on_step, self.steps_run = nn.Linear(3, 1), on_step, 0

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch).pow(2).mean()
        self.log("loss", loss)
        self.on_step(self.global_step)
        self.steps_run += 1
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.1)


class StepsLogged(Logger):
    """Records the step of every metric the learner logs."""

    name, version = "steps", 0

    def __init__(self):
        super().__init__()
        self.steps: list[int] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if "loss" in metrics:
            self.steps.append(step)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def trainer_for(interrupt: InterruptCheckpoint, max_steps: int, logger: Logger | bool = False) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        callbacks=[interrupt],
        plugins=[checkpointing.AtomicCheckpointIO()],
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )


def batch_stream(on_fetch: Callable[[int], None] = lambda n: None) -> DataLoader:
    return DataLoader(BatchStream(FakePipeline(on_fetch), lambda: None), batch_size=None)


def fit_until_interrupted(
    tmp_path: Path,
    on_step: Callable[[int], None] = lambda step: None,
    on_fetch=lambda n: None,
    logger: Logger | bool = False,
) -> tuple[InterruptCheckpoint, Learner, Interrupted]:
    interrupt, learner = InterruptCheckpoint(str(tmp_path)), Learner(on_step)
    trainer = trainer_for(interrupt, max_steps=100, logger=logger)
    with pytest.raises(Interrupted) as stopped, interrupt.handling_signals():
        trainer.fit(learner, train_dataloaders=batch_stream(on_fetch))
    return interrupt, learner, stopped.value


# pytest-timeout's default method uses SIGALRM, which the interrupt handling borrows.
in_process = pytest.mark.timeout(120, method="thread")


@in_process
def test_a_signal_during_an_update_stops_right_after_it(tmp_path):
    interrupt, learner, stopped = fit_until_interrupted(
        tmp_path, on_step=lambda step: interrupt_self() if step == 5 else None
    )
    assert stopped.clean and interrupt.signal == signal.SIGINT
    assert learner.steps_run == 6  # the update under way finished; no other began
    saved = checkpointing.load(interrupt.saved)
    assert saved["global_step"] == 6
    assert torch.equal(saved["state_dict"]["layer.weight"], learner.layer.weight.detach())
    assert saved["optimizer_states"][0]["state"][0]["step"] == 6  # the optimiser state matches


@in_process
def test_metrics_after_a_resume_continue_at_the_step_the_stop_left(tmp_path):
    # The stop comes at the next batch's start, which Lightning already counts as fetched;
    # resumed, its logger step must still equal the number of updates made, as in a run never stopped.
    before = StepsLogged()
    interrupt, _, _ = fit_until_interrupted(
        tmp_path, on_step=lambda step: interrupt_self() if step == 5 else None, logger=before
    )
    after, resumed = StepsLogged(), InterruptCheckpoint(str(tmp_path))
    trainer = trainer_for(resumed, max_steps=10, logger=after)
    with resumed.handling_signals():
        trainer.fit(Learner(lambda step: None), train_dataloaders=batch_stream(), ckpt_path=interrupt.saved)
    assert trainer.global_step == 10
    assert before.steps + after.steps == list(range(10))


@in_process
def test_a_signal_while_waiting_for_data_stops_at_once(tmp_path):
    interrupt, learner, stopped = fit_until_interrupted(
        tmp_path, on_fetch=lambda n: (interrupt_self(), time.sleep(30)) if n == 8 else None
    )
    assert stopped.clean
    saved = checkpointing.load(interrupt.saved)
    assert saved["global_step"] == learner.steps_run > 0  # no update after the signal
    assert torch.equal(saved["state_dict"]["layer.weight"], learner.layer.weight.detach())


@in_process
def test_a_second_signal_stops_at_once_without_a_checkpoint(tmp_path):
    interrupt, _, stopped = fit_until_interrupted(
        tmp_path, on_step=lambda step: interrupt_self(times=2) if step == 5 else None
    )
    assert not stopped.clean and interrupt.saved is None
    assert not list(tmp_path.iterdir())  # not even a partial file


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_run_with_exit_0_and_a_checkpoint_that_resumes(tmp_path, signum):
    process = start("train", tmp_path, *SMOKE, *ENDLESS)
    try:
        assert wait_for(lambda: any(p.name == "last.ckpt" for p in checkpoints(tmp_path)), 180)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    saved = next(p for p in checkpoints(tmp_path) if p.name == "interrupted.ckpt")
    step = torch.load(saved, weights_only=False)["global_step"]
    assert step >= 10
    assert f"resume with ckpt_path={saved}" in stderr
    _, runs = mlflow_runs(tmp_path)
    assert runs[-1].info.status == "KILLED"

    resumed = run(
        "train", tmp_path, *SMOKE, ENDLESS[0], f"trainer.max_steps={step + 5}", f"ckpt_path={saved}"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    newest = max(checkpoints(tmp_path), key=lambda p: p.stat().st_mtime)
    assert torch.load(newest, weights_only=False)["global_step"] == step + 5


DDP = ("trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu")


def workers_of(pid: int) -> list[int]:
    return [c for c in children(pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.parametrize("when", ["Ctrl-C while the replay warms up", "SIGTERM to rank 1 alone, training"])
def test_a_signal_stops_every_ddp_rank_at_one_step_with_a_checkpoint(tmp_path, when):
    # Ctrl-C reaches every process; a scheduler or a user may signal one rank. The ranks agree
    # on a step, so the checkpoint, which gathers every rank's replay shard, can be written.
    warmup = when.startswith("Ctrl-C")
    # 10000 transitions before the first update: many seconds of warm-up, the workers running.
    slow_start = ("data.start_transitions=10000",) if warmup else ()
    process = start("train", tmp_path, *SMOKE, *ENDLESS, *DDP, *slow_start, own_group=True)
    try:
        if warmup:  # the workers start with the first batch's wait, after Lightning's set-up
            assert wait_for(lambda: len(workers_of(process.pid)) >= 2, 240)
            time.sleep(3.0)
            os.killpg(process.pid, signal.SIGINT)
        else:
            assert wait_for(lambda: any(p.name == "last.ckpt" for p in checkpoints(tmp_path)), 240)
            rank1 = next(
                c for c in children(process.pid) if b"train.py" in Path(f"/proc/{c}/cmdline").read_bytes()
            )
            os.kill(rank1, signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, stderr[-3000:]
    saved = next(p for p in checkpoints(tmp_path) if p.name == "interrupted.ckpt")
    state = torch.load(saved, weights_only=False)
    shards = state["ReplayDataModule"]["shards"]
    assert len(shards) == 2 and all(int(s["counters"][0]) > 0 for s in shards)  # the transitions kept
    log = "".join(p.read_text() for p in tmp_path.glob("debug/runs/*/*.log"))  # every rank's
    assert "every rank stops before the next update" in log
    if warmup:
        assert state["global_step"] == 0
        return
    step = state["global_step"]
    resumed = run(
        "train",
        tmp_path,
        *SMOKE,
        *DDP,
        ENDLESS[0],
        f"trainer.max_steps={step + 5}",
        f"ckpt_path={saved}",
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    newest = max(checkpoints(tmp_path), key=lambda p: p.stat().st_mtime)
    assert torch.load(newest, weights_only=False)["global_step"] == step + 5


def test_a_signal_during_an_evaluation_keeps_the_target_refresh_of_its_step(tmp_path):
    # The evaluation at step 20 runs in a callback's on_train_batch_end, before the agent's,
    # which refreshes the target network at that step: the stop must not lose the refresh.
    refresh = ("eval.every=20", "data.target_refresh=20", "data.selfplay_refresh=20", "trainer.max_steps=100")
    driver = ROOT / "tests" / "integration" / "signal_in_evaluation.py"
    result = subprocess.run(
        [sys.executable, str(driver), f"paths.log_dir={tmp_path}", *SMOKE, *refresh, "logger=none"],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = torch.load(
        next(p for p in checkpoints(tmp_path) if p.name == "interrupted.ckpt"), weights_only=False
    )
    assert saved["global_step"] == 20
    weights = {k.removeprefix("model."): v for k, v in saved["state_dict"].items() if k.startswith("model.")}
    # Refreshed: the next target is the snapshot of step 20, the target the one of step 0.
    assert all(torch.equal(saved["next_target_state"][k], v) for k, v in weights.items())
    assert not all(torch.equal(saved["target_state"][k], v) for k, v in weights.items())


def test_sigkill_while_last_ckpt_is_rewritten_leaves_the_previous_one_whole(tmp_path):
    # A replay of 2M slots makes each checkpoint ~125 MB, so its write lasts long enough to be caught.
    process = start("train", tmp_path, *SMOKE, *ENDLESS, "data.capacity=2000000", output=False)
    runs = tmp_path / "debug" / "runs"
    try:
        assert wait_for(lambda: list(runs.glob("*/checkpoints/last.ckpt")), 240)
        assert wait_for(lambda: list(runs.glob("*/checkpoints/.last.ckpt.*.tmp")), 240, poll=0.005)
        process.kill()
        process.wait(30)
    finally:
        process.kill()
    assert list(runs.glob("*/checkpoints/.last.ckpt.*.tmp")), "the kill missed the write"
    last = next(runs.glob("*/checkpoints/last.ckpt"))
    checkpointing.verify(last)  # complete, and every record matches its checksum
    assert torch.load(last, weights_only=False)["global_step"] % 10 == 0
