"""PPO-clip (Schulman et al. 2017, arXiv 1707.06347, eq. 7)."""

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


class PPO:
    """Maximise E[min(r A, clip(r, 1-ε, 1+ε) A)] + c_ent H over minibatch epochs (Adam)."""

    def __init__(self, actor: Actor, *, lr: float, epochs: int, minibatch_size: int, clip_range: float,
                 ent_coef: float = 0.0, max_grad_norm: float | None = 0.5, target_kl: float | None = None,
                 normalize_advantages: bool = True, lr_anneal: bool = True, total_updates: int = 0,
                 adam_eps: float = 1e-5):
        self.actor = actor
        self.params = list(actor.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=lr, eps=adam_eps, fused=True)
        self.lr, self.epochs, self.minibatch_size = lr, epochs, minibatch_size
        self.clip_range, self.ent_coef, self.max_grad_norm = clip_range, ent_coef, max_grad_norm
        self.target_kl, self.normalize_advantages = target_kl, normalize_advantages
        self.lr_anneal, self.total_updates = lr_anneal, total_updates
        self.num_updates = 0

    def loss(self, mb: PolicyData) -> tuple[Tensor, dict[str, Tensor]]:
        if hand_grad_ok(self.actor):  # the same gradient, written by hand (common.gaussian_loss_and_grad)
            return gaussian_loss_and_grad(self.actor, mb, clip_range=self.clip_range,
                                          normalize_advantages=self.normalize_advantages, ent_coef=self.ent_coef)
        s = surrogate_objective(self.actor, mb, clip_range=self.clip_range,
                                normalize_advantages=self.normalize_advantages, hand_grad=True)
        return -s.surrogate - self.ent_coef * s.entropy, s.info

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        lr = self.lr
        if self.lr_anneal:
            lr = annealed_lr(self.optimizer, self.lr, self.num_updates, self.total_updates)
        data = policy_data(batch, self.actor, hand_grad=True)
        out = minibatch_epochs(data, self.loss, self.optimizer, self.params, epochs=self.epochs,
                               minibatch_size=self.minibatch_size, max_grad_norm=self.max_grad_norm,
                               target_kl=self.target_kl)
        self.num_updates += 1
        out.pop("approx_kl", None)
        out.update(policy_shift(self.actor, data))
        out["charts/policy_lr"] = lr
        if self.actor.continuous:
            out["policy/std"] = float(self.actor.log_std.detach().exp().mean())
        return out

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates = int(state["num_updates"])
