"""effzero: EfficientZero V2 and its ancestors on PyTorch Lightning, Hydra and MLflow."""
