"""Train an agent.

python src/train.py experiment=cartpole
python src/train.py experiment=cartpole algo.consistency_coef=0 seed=1
python src/train.py -m experiment=cartpole seed=0,1,2
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from effzero.cli import preflight, register_resolvers, run_or_explain
from effzero.config import register_schemas
from effzero.training import train

register_schemas()
register_resolvers()


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_or_explain(train, cfg)
    return metrics.get("eval/return_mean")


if __name__ == "__main__":
    preflight(str(Path(__file__).resolve().parents[1] / "configs"), "train", sys.argv[1:])
    main()
