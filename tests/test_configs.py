"""Every experiment composes into a typed TrainConfig, with every algo preset, and names a real task."""

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from effzero.config import TrainConfig, register_schemas
from effzero.envs.atari import ATARI_100K_GAMES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASES = {"atari", "dmc"}  # shared settings, not experiments of their own
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml") if p.stem not in BASES)
ALGOS = sorted(p.stem for p in (CONFIGS / "algo").glob("*.yaml"))
SAMPLED = {"sampled_muzero", "sampled_efficientzero"}

register_schemas()
os.environ.setdefault("PROJECT_ROOT", str(CONFIGS.parent))


def composed(*overrides: str) -> TrainConfig:
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp", *overrides])
    OmegaConf.resolve(cfg.algo)
    return OmegaConf.to_object(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_names_a_real_task(experiment):
    conf = composed(f"experiment={experiment}")
    assert conf.name == experiment
    if conf.env.kind == "atari":
        assert experiment == f"atari_{conf.env.game}" and conf.env.game in ATARI_100K_GAMES
        assert conf.search.num_simulations == 16  # every game, even with fewer than 4 actions
    if conf.env.kind == "dmc":
        from dm_control import suite

        assert (conf.env.domain, conf.env.task) in suite.ALL_TASKS
        assert conf.search.k_policy + conf.search.k_wide == 16 and conf.search.num_simulations == 32
        assert conf.env.value_bounds == [0.0, 1e5]  # EZ-V2 clips DMC's decoded values


def test_all_26_atari_games_have_an_experiment():
    assert {e.removeprefix("atari_") for e in EXPERIMENTS if e.startswith("atari_")} == set(ATARI_100K_GAMES)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("experiment", ["cartpole", "atari_breakout", "dmc_walker", "dmc_walker_vision"])
def test_every_algo_preset_keeps_its_components_under_every_experiment(experiment, algo):
    """Experiments tune component settings but never undo what an algo preset chose."""
    conf = composed(f"experiment={experiment}", f"algo={algo}")
    expected = composed(f"algo={algo}")  # the preset on the default experiment-less config
    assert conf.algo.name == algo
    for key in ("value_target", "consistency", "off_policy_correction", "continuous_policy_loss"):
        assert getattr(conf.algo, key) == getattr(expected.algo, key), key
    assert conf.search.kind == expected.search.kind
    if algo != "ezv2":  # ezv2 keeps the model's own head: a value prefix on Atari, none on DMC
        assert conf.model.value_prefix == expected.model.value_prefix
    assert conf.search.temperature_decay == (conf.search.kind == "puct")  # the pUCT papers anneal it
    if algo in SAMPLED:
        assert conf.search.k_policy == 20 and conf.search.k_wide == 0 and conf.search.k_interior == 20


def test_off_policy_correction_spans_the_runs_own_budget():
    conf = composed("experiment=cartpole", "algo=efficientzero_v1", "data.total_env_steps=1234")
    assert conf.algo.correction_span == 1234
