"""Atari 100k human-normalised scores: HNS = (score − random) / (human − random).

The random and human scores, and the per-game scores of EfficientZero V1 (its paper) and
V2 (as printed by a third party; see the CSV's note below), are in `atari100k_scores.csv`.
The EZ-V1 column reproduces that paper's mean 1.943 / median 1.090; the EZ-V2 column gives
2.680 / 1.235, not the 2.428 / 1.286 of EZ-V2's Table 1, so quote PAPER_AGGREGATES for it.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from effzero.analysis import stats

# (mean, median) HNS over the 26 games as the papers state them.
PAPER_AGGREGATES = {"EZ-V2": (2.428, 1.286), "EZ-V1": (1.943, 1.090)}
PAPER_COLUMNS = {"EZ-V2": "efficientzero_v2_paper", "EZ-V1": "efficientzero_v1_paper"}


@dataclass(frozen=True)
class GameScores:
    name: str  # the CSV's spelling: MsPacman
    random: float
    human: float
    paper: dict[str, float]  # "EZ-V2" / "EZ-V1" -> raw score

    def hns(self, score: float) -> float:
        return (score - self.random) / (self.human - self.random)


def _key(name: str) -> str:
    """One spelling for ours (ms_pacman), the CSV's (MsPacman) and ALE ids (ALE/MsPacman-v5)."""
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name.removeprefix("ALE/"))
    return re.sub(r"[^a-z0-9]", "", name.lower())


@cache
def table() -> dict[str, GameScores]:
    """The 26 games, by lower-case key without separators (mspacman, upndown, ...)."""
    text = resources.files("effzero.analysis").joinpath("atari100k_scores.csv").read_text()
    games = {}
    for row in csv.DictReader(text.splitlines()):
        paper = {label: float(row[column]) for label, column in PAPER_COLUMNS.items()}
        games[_key(row["game"])] = GameScores(row["game"], float(row["random"]), float(row["human"]), paper)
    return games


def is_atari_game(name: str) -> bool:
    return _key(name) in table()


def game(name: str) -> GameScores:
    """The scores of a game named as our configs (kung_fu_master), the CSV or ALE name it."""
    found = table().get(_key(name))
    if found is None:
        known = ", ".join(sorted(g.name for g in table().values()))
        raise ValueError(f"{name!r} is not an Atari 100k game; the 26 games are: {known}")
    return found


def hns(score: float, name: str) -> float:
    """Human-normalised score of a raw `score` in game `name`."""
    return game(name).hns(score)


def paper_hns(label: str, games: list[str] | None = None) -> dict[str, float]:
    """HNS of a paper column ("EZ-V2" / "EZ-V1") per game, for `games` (default: all 26)."""
    names = games if games is not None else [g.name for g in table().values()]
    return {name: game(name).hns(game(name).paper[label]) for name in names}


def aggregates(hns_by_game: dict[str, float]) -> dict[str, float]:
    """Mean, median and IQM over games of one HNS per game."""
    scores = [np.array([value]) for value in hns_by_game.values()]
    return {
        "mean": float(stats.mean(scores)),
        "median": float(stats.median(scores)),
        "iqm": float(stats.iqm(scores)),
    }
