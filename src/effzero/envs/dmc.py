"""DeepMind Control Suite tasks as gymnasium envs, with EZ-V2's DMC protocol.

One agent step repeats the action `action_repeat` (2) times and sums the rewards; an episode is
1000 control steps of the task (500 agent steps), cut as truncated: suite tasks have no terminal
states. Actions are float32 in [-1, 1], mapped linearly onto the task's bounds. Observations are
either the task's proprioceptive state, flattened to float32, or 96×96 RGB frames from camera 0
(camera 2 for quadruped), channels-first and stacked 4 deep: [12, 96, 96] uint8.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec as GymEnvSpec
from gymnasium.wrappers import TimeLimit

from effzero.envs.frames import FrameStack

CONTROL_STEPS_PER_EPISODE = 1000
FRAME_SIZE = 96
PIXEL_FRAME_STACK = 4


def _egl_renders() -> bool:
    """Whether dm-control can open a headless EGL display here.

    Probed in a child process: a failed EGL import leaves PyOpenGL bound to EGL in this one, so
    falling back to OSMesa would no longer be possible.
    """
    probe = "import dm_control._render.pyopengl.egl_renderer"
    env = {**os.environ, "MUJOCO_GL": "egl"}
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode == 0


@functools.cache
def _suite() -> ModuleType:
    """`dm_control.suite`, imported on first use after choosing the renderer.

    dm-control reads MUJOCO_GL once, at import: unless the user set it, it is set here to 'egl'
    (headless; Mesa on CPUs, the driver on GPUs) or to 'osmesa' where EGL does not work. Child
    processes inherit the choice through the environment.
    """
    if "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl" if _egl_renders() else "osmesa"
    from dm_control import suite

    return suite


def camera_id(domain: str) -> int:
    """The camera frames come from, as in DrQ-v2 and EZ-V2: 0, but 2 for quadruped.

    Quadruped's camera 0 looks from 10 m away, where the body is a few pixels of a 96×96 frame;
    camera 2 follows it from 4 m.
    """
    return 2 if domain == "quadruped" else 0


def _unknown_task_message(domain: str, task: str) -> str:
    """Name the valid tasks of a known domain, or every valid domain-task pair."""
    all_tasks = _suite().ALL_TASKS
    tasks = [t for d, t in all_tasks if d == domain]
    if tasks:
        return f"unknown DMC task {task!r} for domain {domain!r}; valid tasks: {', '.join(tasks)}"
    pairs = ", ".join(f"{d}-{t}" for d, t in all_tasks)
    return f"unknown DMC domain {domain!r}; valid domain-task pairs: {pairs}"


class DMCEnv(gymnasium.Env):
    """One dm_control.suite task with action repeat, [-1, 1] actions and float32 or pixel observations.

    Proprio observations concatenate the task's observation dict in its own key order (the order
    the task builds it, as dmc2gym and EZ-V2 flatten it), each entry flattened, as float32.

    Attributes:
        dm_env: the dm_control environment (its `physics` holds the simulator state).
        pixels: whether observations are [3, size, size] uint8 frames rather than state vectors.
        camera_id: the camera frames are rendered from.
    """

    def __init__(
        self,
        domain: str,
        task: str,
        pixels: bool,
        action_repeat: int,
        seed: int | None = None,
        size: int = FRAME_SIZE,
    ) -> None:
        """Load the task.

        Args:
            domain: a dm_control.suite domain, e.g. 'walker'.
            task: one of its tasks, e.g. 'walk'.
            pixels: render frames instead of returning the state vector.
            action_repeat: control steps per agent step.
            seed: seeds the task's random state (initial states); None draws one.
            size: frame height and width.

        Raises:
            ValueError: an unknown domain or task, with the valid ones.
        """
        suite = _suite()
        if (domain, task) not in suite.ALL_TASKS:
            raise ValueError(_unknown_task_message(domain, task))
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be at least 1, got {action_repeat}")
        self.dm_env = suite.load(domain, task, task_kwargs={"random": seed})
        self.pixels = pixels
        self.camera_id = camera_id(domain)
        self.action_repeat = action_repeat
        self.size = size
        self.spec = GymEnvSpec(id=f"dmc/{domain}-{task}")
        action_spec = self.dm_env.action_spec()
        self._low = action_spec.minimum.astype(np.float64)  # [d]
        self._high = action_spec.maximum.astype(np.float64)  # [d]
        self.action_space = spaces.Box(-1.0, 1.0, action_spec.shape, np.float32)
        if pixels:
            self.observation_space = spaces.Box(0, 255, (3, size, size), np.uint8)
        else:
            dim = sum(int(np.prod(s.shape)) for s in self.dm_env.observation_spec().values())
            self.observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    def _observation(self, time_step: Any) -> np.ndarray:
        """[3, size, size] uint8 frame or [D] float32 state of the current time step."""
        if self.pixels:
            frame = self.dm_env.physics.render(self.size, self.size, camera_id=self.camera_id)
            return np.ascontiguousarray(frame.transpose(2, 0, 1))
        return np.concatenate(
            [np.asarray(v, dtype=np.float32).reshape(-1) for v in time_step.observation.values()]
        )

    def render(self) -> np.ndarray:
        """[240, 320, 3] uint8 RGB of the current state from the observation camera (videos)."""
        return self.dm_env.physics.render(240, 320, camera_id=self.camera_id)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; a seed reseeds the task's random state, which draws initial states.

        Returns:
            [*obs] the first observation, and an empty info.
        """
        super().reset(seed=seed)
        if seed is not None:
            self.dm_env.task.random.seed(seed)
        return self._observation(self.dm_env.reset()), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the action for `action_repeat` control steps, or until the task's episode ends.

        Args:
            action: [d] in [-1, 1] (clipped to it), mapped linearly onto the task's bounds.

        Returns:
            [*obs] observation, summed reward, terminated (a task terminal state: discount 0),
            truncated (the task's own time limit), and an empty info.
        """
        unit = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        scaled = self._low + (unit + 1.0) * 0.5 * (self._high - self._low)
        reward = 0.0
        for _ in range(self.action_repeat):
            time_step = self.dm_env.step(scaled)
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                break
        terminated = time_step.last() and time_step.discount == 0.0
        truncated = time_step.last() and not terminated
        return self._observation(time_step), reward, terminated, truncated, {}


def make_dmc_env(
    domain: str,
    task: str,
    pixels: bool,
    seed: int | None = None,
    action_repeat: int = 2,
    frame_stack: int | None = None,
    max_episode_steps: int | None = None,
) -> gymnasium.Env:
    """Make a DMC task with EZ-V2's protocol.

    Args:
        domain: a dm_control.suite domain, e.g. 'walker', 'quadruped', 'ball_in_cup'.
        task: one of its tasks, e.g. 'walk'.
        pixels: 96×96 RGB frames (vision benchmark) instead of the state vector (proprio).
        seed: if given, seeds the task and resets the env once with it (and seeds its action
            space), so that a caller's later `reset()` without a seed continues a reproducible stream.
        action_repeat: control steps per agent step.
        frame_stack: frames per observation; None means 4 with pixels, 1 without.
        max_episode_steps: a shorter cap in agent steps (e.g. quick evaluations); None keeps
            the protocol's 1000 // action_repeat.

    Returns:
        The env: observations [frame_stack·3, 96, 96] uint8 (oldest frame first) with pixels,
        else [frame_stack·D] float32; actions [d] float32 in [-1, 1]; episodes of
        1000 // action_repeat agent steps, ended as truncated.

    Raises:
        ValueError: an unknown domain or task, with the valid ones.
    """
    env: gymnasium.Env = DMCEnv(domain, task, pixels, action_repeat, seed)
    if frame_stack is None:
        frame_stack = PIXEL_FRAME_STACK if pixels else 1
    if frame_stack != 1:  # FrameStack rejects a stack below 1
        env = FrameStack(env, frame_stack)
    # The task's own limit is also 1000 control steps for every suite task but lqr (unlimited).
    limit = CONTROL_STEPS_PER_EPISODE // action_repeat
    env = TimeLimit(env, limit if max_episode_steps is None else min(limit, max_episode_steps))
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
