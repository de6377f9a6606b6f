"""KL-penalised policy gradient with adaptive β (Schulman et al. 2017, arXiv 1707.06347, section 4)."""

from __future__ import annotations

import torch

from rl_trust.batch import RolloutBatch
from rl_trust.config import KLPenaltyConfig
from rl_trust.optim.schedule import linear_decay, load_schedule
from rl_trust.policies import Actor, Params
from rl_trust.updaters.common import (
    PolicyData,
    entropy,
    mean_kl,
    minibatch_epochs,
    policy_data,
    policy_shift,
    surrogate,
)


def adapt_beta(beta: float, kl: float, target_kl: float, beta_min: float, beta_max: float) -> float:
    """The PPO paper's rule: double β when d > 1.5·d_targ, halve it when d < d_targ/1.5; keep it in bounds."""
    if kl > 1.5 * target_kl:
        beta *= 2.0
    elif kl < target_kl / 1.5:
        beta /= 2.0
    return min(max(beta, beta_min), beta_max)


class KLPenalty:
    """Maximise E[r A] − β KL(π_old || π) (analytic KL) + c_ent H over minibatch epochs (Adam).

    β adapts once per update from the mean analytic KL over the whole batch after the update
    (``adaptive=False``: fixed β). ``clip_range`` optionally clips the ratio as PPO does as well
    (RLlib's combination); the default is the pure penalty.
    """

    def __init__(self, actor: Actor, cfg: KLPenaltyConfig, *, total_updates: int, seed: int = 0):
        self.actor, self.cfg = actor, cfg
        self.optimizer = torch.optim.Adam(actor.parameters(), lr=cfg.lr, eps=1e-5, fused=True)
        self.scheduler = linear_decay(self.optimizer, total_updates) if cfg.lr_anneal else None
        self.generator = torch.Generator().manual_seed(seed)  # minibatch order
        self.beta = cfg.beta

    def loss(self, params: Params, mb: PolicyData):
        surr, info = surrogate(self.actor, params, mb, clip_range=self.cfg.clip_range,
                               normalize_advantages=self.cfg.normalize_advantages)
        ent, kl = entropy(self.actor, params), mean_kl(self.actor, mb.old_params, params)
        info |= {"losses/entropy": ent.value.detach(), "losses/kl_penalty": self.beta * kl.value.detach()}
        return -surr + self.beta * kl - self.cfg.ent_coef * ent, info

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        data = policy_data(batch, self.actor)
        out = {"charts/policy_lr": self.optimizer.param_groups[0]["lr"], "trust_region/beta": self.beta,
               "trust_region/target_kl": self.cfg.target_kl}
        out |= minibatch_epochs(self.actor, data, self.loss, self.optimizer, epochs=self.cfg.epochs,
                                minibatch_size=self.cfg.minibatch_size, max_grad_norm=self.cfg.max_grad_norm,
                                target_kl=None, generator=self.generator)
        if self.scheduler is not None:
            self.scheduler.step()
        out |= policy_shift(self.actor, data)
        if self.cfg.adaptive:
            self.beta = adapt_beta(self.beta, out["trust_region/kl"], self.cfg.target_kl, self.cfg.beta_min,
                                   self.cfg.beta_max)
        return out | {"trust_region/beta_next": self.beta}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(), "beta": self.beta,
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.beta = float(state["beta"])
        if self.scheduler is not None:
            load_schedule(self.scheduler, state["scheduler"])
