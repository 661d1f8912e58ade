"""One rank's pipeline: every shared buffer counted and checked against free memory, and freed."""

from __future__ import annotations

import gc
import math
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from effzero.config import TrainConfig, register_schemas
from effzero.data import pipeline as pipeline_module
from effzero.data.acting import build_model
from effzero.data.datamodule import rank_worker_device
from effzero.data.environments import build_spec
from effzero.data.pipeline import Pipeline, RankInfo, check_memory
from tests.data.replay_checks import replay_problems

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def composed(*overrides: str) -> TrainConfig:
    register_schemas()
    os.environ.setdefault("PROJECT_ROOT", str(CONFIGS.parent))
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train", overrides=["paths.output_dir=/tmp", "experiment=cartpole", "debug=smoke", *overrides]
        )
    return OmegaConf.to_object(cfg)


def shared_bytes(root: object) -> int:
    """Bytes of the distinct shared-memory tensors reachable from `root`'s attributes."""
    seen, total, stack = set(), 0, [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            total += item.untyped_storage().nbytes() if item.is_shared() else 0
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif hasattr(item, "__dict__") and type(item).__module__.startswith("effzero"):
            stack.extend(vars(item).values())
    return total


def test_the_memory_check_counts_every_shared_buffer(monkeypatch):
    conf = composed()
    spec = build_spec(conf.env)
    parts = {}
    monkeypatch.setattr(pipeline_module, "check_memory", lambda p: parts.update(p))
    pipeline = Pipeline(conf, spec, build_model(conf.model, spec))
    assert sum(size for size, _ in parts.values()) == shared_bytes(pipeline)


def test_a_pipeline_that_does_not_fit_is_refused_before_anything_is_allocated(monkeypatch):
    conf = composed("data.capacity=400000000", "data.queue_size=64")
    spec = build_spec(conf.env)
    monkeypatch.setattr(pipeline_module, "available_memory", lambda: 8 * 2**30)
    monkeypatch.setattr(pipeline_module, "Replay", None)  # allocating would fail differently
    with pytest.raises(MemoryError) as refused:
        Pipeline(conf, spec, build_model(conf.model, spec))
    message = str(refused.value)
    assert "needs" in message and "8.00 GiB of RAM is available" in message
    assert "replay:" in message and "(lower data.capacity or data.total_env_steps)" in message
    assert "batch slots:" in message and "(lower data.queue_size or data.batch_size)" in message


def test_check_memory_names_dev_shm_when_it_is_the_limit(monkeypatch):
    monkeypatch.setattr(pipeline_module, "available_memory", lambda: 64 * 2**30)
    monkeypatch.setattr(pipeline_module, "shm_free", lambda: 64 * 2**20)
    with pytest.raises(MemoryError, match=r"/dev/shm has 0.06 GiB free.*--shm-size"):
        check_memory({"replay": (2**30, "data.capacity")})


def shm_mappings() -> int:
    """Shared-memory segments this process maps or holds open."""
    maps = Path("/proc/self/maps").read_text().count("/dev/shm/")
    fds = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            fds += os.readlink(fd).startswith("/dev/shm/")
        except OSError:
            continue
    return maps + fds


def test_a_bare_cuda_worker_device_is_each_ranks_own_gpu():
    assert rank_worker_device("cuda", torch.device("cuda:3")) == "cuda:3"  # rank of local rank 3
    assert rank_worker_device("cuda:1", torch.device("cuda:3")) == "cuda:1"  # named: kept
    assert rank_worker_device("cuda", torch.device("cpu")) == "cuda"  # a CPU learner has no GPU to give
    assert rank_worker_device("cpu", torch.device("cuda:3")) == "cpu"


def test_each_rank_counts_its_own_env_steps_so_the_spans_in_env_steps_divide_by_the_ranks():
    conf = composed("algo.mixed_t2=5001", "algo.correction_span=3000")
    spec = build_spec(conf.env)
    model = build_model(conf.model, spec)
    one, two = Pipeline(conf, spec, model), Pipeline(conf, spec, model, RankInfo(1, 2))
    try:
        assert (one.algo.mixed_t2, one.algo.correction_span) == (5001, 3000)
        assert (two.algo.mixed_t2, two.algo.correction_span) == (2501, 1500)
        assert two.counters.total == math.ceil(conf.data.total_env_steps / 2)
    finally:
        one.stop()
        two.stop()


def test_a_pipeline_survives_a_killed_worker_and_frees_its_memory_when_stopped():
    conf = composed("data.total_env_steps=100000", "data.worker_timeout_s=30")
    spec = build_spec(conf.env)
    before = shm_mappings()
    model = build_model(conf.model, spec)
    pipeline = Pipeline(conf, spec, model)
    pipeline.weights.publish(model.state_dict())
    pipeline.target_weights.publish(model.state_dict())
    pipeline.counters.set_updates(10**6)  # let self-play run to its budget
    pipeline.start()
    try:
        assert pipeline.next_batch()["frames"].shape[0] == pipeline.batch_size
        selfplay = pipeline.supervisor.workers[0].process
        os.kill(selfplay.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while pipeline.restarts == 0 and time.monotonic() < deadline:
            pipeline.next_batch()
        assert pipeline.restarts == 1
        state = pipeline.state_dict()  # self-play paused between steps
        assert replay_problems(state["replay"], conf.algo.unroll_steps + conf.algo.td_steps) == []
        assert int(state["counters"][0]) == int(state["replay"]["transitions"].sum())
    finally:
        pipeline.stop()
    del pipeline
    gc.collect()
    assert shm_mappings() <= before


@pytest.mark.slow  # both workers compile their search from scratch: 1–2 minutes on 2 cores
def test_workers_compiling_their_search_are_neither_hung_nor_late(tmp_path, monkeypatch):
    # An empty inductor cache: compiling takes far longer than both timeouts below.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    conf = composed("search.compile=true", "data.worker_timeout_s=10", "data.batch_timeout_s=10")
    spec = build_spec(conf.env)
    model = build_model(conf.model, spec)
    pipeline = Pipeline(conf, spec, model)
    pipeline.weights.publish(model.state_dict())
    pipeline.target_weights.publish(model.state_dict())
    pipeline.counters.set_updates(10**6)
    pipeline.start()
    try:
        began = time.monotonic()
        assert pipeline.next_batch()["frames"].shape[0] == pipeline.batch_size
        assert time.monotonic() - began > 10  # it did outlast the timeouts
        # The first batch may come while another worker still compiles: keep the learner
        # drawing until all are done, and none may be restarted nor a batch time out meanwhile.
        deadline = time.monotonic() + 600
        while pipeline.supervisor.status.any_compiling() and time.monotonic() < deadline:
            pipeline.next_batch()
        assert not pipeline.supervisor.status.any_compiling()
        assert pipeline.restarts == 0
    finally:
        pipeline.stop()
