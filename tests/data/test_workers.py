"""Worker faults at the unit level: replay repair, batch slots, the pause, the supervisor, memory.

Real processes where the behaviour is about processes (spawned, killed with SIGKILL); small
stand-in targets instead of the real workers wherever the model is beside the point.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from effzero.config import TrainConfig, register_schemas
from effzero.data import pipeline as pipeline_module
from effzero.data.acting import build_model
from effzero.data.environments import build_spec
from effzero.data.pipeline import Pipeline, check_memory
from effzero.data.replay import FINAL, TERMINATED, TRANSITION, TRUNCATED, Replay, ReplayLayout
from effzero.data.shared import BatchSlots, Counters, EpisodeLog
from effzero.data.supervisor import Supervisor, Worker
from effzero.data.workers import PREFIX, Heartbeat, WorkerDied, remove_leftovers

WINDOW = 3
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SPAWN = mp.get_context("spawn")


# ---------------------------------------------------------------------- replay invariants


def replay_problems(state: dict[str, torch.Tensor], window: int) -> list[str]:
    """What is wrong with a replay (a `Replay.state_dict()`) that no writer is writing.

    Every lane must be a run of episodes — transitions, an end (terminated or cut), its final
    observation — and at most one unfinished episode at its head; every slot must know its
    episode's start; `transitions` must count the action-carrying slots; a slot is sampleable
    exactly when it is a transition whose window is written or whose episode has ended. Lanes
    the ring has wrapped are not checked.
    """
    problems = []
    length = state["kind"].shape[1]
    for lane, written in enumerate(state["written"].tolist()):
        if written > length:
            continue
        kind = state["kind"][lane, :written].tolist()
        start, sampleable = state["start"][lane].tolist(), state["sampleable"][lane].tolist()
        stored = sum(k != FINAL for k in kind)
        if stored != int(state["transitions"][lane]):
            problems.append(
                f"lane {lane}: {stored} transitions stored, counted {int(state['transitions'][lane])}"
            )
        closed, ending = [False] * written, False  # closed[p]: slot p's episode has ended
        for p in reversed(range(written)):
            ending = (ending and kind[p] != FINAL) or kind[p] in (TERMINATED, TRUNCATED)
            closed[p] = ending
        first, ended = 0, False
        for p, k in enumerate(kind):
            if start[p] != first:
                problems.append(f"lane {lane} slot {p}: episode start {start[p]}, expected {first}")
            if k == FINAL:
                if not ended:
                    problems.append(f"lane {lane} slot {p}: a final observation after no episode end")
                first, ended, expected = p + 1, False, False
            elif ended:
                problems.append(
                    f"lane {lane} slot {p}: a step between an episode's end and its final observation"
                )
                expected = False
            else:
                ended = k in (TERMINATED, TRUNCATED)
                expected = p + window < written or closed[p]
            if sampleable[p] != expected:
                problems.append(
                    f"lane {lane} slot {p} (kind {k}): sampleable {sampleable[p]}, expected {expected}"
                )
        if ended:
            problems.append(f"lane {lane}: its last episode ended without a final observation")
        if int(state["episode_start"][lane]) != first:
            problems.append(
                f"lane {lane}: episode_start {int(state['episode_start'][lane])}, expected {first}"
            )
        if any(sampleable[written:]):
            problems.append(f"lane {lane}: an unwritten slot is sampleable")
    if bool(state.get("pending", torch.zeros(1)).any()):
        problems.append("a step is pending")
    return problems


def make(lanes: int = 2, length: int = 16) -> Replay:
    return Replay(ReplayLayout(lanes, length, (2,), torch.float32, (), torch.long, 3, WINDOW))


def step(replay: Replay, lane: int, i: int, end: int = TRANSITION, commit: bool = True) -> None:
    """One self-play step on `lane`, as the worker takes it."""
    lanes = torch.tensor([lane])
    replay.begin(lanes)
    replay.append(
        lanes,
        torch.full((1, 2), float(i)),
        torch.tensor([i % 3]),
        torch.tensor([1.0]),
        torch.tensor([end], dtype=torch.uint8),
        torch.zeros(1),
        torch.zeros(1, 3),
        torch.tensor([i]),
    )
    if end != TRANSITION:
        replay.end_episodes(lanes, torch.full((1, 2), -1.0), torch.tensor([i]))
    if commit:
        replay.commit(lanes)


def full_state(replay: Replay) -> dict[str, torch.Tensor]:
    return {**replay.state_dict(), "pending": replay.pending.clone()}


def test_recovery_closes_an_unfinished_episode_as_a_time_limit_cut():
    replay = make()
    for i in range(6):
        step(replay, 0, i)
    assert replay.recover([0, 1]) == 1  # lane 1 is empty: nothing to do
    assert replay.kind[0, 4].item() == TRUNCATED and replay.kind[0, 5].item() == FINAL
    assert replay.obs[0, 5].tolist() == [5.0, 5.0]  # the observation step 4 reached
    assert replay.sampleable[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    assert replay.transitions.tolist() == [5, 0] and replay.episode_start[0].item() == 6
    step(replay, 0, 6)  # the restarted worker's first episode starts clean
    assert replay.start[0, 6].item() == 6
    assert replay_problems(full_state(replay), WINDOW) == []


def test_recovery_undoes_a_step_that_was_not_committed():
    replay = make()
    for i in range(5):
        step(replay, 0, i)
    step(replay, 0, 5, end=TERMINATED, commit=False)  # killed before its commit
    assert replay.written[0].item() == 7 and replay.sampleable[0, 5]
    assert replay.recover([0]) == 1
    # Back to five steps, then cut: step 4's slot holds the final observation of step 3.
    assert replay.written[0].item() == 5 and replay.transitions[0].item() == 4
    assert replay.kind[0, 3].item() == TRUNCATED and replay.kind[0, 4].item() == FINAL
    assert replay.sampleable[0].nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert replay_problems(full_state(replay), WINDOW) == []


def test_recovery_drops_an_episode_of_one_step_and_leaves_ended_episodes_alone():
    replay = make()
    for i in range(4):
        step(replay, 0, i, end=TERMINATED if i == 3 else TRANSITION)
    step(replay, 0, 4)  # the next episode's first step
    step(replay, 1, 0, end=TRUNCATED)
    before = full_state(replay)
    assert replay.recover([0, 1]) == 1
    assert replay.written.tolist() == [5, 2] and replay.transitions.tolist() == [4, 1]
    for name in ("kind", "sampleable", "obs"):
        assert torch.equal(replay.state_dict()[name][:, :5], before[name][:, :5]), name
    assert replay_problems(full_state(replay), WINDOW) == []


def _write_forever(replay: Replay, lanes: list[int], seed: int, ready) -> None:
    """A self-play stand-in: steps with random episode ends, as fast as it can."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor(lanes)
    i = 0
    ready.set()
    while True:
        ends = torch.rand(len(lanes), generator=generator) < 0.2
        kind = torch.where(ends, TERMINATED, TRANSITION).to(torch.uint8)
        replay.begin(ids)
        replay.append(ids, torch.full((len(lanes), 2), float(i)), ids % 3, torch.ones(len(lanes)), kind,
                      torch.zeros(len(lanes)), torch.zeros(len(lanes), 3), torch.full((len(lanes),), i))  # fmt: skip
        if ends.any():
            replay.end_episodes(
                ids[ends], torch.full((int(ends.sum()), 2), -1.0), torch.full((int(ends.sum()),), i)
            )
        replay.commit(ids)
        i += 1


