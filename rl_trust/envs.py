"""Vectorised Gymnasium environments.

Every vector env uses ``AutoresetMode.SAME_STEP``: the step that ends an episode returns the
reset observation and puts the true final observation in ``infos["final_obs"]``, so no step of
a rollout is a fake transition across a reset (see DESIGN.md, "Truncation and resets").
Normalisation lives in :mod:`rl_trust.normalization`, applied by the rollout worker, so its
statistics belong to the run's state rather than to a wrapper buried in the env stack.
"""

from __future__ import annotations

import difflib

import gymnasium as gym
from gymnasium.vector import AutoresetMode

from rl_trust.errors import ConfigError


def check_env_id(env_id: str) -> None:
    """Raise ``ConfigError`` naming ``env.id`` when Gymnasium does not know the id."""
    if env_id in gym.envs.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.envs.registry.keys()), n=5, cutoff=0.6)
    hint = f"; did you mean one of: {', '.join(close)}" if close else ""
    raise ConfigError(f"env.id={env_id!r} is not a registered Gymnasium environment{hint}")


def make_vec_env(env_id: str, num_envs: int, *, seed: int | None = None, **env_kwargs) -> gym.vector.VectorEnv:
    """A ``SyncVectorEnv`` of ``num_envs`` copies of ``env_id`` (SAME_STEP autoreset), reset with ``seed``."""
    check_env_id(env_id)
    if num_envs < 1:
        raise ConfigError(f"env.num_envs={num_envs} must be >= 1")
    envs = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        **env_kwargs,
    )
    space = envs.single_action_space
    if not isinstance(space, (gym.spaces.Box, gym.spaces.Discrete)):
        envs.close()
        raise ConfigError(
            f"env.id={env_id!r} has action space {space}; rl_trust policies support Box (Gaussian) "
            "and Discrete (categorical)"
        )
    if isinstance(envs.single_observation_space, gym.spaces.Box) is False:
        envs.close()
        raise ConfigError(f"env.id={env_id!r} has observation space {envs.single_observation_space}; only Box")
    envs.action_space.seed(seed)
    return envs
