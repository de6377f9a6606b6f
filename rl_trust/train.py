"""The training loop: collect → critic values → GAE → policy update → critic update → log."""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from rl_trust import checkpoint
from rl_trust.advantages import gae
from rl_trust.config import validate
from rl_trust.critic import Critic
from rl_trust.errors import ConfigError
from rl_trust.evaluate import evaluate
from rl_trust.logger import Logger
from rl_trust.normalization import ObsNormalizer, RewardScaler
from rl_trust.policies import Actor
from rl_trust.rollout import Collector, EpisodeStats
from rl_trust.updaters import make_updater
from rl_trust.workers import make_envs, resolve_env_groups, resolve_learner_envs, resolve_workers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is invalid: no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> dict[str, float]:
    """Train as ``cfg`` says, write events, checkpoint and ``metrics.json`` to ``out_dir``; return the metrics.

    ``metrics.json`` is written last, so its presence marks a finished run.
    """
    validate(cfg)
    out_dir = Path(out_dir or os.getcwd())
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    num_envs, rollout = cfg.env.num_envs, cfg.rollout
    workers = resolve_workers(rollout.workers, num_envs)
    groups = resolve_env_groups(rollout.env_groups, num_envs)
    learner_envs = resolve_learner_envs(rollout.learner_envs, num_envs, workers, groups, rollout.overlap_critic)
    with contextlib.ExitStack() as stack:
        # numpy only does small products here (the per-step policy, the critic's minibatches), where a
        # second BLAS thread costs more than it gives and spins on the cores the workers step envs on.
        stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        envs = make_envs(cfg.env.id, num_envs, workers, dict(cfg.env.kwargs), learner_envs, groups)
        stack.callback(envs.close)  # also on error: worker processes end with the run
        obs_shape = envs.single_observation_space.shape
        if len(obs_shape) != 1:
            raise ConfigError(f"env.id={cfg.env.id!r} has observation shape {obs_shape}; MLP policies need 1-D")
        steps_per_update = num_envs * rollout.steps_per_env
        num_updates = cfg.total_steps // steps_per_update
        actor = Actor(obs_shape[0], envs.single_action_space, OmegaConf.to_object(cfg.policy))
        critic = Critic(obs_shape[0], OmegaConf.to_object(cfg.critic), total_updates=num_updates, device=device,
                        seed=cfg.seed + 1)
        updater = make_updater(cfg.algo, actor, total_updates=num_updates, seed=cfg.seed + 2)
        collector = Collector(
            envs, actor, ObsNormalizer(obs_shape, enabled=cfg.env.normalize_obs, clip=cfg.env.obs_clip),
            RewardScaler(num_envs, cfg.gamma, enabled=cfg.env.normalize_reward, clip=cfg.env.reward_clip),
            rollout.steps_per_env, seed=cfg.seed)
        logger = stack.enter_context(Logger(str(out_dir), num_updates * steps_per_update,
                                            OmegaConf.to_yaml(cfg, resolve=True), progress=cfg.progress))

        # The critic's update of batch k only has to end before batch k+1's values are computed, so with
        # rollout.overlap_critic it steps while the workers step the envs for batch k+1 and finishes after:
        # the same data dependencies as the sequential loop, so the same results (tests/test_train.py).
        job, metrics, global_step = None, {}, 0
        for _ in range(num_updates):
            batch, episodes = collector.collect(idle=job.step if job is not None else None)
            logger.collected(batch, episodes)
            if job is not None:
                logger.log(metrics | job.finish(), global_step)
            batch = critic.evaluate(batch)
            advantages, returns = gae(batch.rewards, batch.values, batch.next_values, batch.terminated,
                                      batch.truncated, gamma=cfg.gamma, lam=cfg.gae_lambda)
            batch = batch.replace(advantages=advantages, returns=returns)
            metrics = updater.update(batch) | episode_metrics(episodes)
            global_step += len(batch)
            job = critic.start_update(batch)
            if not rollout.overlap_critic:
                logger.log(metrics | job.finish(), global_step)
                job = None
        if job is not None:
            logger.log(metrics | job.finish(), global_step)
        train_time = logger.elapsed()  # training only: not the envs' or workers' shutdown
        recent_return = logger.recent_return()

    result = evaluate(actor, collector.obs_norm, cfg.env.id, cfg.eval_episodes, seed=cfg.seed + 10_000,
                      env_kwargs=dict(cfg.env.kwargs))
    result |= {
        "train/global_step": float(global_step),
        "train/time_s": train_time,
        "train/sps": global_step / train_time,
        "train/recent_return": recent_return,
    }
    if cfg.checkpoint:
        checkpoint.save(out_dir / "checkpoint.pt", {
            "actor": actor.state_dict(), "critic": critic.state_dict(), "updater": updater.state_dict(),
            "collector": collector.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True),
            "global_step": global_step,
        })
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out_dir / "metrics.json")
    return result


def episode_metrics(episodes: EpisodeStats) -> dict[str, float]:
    if not episodes.returns:
        return {}
    return {"charts/episodic_return": float(np.mean(episodes.returns)),
            "charts/episodic_length": float(np.mean(episodes.lengths))}
