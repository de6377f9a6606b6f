"""Policy updaters, side by side: each one a module, none inheriting another."""

from __future__ import annotations

from omegaconf import DictConfig

from rl_trust.policies import Actor
from rl_trust.updaters.base import Updater
from rl_trust.updaters.kl_penalty import KLPenalty
from rl_trust.updaters.ppo import PPO
from rl_trust.updaters.trpo import TRPO


def make_updater(cfg: DictConfig, actor: Actor, *, total_updates: int) -> Updater:
    """Build the updater ``cfg.name`` names, the actor's parameters passed explicitly."""
    if cfg.name == "ppo":
        return PPO(actor, lr=cfg.lr, epochs=cfg.epochs, minibatch_size=cfg.minibatch_size,
                   clip_range=cfg.clip_range, ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm,
                   target_kl=cfg.target_kl, normalize_advantages=cfg.normalize_advantages,
                   lr_anneal=cfg.lr_anneal, total_updates=total_updates)
    if cfg.name == "trpo":
        return TRPO(actor, list(actor.parameters()), max_kl=cfg.max_kl, cg_iters=cfg.cg_iters,
                    cg_damping=cfg.cg_damping, backtrack_coeff=cfg.backtrack_coeff,
                    max_backtracks=cfg.max_backtracks, accept_ratio=cfg.accept_ratio,
                    fvp_subsample=cfg.fvp_subsample, ent_coef=cfg.ent_coef,
                    normalize_advantages=cfg.normalize_advantages, max_nan_updates=cfg.max_nan_updates)
    if cfg.name == "kl_penalty":
        return KLPenalty(actor, lr=cfg.lr, epochs=cfg.epochs, minibatch_size=cfg.minibatch_size,
                         kl_target=cfg.kl_target, beta=cfg.beta, adaptive=cfg.adaptive, beta_min=cfg.beta_min,
                         beta_max=cfg.beta_max, clip_range=cfg.clip_range, ent_coef=cfg.ent_coef,
                         max_grad_norm=cfg.max_grad_norm, normalize_advantages=cfg.normalize_advantages,
                         lr_anneal=cfg.lr_anneal, total_updates=total_updates)
    raise ValueError(f"algo.name={cfg.name!r} has no updater")


__all__ = ["Updater", "make_updater"]
