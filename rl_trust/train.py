"""The training loop: collect → GAE → update policy → update critic → log."""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from rl_trust import checkpoint
from rl_trust.advantages import gae
from rl_trust.config import validate
from rl_trust.critic import Critic, optimizer_factory
from rl_trust.errors import ConfigError
from rl_trust.evaluate import evaluate
from rl_trust.logger import Logger
from rl_trust.normalization import ObsNormalizer, RewardScaler
from rl_trust.policies import Actor, ValueNet
from rl_trust.rollout import RolloutWorker
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
    optim_kwargs = OmegaConf.to_container(cfg.critic.optim_kwargs)
    if cfg.critic.lr is not None:
        optim_kwargs["lr"] = cfg.critic.lr
    make_optimizer = optimizer_factory(cfg.critic.optim, optim_kwargs)

    workers = resolve_workers(cfg.rollout.workers, cfg.env.num_envs)
    groups = resolve_env_groups(cfg.rollout.env_groups, cfg.env.num_envs)
    # Overlapping the critic with the next rollout: by default the workers then step every env and the
    # learner runs critic steps while it waits for them.
    learner_envs = resolve_learner_envs(cfg.rollout.learner_envs, cfg.env.num_envs, workers, groups,
                                        cfg.rollout.overlap_critic)
    with contextlib.ExitStack() as cleanup:
        # numpy's BLAS runs one thread whatever torch_threads is: numpy only does small products here (the
        # rollout's policy on a few observations per step, the critic's minibatch steps), where a second
        # OpenBLAS thread costs far more than it gives (torch_threads=2 with it: ~10x slower runs on the
        # 2-core development machine) and spins on the cores the rollout workers step envs on.
        cleanup.enter_context(threadpool_limits(limits=1, user_api="blas"))
        envs = make_envs(cfg.env.id, cfg.env.num_envs, workers, dict(cfg.env.kwargs), learner_envs, groups)
        cleanup.callback(envs.close)  # also on error: worker processes end with the run
        return _train(cfg, out_dir, envs, make_optimizer, device)


def _train(cfg: DictConfig, out_dir: Path, envs, make_optimizer, device: torch.device) -> dict[str, float]:
    obs_shape = envs.single_observation_space.shape
    if len(obs_shape) != 1:
        raise ConfigError(f"env.id={cfg.env.id!r} has observation shape {obs_shape}; MLP policies need 1-D")
    obs_dim = obs_shape[0]
    steps_per_update = cfg.env.num_envs * cfg.rollout.steps_per_env
    num_updates = cfg.total_steps // steps_per_update

    actor = Actor(obs_dim, envs.single_action_space, list(cfg.policy.hidden), cfg.policy.activation,
                  cfg.policy.log_std_init, cfg.policy.ortho_init)
    critic = Critic(ValueNet(obs_dim, list(cfg.critic.hidden), cfg.critic.activation, cfg.critic.ortho_init),
                    make_optimizer, epochs=cfg.critic.epochs, minibatch_size=cfg.critic.minibatch_size,
                    max_grad_norm=cfg.critic.max_grad_norm, clip_range=cfg.critic.clip_range,
                    lr_anneal=cfg.critic.lr_anneal, total_updates=num_updates, device=device, seed=cfg.seed + 1)
    updater = make_updater(cfg.algo, actor, total_updates=num_updates)
    worker = RolloutWorker(
        envs, actor,
        ObsNormalizer(obs_shape, enabled=cfg.env.normalize_obs, clip=cfg.env.obs_clip),
        RewardScaler(cfg.env.num_envs, cfg.gamma, enabled=cfg.env.normalize_reward, clip=cfg.env.reward_clip),
        cfg.rollout.steps_per_env, seed=cfg.seed)

    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    logger = Logger(str(out_dir), num_updates * steps_per_update, config_yaml, progress=cfg.progress)
    recent_returns: deque[float] = deque(maxlen=20)
    global_step, start = 0, time.perf_counter()
    # The critic's update of batch k only has to end before batch k+1's values are computed, so with
    # rollout.overlap_critic it runs during rollout k+1 (in the learner's waits for the workers); what
    # is left runs after it. Data dependencies are those of the sequential loop and the critic draws
    # its own minibatches, so the results are the same either way (tests/test_train.py checks it).
    pending: tuple[Iterator[None], dict[str, float], int] | None = None  # critic steps, metrics, step

    def finish_critic() -> None:
        steps, metrics, step = pending
        for _ in steps:
            pass
        metrics |= critic.last_metrics
        metrics["time/sps"] = step / (time.perf_counter() - start)
        logger.log(metrics, step, float(np.mean(recent_returns)) if recent_returns else None)

    try:
        for _ in range(num_updates):
            batch, episodes = worker.collect(background=None if pending is None else pending[0])
            if pending is not None:
                finish_critic()
                pending = None
            batch = critic.evaluate(batch)
            advantages, returns = gae(batch.rewards, batch.values, batch.next_values, batch.terminated,
                                      batch.truncated, gamma=cfg.gamma, lam=cfg.gae_lambda)
            batch = batch.replace(advantages=advantages, returns=returns)
            metrics = updater.update(batch)

            global_step += steps_per_update
            recent_returns.extend(episodes.returns)
            if episodes.returns:
                metrics["charts/episodic_return"] = float(np.mean(episodes.returns))
                metrics["charts/episodic_length"] = float(np.mean(episodes.lengths))
            pending = (critic.update_steps(batch), metrics, global_step)
            if not cfg.rollout.overlap_critic:
                finish_critic()
                pending = None
        if pending is not None:
            finish_critic()
            pending = None
        train_time = time.perf_counter() - start  # training only: not the envs' or workers' shutdown
    finally:
        logger.close()
        envs.close()

    result = evaluate(actor, worker.obs_norm, cfg.env.id, cfg.eval_episodes, seed=cfg.seed + 10_000,
                      env_kwargs=dict(cfg.env.kwargs))
    result |= {
        "train/global_step": float(global_step),
        "train/time_s": train_time,
        "train/sps": global_step / train_time,
        "train/recent_return": float(np.mean(recent_returns)) if recent_returns else float("nan"),
    }
    if cfg.checkpoint:
        checkpoint.save(out_dir / "checkpoint.pt", {
            "actor": actor.state_dict(), "critic": critic.state_dict(), "updater": updater.state_dict(),
            "worker": worker.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True),
            "global_step": global_step,
        })
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out_dir / "metrics.json")
    return result
