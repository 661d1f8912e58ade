"""Compare training runs logged to MLflow: tables, learning curves, an MLflow `comparison` run.

python src/compare.py experiments=cartpole
python src/compare.py experiments='atari_*' tags.seed=0 group_by=algo
python src/compare.py experiments=[dmc_walker,dmc_cheetah_run] name=dmc
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from effzero.cli import check_overrides, register_resolvers, run_or_explain
from effzero.compare import compare, register_schema
from effzero.config import register_schemas

register_schemas()
register_resolvers()
register_schema()


@hydra.main(version_base="1.3", config_path="../configs", config_name="compare")
def main(cfg: DictConfig) -> None:
    run_or_explain(compare, cfg)


if __name__ == "__main__":
    if any(arg.startswith("experiment=") for arg in sys.argv[1:]):  # train.py's spelling
        sys.exit("error: compare selects with experiments=<name or glob> (plural): experiments=cartpole")
    check_overrides(str(Path(__file__).resolve().parents[1] / "configs"), "compare", sys.argv[1:])
    main()