def test_a_writer_killed_at_random_instants_leaves_lanes_that_recovery_makes_whole():
    replay = make(lanes=3, length=200_000)
    generator = torch.Generator().manual_seed(1)
    for incarnation in range(5):
        ready = SPAWN.Event()
        writer = SPAWN.Process(
            target=_write_forever, args=(replay, [0, 1, 2], incarnation, ready), daemon=True
        )
        writer.start()
        assert ready.wait(60)
        time.sleep(0.05 + 0.2 * float(torch.rand(1, generator=generator)))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(10)
        replay.recover([0, 1, 2])
        assert replay_problems(full_state(replay), WINDOW) == [], f"after kill {incarnation}"
    assert int(replay.transitions.sum()) > 100  # the writers did write


# ---------------------------------------------------------------------- shared state


def test_batch_slots_hand_whole_batches_to_the_learner_oldest_first():
    layout = {"x": ((2, 3), torch.float32), "step": ((), torch.int64)}
    slots = BatchSlots(layout, slots=4, workers=2)
    assert BatchSlots.nbytes_for(layout, 4) == 4 * (2 * 3 * 4 + 8 + 16)
    assert slots.take() is None
    first = slots.free_slot(1)
    assert first == 1  # worker 1 owns slots 1 and 3
    slots.put(first, {"x": torch.ones(2, 3), "step": torch.tensor(7)})
    slots.put(slots.free_slot(0), {"x": torch.zeros(2, 3), "step": torch.tensor(8)})
    assert slots.free_slot(1) == 3 and slots.qsize() == 2
    # A worker killed while filling its slot: the data is there, the slot was never handed over.
    slots.tensors["x"][3].fill_(5.0)
    batch = slots.take()
    assert batch["step"].item() == 7 and torch.equal(batch["x"], torch.ones(2, 3))
    assert slots.take()["step"].item() == 8
    assert slots.take() is None and slots.free_slot(1) == 1
    with pytest.raises(ValueError, match="'x'"):
        slots.put(1, {"x": torch.ones(3, 2), "step": torch.tensor(0)})


