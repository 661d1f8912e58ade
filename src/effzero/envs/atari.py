"""Atari 100k as EZ-V2 plays it: ALE v5 through gymnasium, with the protocol's wrappers in one place.

Per agent step the emulator runs 4 frames with the same action; the observation is the pixel-wise
max of the last two RGB frames, resized to 96×96 (INTER_AREA) and stacked 4 deep channels-first:
[12, 96, 96] uint8. Every episode starts with 1..30 no-ops. Training clips rewards with sign(),
ends an episode on the loss of a life and caps episodes at 3000 agent steps; evaluation keeps raw
rewards and whole games and caps them at 27000 agent steps (108k frames). No sticky actions.
"""

from __future__ import annotations

import difflib
from typing import Any

import ale_py
import cv2
import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit, TransformReward

from effzero.envs.frames import FrameStack

gymnasium.register_envs(ale_py)

# The 26 games of the Atari 100k benchmark, as the lower-case snake names configs use.
ATARI_100K_GAMES = (
    "alien",
    "amidar",
    "assault",
    "asterix",
    "bank_heist",
    "battle_zone",
    "boxing",
    "breakout",
    "chopper_command",
    "crazy_climber",
    "demon_attack",
    "freeway",
    "frostbite",
    "gopher",
    "hero",
    "jamesbond",
    "kangaroo",
    "krull",
    "kung_fu_master",
    "ms_pacman",
    "pong",
    "private_eye",
    "qbert",
    "road_runner",
    "seaquest",
    "up_n_down",
)
FRAME_SKIP = 4
NOOP_MAX = 30
FRAME_SIZE = 96
FRAME_STACK = 4
TRAIN_MAX_EPISODE_STEPS = 3000
EVAL_MAX_EPISODE_STEPS = 27000  # 108k frames
NOOP = 0  # action 0 is NOOP in every game's minimal action set


def ale_id(game: str) -> str:
    """The ALE v5 id of a snake-case game name: 'ms_pacman' -> 'ALE/MsPacman-v5'.

    Raises:
        ValueError: no ALE game has that name; the message lists close Atari 100k names.
    """
    env_id = f"ALE/{''.join(part.capitalize() for part in game.split('_'))}-v5"
    if env_id not in gymnasium.registry:
        matches = difflib.get_close_matches(game, ATARI_100K_GAMES, n=5, cutoff=0.5)
        hint = f"close Atari 100k games: {', '.join(matches)}" if matches else "no close Atari 100k game"
        raise ValueError(
            f"unknown Atari game {game!r} ({env_id} is not registered); {hint}. Games are lower-case "
            f"snake names of ALE games, e.g. the Atari 100k set: {', '.join(ATARI_100K_GAMES)}"
        )
    return env_id


