"""Human-normalised scores from the packaged CSV."""

import numpy as np
import pytest

from effzero.analysis import atari_scores

OUR_GAMES = [  # env.game of configs/experiment/atari_*.yaml
    "alien", "amidar", "assault", "asterix", "bank_heist", "battle_zone", "boxing", "breakout",
    "chopper_command", "crazy_climber", "demon_attack", "freeway", "frostbite", "gopher", "hero",
    "jamesbond", "kangaroo", "krull", "kung_fu_master", "ms_pacman", "pong", "private_eye", "qbert",
    "road_runner", "seaquest", "up_n_down",
]  # fmt: skip


def test_every_game_of_ours_maps_to_one_csv_row():
    names = {atari_scores.game(g).name for g in OUR_GAMES}
    assert len(names) == 26 == len(atari_scores.table())
    assert atari_scores.game("ms_pacman").name == "MsPacman"
    assert atari_scores.game("up_n_down").name == "UpNDown"
    assert atari_scores.game("kung_fu_master").name == "KungFuMaster"
    assert atari_scores.game("ALE/MsPacman-v5").name == "MsPacman"


def test_hns_is_zero_at_random_and_one_at_human():
    assert atari_scores.hns(1.7, "breakout") == pytest.approx(0.0)
    assert atari_scores.hns(30.5, "breakout") == pytest.approx(1.0)
    assert atari_scores.hns(-3.05, "pong") == pytest.approx(0.5)  # random -20.7, human 14.6


def test_unknown_game_lists_the_games():
    with pytest.raises(ValueError, match=r"not an Atari 100k game.*MsPacman"):
        atari_scores.game("CartPole-v1")
    assert not atari_scores.is_atari_game("CartPole-v1")


def test_efficientzero_v1_column_reproduces_its_paper():
    agg = atari_scores.aggregates(atari_scores.paper_hns("EZ-V1"))
    assert round(agg["mean"], 3) == 1.943
    assert round(agg["median"], 3) == 1.090


def test_efficientzero_v2_column_gives_2680_1235_not_the_papers_2428_1286():
    """The per-game EZ-V2 column is a third party's transcription; its aggregates differ from Table 1."""
    agg = atari_scores.aggregates(atari_scores.paper_hns("EZ-V2"))
    assert (round(agg["mean"], 3), round(agg["median"], 3)) == (2.680, 1.235)
    assert atari_scores.PAPER_AGGREGATES["EZ-V2"] == (2.428, 1.286)


def test_iqm_over_26_games_is_the_mean_of_the_middle_13_with_halves_at_the_ends():
    values = np.sort(list(atari_scores.paper_hns("EZ-V1").values()))
    # 26 games, middle 13 (6.5 cut at each end): half of the 7th, the 8th to 19th, half of the 20th.
    middle = (0.5 * values[6] + values[7:19].sum() + 0.5 * values[19]) / 13
    assert atari_scores.aggregates(atari_scores.paper_hns("EZ-V1"))["iqm"] == pytest.approx(middle)
