"""A world-model config small enough for unit tests to build and run in milliseconds."""

from effzero.config import ModelConfig, SupportConfig


def small_model(
    value: tuple[float, float, int] = (-20, 20, 15), reward: tuple[float, float, int] = (-2, 2, 9)
):
    return ModelConfig(
        hidden=16,
        rep_hidden=16,
        dyn_hidden=16,
        action_embed=8,
        head_hidden=[16],
        num_blocks=1,
        proj_hidden=16,
        proj_dim=8,
        pred_hidden=16,
        value_support=SupportConfig(*value),
        reward_support=SupportConfig(*reward),
    )