class NoopReset(gymnasium.Wrapper):
    """Each reset plays 1..noop_max no-op frames (uniform, from the env's seeded RNG): varied starts."""

    def __init__(self, env: gymnasium.Env, noop_max: int) -> None:
        super().__init__(env)
        self.noop_max = noop_max

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset, then play the no-ops (resetting again, unseeded, if they end the game).

        Returns:
            [210, 160, 3] uint8 the screen after the no-ops, and the env's info.
        """
        obs, info = self.env.reset(seed=seed, options=options)
        for _ in range(int(self.env.unwrapped.np_random.integers(1, self.noop_max + 1))):
            obs, _, terminated, truncated, info = self.env.step(NOOP)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class MaxAndSkip(gymnasium.Wrapper):
    """One step repeats the action for `skip` frames, sums their rewards and returns the pixel-wise
    max of the last two frames: some games draw sprites only on alternate frames."""

    def __init__(self, env: gymnasium.Env, skip: int) -> None:
        super().__init__(env)
        self.skip = skip
        self._last: np.ndarray | None = None  # [210, 160, 3] the newest raw frame

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset; the first observation is the single raw frame the reset ends on.

        Returns:
            [210, 160, 3] uint8 that frame, and the env's info.
        """
        obs, info = self.env.reset(seed=seed, options=options)
        self._last = obs
        return obs, info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Play `action` for `skip` frames, or fewer if the game ends first.

        Returns:
            [210, 160, 3] uint8 max of the last two frames played (at an end after one frame, the
            previous step's last frame is the older one), the summed reward, flags and info.
        """
        total = 0.0
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            previous, self._last = self._last, obs
            if terminated or truncated:
                break
        return np.maximum(previous, obs), total, terminated, truncated, info


class LifeLossEndsEpisode(gymnasium.Wrapper):
    """The loss of a life ends the episode (terminated) but not the game.

    After a life-loss end, `reset` continues the same game with one no-op step, so every state of
    the game stays reachable; the seed given to that reset is not used (the game is not restarted).
    After any other end (game over, time limit) `reset` restarts the game.
    """

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self._lives = 0
        self._life_lost = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Continue the game after a lost life, else reset it.

        Returns:
            [*obs] the episode's first observation, and the env's info.
        """
        ended = True
        if self._life_lost:
            obs, _, terminated, truncated, info = self.env.step(NOOP)
            ended = terminated or truncated
        if ended:
            obs, info = self.env.reset(seed=seed, options=options)
        self._life_lost = False
        self._lives = self.env.unwrapped.ale.lives()
        return obs, info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step; a drop in lives that leaves some (games may show 0 lives before game over) terminates.

        Returns:
            [*obs] observation, reward, terminated (game over or life lost), truncated, info.
        """
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        self._life_lost = 0 < lives < self._lives and not (terminated or truncated)
        self._lives = lives
        return obs, reward, terminated or self._life_lost, truncated, info


class ResizeChannelsFirst(gymnasium.ObservationWrapper):
    """RGB frames [H, W, 3] -> [3, size, size] uint8, resized with INTER_AREA (pixel-area averaging)."""

    def __init__(self, env: gymnasium.Env, size: int) -> None:
        super().__init__(env)
        self.size = size
        self.observation_space = spaces.Box(0, 255, (3, size, size), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """Resize one frame.

        Args:
            observation: [H, W, 3] uint8.

        Returns:
            [3, size, size] uint8, contiguous.
        """
        frame = cv2.resize(observation, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame.transpose(2, 0, 1))


def make_atari_env(
    game: str, train: bool, seed: int | None = None, max_episode_steps: int | None = None
) -> gymnasium.Env:
    """Make an Atari game with EZ-V2's Atari 100k protocol.

    Args:
        game: lower-case snake name of an ALE game, e.g. 'breakout', 'ms_pacman' (any ALE game,
            not only the 26 of `ATARI_100K_GAMES`).
        train: training protocol (sign-clipped rewards, life loss ends the episode, cap 3000
            steps) if True, else evaluation (raw rewards, whole games, cap 27000 steps).
        seed: if given, the env is reset once with it (and its action space seeded), so that a
            caller's later `reset()` without a seed continues a reproducible stream.
        max_episode_steps: overrides the protocol's cap in agent steps.

    Returns:
        The env: observations [12, 96, 96] uint8 (4 RGB frames, oldest first), Discrete actions of
        the game's minimal set, episode ends past the cap as truncated.

    Raises:
        ValueError: an unknown game, with close Atari 100k names.
    """
    # frameskip=1 so frame skip and max-pooling happen here; ALE's own frame cap is off (0) so the
    # TimeLimit below is the only cap; the minimal action set begins with NOOP.
    env = gymnasium.make(
        ale_id(game),
        frameskip=1,
        repeat_action_probability=0.0,
        full_action_space=False,
        max_num_frames_per_episode=0,
    )
    env = MaxAndSkip(NoopReset(env, NOOP_MAX), FRAME_SKIP)
    if train:
        env = LifeLossEndsEpisode(env)
    env = FrameStack(ResizeChannelsFirst(env, FRAME_SIZE), FRAME_STACK)
    if train:
        env = TransformReward(env, lambda reward: float(np.sign(reward)))
    if max_episode_steps is None:
        max_episode_steps = TRAIN_MAX_EPISODE_STEPS if train else EVAL_MAX_EPISODE_STEPS
    env = TimeLimit(env, max_episode_steps)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
