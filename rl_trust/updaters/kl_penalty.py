"""KL-penalised policy gradient with adaptive β (Schulman et al. 2017, arXiv 1707.06347, section 4)."""

from __future__ import annotations

import torch
from torch import Tensor

from rl_trust.batch import RolloutBatch
from rl_trust.policies import Actor
from rl_trust.updaters.common import (
    PolicyData,
    annealed_lr,
    gaussian_loss_and_grad,
    hand_grad_ok,
    minibatch_epochs,
    policy_data,
    policy_shift,
    surrogate_objective,
)


def adapt_beta(beta: float, kl: float, kl_target: float, beta_min: float, beta_max: float) -> float:
    """The PPO paper's rule: double β when d > 1.5·d_targ, halve it when d < d_targ/1.5; keep it in bounds."""
    if kl > 1.5 * kl_target:
        beta *= 2.0
    elif kl < kl_target / 1.5:
        beta /= 2.0
    return min(max(beta, beta_min), beta_max)


class KLPenalty:
    """Maximise E[r A] − β KL(π_old || π) (analytic KL) over minibatch epochs.

    β adapts once per update from the mean analytic KL over the whole batch after the update
    (``adaptive=False``: fixed β). ``clip_range`` optionally clips the ratio as PPO does as well
    (RLlib's combination); the default is the pure penalty.
    """

    def __init__(self, actor: Actor, *, lr: float, epochs: int, minibatch_size: int, kl_target: float,
                 beta: float = 1.0, adaptive: bool = True, beta_min: float = 1e-4, beta_max: float = 1e4,
                 clip_range: float | None = None, ent_coef: float = 0.0, max_grad_norm: float | None = 0.5,
                 normalize_advantages: bool = True, lr_anneal: bool = True, total_updates: int = 0):
        self.actor = actor
        self.params = list(actor.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=lr, eps=1e-5, fused=True)
        self.lr, self.epochs, self.minibatch_size = lr, epochs, minibatch_size
        self.kl_target, self.beta, self.adaptive = kl_target, beta, adaptive
        self.beta_min, self.beta_max = beta_min, beta_max
        self.clip_range, self.ent_coef, self.max_grad_norm = clip_range, ent_coef, max_grad_norm
        self.normalize_advantages, self.lr_anneal, self.total_updates = normalize_advantages, lr_anneal, total_updates
        self.num_updates = 0

    def loss(self, mb: PolicyData) -> tuple[Tensor, dict[str, Tensor]]:
        if hand_grad_ok(self.actor):  # the same gradient, written by hand (common.gaussian_loss_and_grad)
            loss, info = gaussian_loss_and_grad(self.actor, mb, clip_range=self.clip_range,
                                                normalize_advantages=self.normalize_advantages,
                                                ent_coef=self.ent_coef, kl_coef=self.beta)
            info["losses/kl_penalty"] = self.beta * info.pop("kl")
            return loss, info
        s = surrogate_objective(self.actor, mb, clip_range=self.clip_range,
                                normalize_advantages=self.normalize_advantages, hand_grad=True)
        kl = self.actor.dist.kl(mb.old_params, s.params).mean()
        s.info["losses/kl_penalty"] = self.beta * kl.detach()
        return -s.surrogate + self.beta * kl - self.ent_coef * s.entropy, s.info

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        lr = self.lr
        if self.lr_anneal:
            lr = annealed_lr(self.optimizer, self.lr, self.num_updates, self.total_updates)
        data = policy_data(batch, self.actor, hand_grad=True)
        beta_used = self.beta
        out = minibatch_epochs(data, self.loss, self.optimizer, self.params, epochs=self.epochs,
                               minibatch_size=self.minibatch_size, max_grad_norm=self.max_grad_norm,
                               target_kl=None)
        out.pop("approx_kl", None)
        out.update(policy_shift(self.actor, data))
        if self.adaptive:
            self.beta = adapt_beta(self.beta, out["trust_region/kl"], self.kl_target, self.beta_min, self.beta_max)
        self.num_updates += 1
        out |= {"trust_region/kl_target": self.kl_target, "trust_region/beta": beta_used,
                "trust_region/beta_next": self.beta, "charts/policy_lr": lr}
        if self.actor.continuous:
            out["policy/std"] = float(self.actor.log_std.detach().exp().mean())
        return out

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "beta": self.beta, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.beta, self.num_updates = float(state["beta"]), int(state["num_updates"])
