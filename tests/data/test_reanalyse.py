"""make_batch on a hand-written replay: windows, masks and TD targets recomputed independently."""

import pytest
import torch

from effzero.config import AlgoConfig, SearchConfig, ValueTarget
from effzero.data.acting import build_model
from effzero.data.reanalyse import make_batch
from effzero.data.replay import TERMINATED, TRANSITION, Replay, ReplayLayout
from effzero.envs import EnvSpec
from tests.small import small_model

SPEC = EnvSpec("toy", (3,), "float32", "discrete", 2, 0, (), (), 0.9, None)
ALGO = AlgoConfig(unroll_steps=2, td_steps=2, value_target=ValueTarget.td)
SMALL = small_model(value=(-50, 50, 21), reward=(-2, 2, 11))


def filled_replay() -> Replay:
    """One lane: an episode of 6 steps that terminates, then 6 steps of an unfinished one."""
    replay = Replay(ReplayLayout(1, 64, (3,), torch.float32, (), torch.long, 2, 4))
    lane = torch.tensor([0])
    for t in range(12):
        kind = TERMINATED if t == 5 else TRANSITION
        replay.append(
            lane,
            torch.full((1, 3), float(t)),
            torch.tensor([t % 2]),
            torch.tensor([0.5 + t]),
            torch.tensor([kind], dtype=torch.uint8),
            torch.zeros(1),
            torch.zeros(1, 2),
            torch.tensor([t]),
        )
        if t == 5:
            replay.end_episodes(lane, torch.full((1, 3), 100.0), torch.tensor([t]))
    return replay


def test_batch_windows_masks_and_td_targets():
    torch.manual_seed(0)
    replay = filled_replay()
    # Slots 0-5 (episode 1) and 7, 8 (episode 2 at slots 7-12, whose windows are written).
    assert replay.sampleable[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5, 7, 8]
    model = build_model(SMALL, SPEC).eval()
    search = SearchConfig(num_simulations=4, max_considered=2)
    batch = make_batch(replay, model, SPEC, search, ALGO, 8, 1.0, 1.0, learner_step=0, env_steps=12)
    assert batch["frames"].shape == (8, 3, 3) and batch["policy"].shape == (8, 3, 2)
    torch.testing.assert_close(batch["policy"].sum(-1), torch.ones(8, 3))

    def value(obs_row: torch.Tensor) -> float:
        with torch.no_grad():
            _, logits, _ = model.initial_inference(obs_row[None])
        return model.value_support.to_scalar(logits).item()

    rows = {slot: b for b, slot in enumerate(batch["slot"].tolist())}
    assert sorted(rows) == [0, 1, 2, 3, 4, 5, 7, 8]
    for slot, b in rows.items():
        assert batch["frames"][b, 0, 0].item() == (slot if slot < 6 else slot - 1)  # slot 6 is the final obs
    # Inside the episode: z_0 = r_0 + γ r_1 + γ² V(o_2).
    b = rows[0]
    assert batch["value"][b, 0].item() == pytest.approx(
        0.5 + 0.9 * 1.5 + 0.81 * value(replay.obs[0, 2]), abs=1e-4
    )
    assert batch["action"][b].tolist() == [0, 1]
    # Terminal at slot 5: no bootstrap, then an absorbing state with value and reward 0.
    b = rows[4]
    assert batch["value"][b].tolist() == pytest.approx([4.5 + 0.9 * 5.5, 5.5, 0.0], abs=1e-5)
    assert batch["value_mask"][b].tolist() == [1, 1, 1]
    assert batch["policy_mask"][b].tolist() == [1, 1, 0]
    assert batch["reward"][b].tolist() == [4.5, 5.5] and batch["reward_mask"][b].tolist() == [1, 1]
    b = rows[5]
    assert batch["reward"][b].tolist() == [5.5, 0.0] and batch["reward_mask"][b].tolist() == [1, 1]
    assert batch["consistency_mask"][b].tolist() == [
        1,
        0,
    ]  # step 1 sees the final obs, step 2 the next episode
    # The search-based value is the root value of a fresh search: finite where the mask is on.
    assert torch.isfinite(batch["value"]).all()


def test_off_policy_correction_bootstraps_old_data_sooner_from_a_search_value():
    """EZ-V1: with age 12 and ratio·span = 10 the horizon is 2 − 1 = 1, and the bootstrap
    V(o_{k+1}) is the root value of a noise-free search from o_{k+1}, not the raw value."""
    import dataclasses

    from effzero.data.acting import search_roots

    torch.manual_seed(0)
    replay = filled_replay()
    model = build_model(SMALL, SPEC).eval()
    for p in model.parameters():  # zero-initialised heads would make search values equal raw ones
        torch.nn.init.normal_(p, std=0.3)
    search = SearchConfig(num_simulations=2, max_considered=2, noise_in_reanalyse=False)
    algo = dataclasses.replace(ALGO, off_policy_correction=True, correction_ratio=0.5, correction_span=20)
    batch = make_batch(replay, model, SPEC, search, algo, 8, 1.0, 1.0, learner_step=0, env_steps=12)
    rows = {slot: b for b, slot in enumerate(batch["slot"].tolist())}

    def search_value(obs_row: torch.Tensor) -> float:
        with torch.no_grad():
            state, logits, policy = model.initial_inference(obs_row[None])
            value = model.value_support.to_scalar(logits)
            return search_roots(model, state, value, policy, SPEC, search, explore=False).root_value.item()

    # Slot 0 was collected at env step 0: age 12 → horizon 2 − ⌊12 / 10⌋ = 1.
    b = rows[0]
    expected = [0.5 + 0.9 * search_value(replay.obs[0, 1]), 1.5 + 0.9 * search_value(replay.obs[0, 2])]
    assert batch["value"][b, :2].tolist() == pytest.approx(expected, abs=1e-4)
    # Slot 8 (collected at step 7, age 5): full horizon 2, bootstrapping from a search at o_{k+2}.
    b = rows[8]
    expected = 7.5 + 0.9 * 8.5 + 0.81 * search_value(replay.obs[0, 10])
    assert batch["value"][b, 0].item() == pytest.approx(expected, abs=1e-4)
    assert batch["policy"].shape == (8, 3, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_on_the_gpu_gives_the_cpu_batch():
    """Reanalysis with data.worker_device=cuda: the CPU replay's windows go to the model's device
    and the batch comes back on the CPU, equal to the CPU model's (noise-free search)."""
    replay = filled_replay()
    model = build_model(SMALL, SPEC).eval()
    search = SearchConfig(num_simulations=4, max_considered=2, noise_in_reanalyse=False)
    batches = []
    for device in ("cpu", "cuda"):
        generator = torch.Generator().manual_seed(3)
        batches.append(
            make_batch(replay, model.to(device), SPEC, search, ALGO, 8, 1.0, 1.0, 0, 12, generator)
        )
    cpu, gpu = batches
    assert all(v.device.type == "cpu" for v in gpu.values())
    for key in cpu:
        torch.testing.assert_close(gpu[key], cpu[key], atol=1e-4, rtol=1e-4, msg=key)
