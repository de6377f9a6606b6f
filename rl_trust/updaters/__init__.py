"""Policy updaters, side by side: each one a module, none inheriting another."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from rl_trust.config import CUSTOM, updater_settings
from rl_trust.policies import Actor
from rl_trust.updaters.base import Updater
from rl_trust.updaters.kl_penalty import KLPenalty
from rl_trust.updaters.ppo import PPO
from rl_trust.updaters.projection import Projection
from rl_trust.updaters.trpo import TRPO

UPDATERS: dict[str, type] = {"ppo": PPO, "trpo": TRPO, "kl_penalty": KLPenalty, "projection": Projection}


def make_updater(cfg: DictConfig, actor: Actor, *, total_updates: int, seed: int) -> Updater:
    """The updater ``cfg.name`` names, built from its config section (``algo``); ``algo=custom``: the class
    ``algo._target_`` names, built from its ``Config`` (docs/extending.md)."""
    if cfg.name == CUSTOM:
        cls, settings = updater_settings(cfg)
        return cls(actor, settings, total_updates=total_updates, seed=seed)
    settings = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
    return UPDATERS[cfg.name](actor, settings, total_updates=total_updates, seed=seed)


__all__ = ["UPDATERS", "Updater", "make_updater"]
