"""Deterministic evaluation of a policy, with the observation normaliser frozen."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf

from rl_trust import checkpoint
from rl_trust.config import PolicyConfig
from rl_trust.envs import make_vec_env
from rl_trust.errors import CheckpointError
from rl_trust.normalization import ObsNormalizer
from rl_trust.policies import Actor


@torch.no_grad()
def act(actor: Actor, norm: ObsNormalizer, obs: np.ndarray, space: gym.Space, *,
        deterministic: bool = True) -> np.ndarray:
    """The env's action for the raw observations ``obs`` [B, obs_dim]: normalised by ``norm`` (as it is; the
    callers freeze it), the mean or argmax (or a sample) of the actor's distribution, clipped to ``space``
    for Box actions. What evaluation, videos and :mod:`rl_trust.export`'s standalone policy compute."""
    params = actor(torch.from_numpy(norm.normalize(obs)))
    action = (actor.dist.mode(params) if deterministic else actor.dist.sample(params)).numpy()
    return np.clip(action, space.low, space.high) if actor.continuous else action


def frozen(obs_norm: ObsNormalizer) -> ObsNormalizer:
    """A copy of ``obs_norm`` that no longer updates: evaluation must not move the run's statistics."""
    norm = copy.deepcopy(obs_norm)
    norm.frozen = True
    return norm


Policy = Callable[[np.ndarray, gym.Space], np.ndarray]  # (raw observations [B, ...], action space) -> actions


def policy_of(actor: Actor, obs_norm: ObsNormalizer, *, deterministic: bool = True) -> Policy:
    """:func:`act` of ``actor`` with a frozen copy of ``obs_norm``: the policy evaluations and videos run."""
    norm = frozen(obs_norm)
    return lambda obs, space: act(actor, norm, obs, space, deterministic=deterministic)


@torch.no_grad()
def episode_returns(policy: Policy, env_id: str, episodes: int, *, seed: int = 0, env_kwargs: dict | None = None,
                    max_steps: int | None = None, frames: Callable[[int, np.ndarray], None] | None = None,
                    record: int = 0, render_kwargs: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The return and length of one episode of ``policy`` (:func:`policy_of`, or an exported file's) in each of
    ``episodes`` parallel envs (env ``i`` reset with ``seed + i``; no selection bias towards short episodes),
    each cut at ``max_steps`` if given.

    ``frames(i, frame)`` receives, for each of the first ``record`` envs, the rendered frame of every state
    the policy acts in (the envs made with ``render_kwargs``): the videos of these very episodes.
    """
    kwargs = dict(env_kwargs or {}) | (render_kwargs or {})
    envs = make_vec_env(env_id, episodes, seed=seed, **kwargs)
    try:
        obs, _ = envs.reset(seed=seed)
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, np.int64)
        running = np.ones(episodes, bool)
        while running.any():
            for i in range(record):
                if running[i]:
                    frames(i, envs.envs[i].render())
            action = policy(obs, envs.single_action_space)
            obs, reward, terminated, truncated, _ = envs.step(action)
            returns += reward * running
            lengths += running
            running &= ~(terminated | truncated)
            if max_steps is not None:
                running &= lengths < max_steps
    finally:
        envs.close()
    return returns, lengths


def evaluate(actor: Actor, obs_norm: ObsNormalizer, env_id: str, episodes: int, *, seed: int = 0,
             env_kwargs: dict | None = None, deterministic: bool = True) -> dict[str, float]:
    """Mean and spread of :func:`episode_returns`, with the observation normaliser frozen."""
    return summary(*episode_returns(policy_of(actor, obs_norm, deterministic=deterministic), env_id, episodes,
                                    seed=seed, env_kwargs=env_kwargs))


def summary(returns: np.ndarray, lengths: np.ndarray) -> dict[str, float]:
    """The evaluation metrics of episodes with these returns and lengths."""
    return {"eval/mean_return": float(returns.mean()), "eval/std_return": float(returns.std()),
            "eval/mean_length": float(lengths.mean()), "eval/episodes": float(len(returns))}


def load_policy(path: str | Path) -> tuple[Actor, ObsNormalizer, dict]:
    """Rebuild the actor and observation normaliser saved in a checkpoint (or a run directory's); also return
    the checkpoint's state."""
    state = checkpoint.load(path, legacy=True)  # also the unchecksummed files of commits 58419fd to 754d98e
    missing = [k for k in ("config", "actor", "collector") if k not in state]
    if missing:
        raise CheckpointError(f"{str(path)!r} lacks {', '.join(missing)}: not a checkpoint scripts/train.py wrote")
    cfg = OmegaConf.create(state["config"])
    envs = make_vec_env(cfg.env.id, 1, **cfg.env.kwargs)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    actor = Actor(obs_dim, envs.single_action_space, PolicyConfig(**OmegaConf.to_container(cfg.policy)))
    envs.close()
    actor.load_state_dict(state["actor"])
    obs_norm = ObsNormalizer((obs_dim,))
    obs_norm.load_state_dict(state["collector"]["obs_norm"])
    return actor.eval(), obs_norm, state