def test_episode_log_keeps_whole_rows_and_the_newest_when_the_learner_falls_behind():
    log = EpisodeLog(2)
    log.add(1, 10.0, 10, 40)
    assert log.drain() == [("episode", 10.0, 10, 40)] and log.drain() == []
    for i in range(EpisodeLog.CAPACITY + 5):
        log.add(0, float(i), i, i)
    rows = log.drain()
    assert len(rows) == EpisodeLog.CAPACITY and rows[0][1] == 5.0 and rows[-1][1] == EpisodeLog.CAPACITY + 4


def _collect(counters: Counters, steps: torch.Tensor, beats: torch.Tensor) -> None:
    while counters.wait_to_step(0, Heartbeat(beats, 0)):
        steps += 1
        time.sleep(0.002)  # a step
        counters.add_env_steps(1)


def test_pause_holds_self_play_between_steps_and_it_keeps_beating():
    counters = Counters(start_transitions=0, replay_ratio=0.0, total_env_steps=10**9)
    steps, beats = torch.zeros(1, dtype=torch.int64).share_memory_(), torch.zeros(1).double().share_memory_()
    collector = SPAWN.Process(target=_collect, args=(counters, steps, beats), daemon=True)
    collector.start()
    try:
        deadline = time.monotonic() + 60
        while int(steps) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        epoch = counters.pause()
        while not counters.parked_at(0, epoch):
            time.sleep(0.001)
        held, beat = int(steps), float(beats)
        time.sleep(0.3)
        assert int(steps) == held and counters.env_steps == held  # no step while paused
        assert float(beats) > beat  # waiting is not hanging
        counters.resume()
        time.sleep(0.3)
        assert int(steps) > held
    finally:
        counters.stop()
        collector.join(10)


# ---------------------------------------------------------------------- supervision


def _runs(job: tuple) -> None:
    """Beats until asked to stop."""
    _, stop, beat = job
    while not stop[0]:
        beat()
        time.sleep(0.01)


def _flaky(job: tuple) -> None:
    """Fails in its first incarnation; later ones run until asked to stop."""
    if job[0] == 0:
        raise RuntimeError("injected: first incarnation fails")
    _runs(job)


def _hangs(job: tuple) -> None:
    """Hangs (asleep, silent) in its first incarnation; later ones run until asked to stop."""
    if job[0] == 0:
        time.sleep(3600)
    _runs(job)


