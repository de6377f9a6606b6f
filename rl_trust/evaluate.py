"""Deterministic evaluation of a policy, with the observation normaliser frozen."""

from __future__ import annotations

import copy
from pathlib import Path

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
def evaluate(actor: Actor, obs_norm: ObsNormalizer, env_id: str, episodes: int, *, seed: int = 0,
             env_kwargs: dict | None = None, deterministic: bool = True) -> dict[str, float]:
    """Run one episode in each of ``episodes`` parallel envs (no selection bias towards short episodes)."""
    norm = copy.deepcopy(obs_norm)
    norm.frozen = True
    envs = make_vec_env(env_id, episodes, seed=seed, **(env_kwargs or {}))
    try:
        space = envs.single_action_space
        low, high = (space.low, space.high) if actor.continuous else (None, None)
        obs, _ = envs.reset(seed=seed)
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, np.int64)
        running = np.ones(episodes, bool)
        while running.any():
            params = actor(torch.from_numpy(norm.normalize(obs)))
            action = (actor.dist.mode(params) if deterministic else actor.dist.sample(params)).numpy()
            if actor.continuous:
                action = np.clip(action, low, high)
            obs, reward, terminated, truncated, _ = envs.step(action)
            returns += reward * running
            lengths += running
            running &= ~(terminated | truncated)
    finally:
        envs.close()
    return {"eval/mean_return": float(returns.mean()), "eval/std_return": float(returns.std()),
            "eval/mean_length": float(lengths.mean()), "eval/episodes": float(episodes)}


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
