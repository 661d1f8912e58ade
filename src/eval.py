"""Evaluate a checkpoint with noise-free search.

python src/eval.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt episodes=10 video=true
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
from effzero.evaluation import evaluate_checkpoint

register_schemas()
register_resolvers()


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> float:
    return run_or_explain(evaluate_checkpoint, cfg).mean


if __name__ == "__main__":
    preflight(str(Path(__file__).resolve().parents[1] / "configs"), "eval", sys.argv[1:])
    main()