def _always_fails(job: tuple) -> None:
    raise ValueError("injected: always fails")


def _finishes(job: tuple) -> None:
    return None


def supervise(
    *targets, max_restarts: int = 2, timeout_s: float = 2.0
) -> tuple[Supervisor, torch.Tensor, list]:
    stop = torch.zeros(1, dtype=torch.bool).share_memory_()
    repairs: list[int] = []
    workers = [
        Worker(
            f"w{i}",
            target,
            lambda incarnation, beat: (incarnation, stop, beat),
            lambda i=i: repairs.append(i) or f"repaired {i}",
        )
        for i, target in enumerate(targets)
    ]
    supervisor = Supervisor(
        workers, max_restarts, timeout_s, threads=1, request_stop=lambda: stop.fill_(True)
    )
    return supervisor, stop, repairs


def check_until(supervisor: Supervisor, condition, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor.check()
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_crashed_worker_is_repaired_and_restarted_with_its_cause_logged(caplog):
    supervisor, _, repairs = supervise(_flaky, _finishes)
    supervisor.start()
    try:
        assert check_until(
            supervisor, lambda: supervisor.restarts == 1 and supervisor.status.last_beat(0) > 0
        )
        assert repairs == [0] and supervisor.workers[0].incarnation == 1
        assert supervisor.finished(1)  # a worker that ends by itself is not restarted
        warning = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        assert "worker 'w0' died; restarting it (restart 1 of" in warning
        assert "repaired 0" in warning and "injected: first incarnation fails" in warning
        time.sleep(0.5)
        supervisor.check()
        assert supervisor.restarts == 1
    finally:
        supervisor.stop()
    assert supervisor.directory is None


def test_failures_past_the_restart_budget_stop_every_worker_with_the_traceback():
    supervisor, stop, _ = supervise(_always_fails, _runs, max_restarts=1)
    supervisor.start()
    other = supervisor.workers[1].process
    with pytest.raises(WorkerDied) as raised:
        check_until(supervisor, lambda: False)
    message = str(raised.value)
    assert "worker 'w0' died; the run stops (1 restart(s) used, data.max_worker_restarts=1)" in message
    assert "ValueError: injected: always fails" in message
    assert bool(stop[0]) and not other.is_alive()
    assert supervisor.directory is None


def test_a_hung_worker_is_killed_within_its_timeout_with_its_stacks_and_restarted(caplog):
    supervisor, _, repairs = supervise(_hangs, timeout_s=2.0)
    supervisor.start()
    try:
        assert check_until(supervisor, lambda: supervisor.status.last_beat(0) > 0, timeout=60)
        began = time.monotonic()
        assert check_until(supervisor, lambda: supervisor.restarts == 1, timeout=30)
        assert time.monotonic() - began < 2.0 + supervisor.STACK_WAIT_S + 2.0
        assert repairs == [0]
        warning = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        assert "worker 'w0' hung; restarting it" in warning and "data.worker_timeout_s=2" in warning
        assert "in _hangs" in warning  # faulthandler's stack of the stuck thread
        assert check_until(supervisor, lambda: supervisor.status.last_beat(0) > 0, timeout=60)
    finally:
        supervisor.stop()


def test_leftovers_of_dead_runs_are_removed_and_live_runs_kept(tmp_path):
    dead = SPAWN.Process(target=_finishes, args=(None,))
    dead.start()
    dead.join()
    (tmp_path / f"{PREFIX}{dead.pid}-abc").mkdir()
    (tmp_path / f"{PREFIX}{dead.pid}-abc" / "w.0.stacks").write_text("")
    (tmp_path / f"{PREFIX}{os.getpid()}-def").mkdir()
    (tmp_path / "sem.mp-other").write_text("")  # not ours: never touched
    assert remove_leftovers(str(tmp_path)) == [f"{PREFIX}{dead.pid}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{PREFIX}{os.getpid()}-def", "sem.mp-other"]


# ---------------------------------------------------------------------- the pipeline's memory


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
