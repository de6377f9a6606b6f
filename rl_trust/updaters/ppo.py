"""PPO-clip (Schulman et al. 2017, arXiv 1707.06347, eq. 7)."""

from __future__ import annotations

import torch

from rl_trust.batch import RolloutBatch
from rl_trust.config import PPOConfig
from rl_trust.optim.schedule import linear_decay, load_schedule
from rl_trust.policies import Actor, Params
from rl_trust.updaters.common import PolicyData, entropy, minibatch_epochs, policy_data, policy_shift, surrogate


class PPO:
    """Maximise E[min(r A, clip(r, 1-ε, 1+ε) A)] + c_ent H over minibatch epochs (Adam)."""

    def __init__(self, actor: Actor, cfg: PPOConfig, *, total_updates: int, seed: int = 0):
        self.actor, self.cfg = actor, cfg
        self.optimizer = torch.optim.Adam(actor.parameters(), lr=cfg.lr, eps=1e-5, fused=True)
        self.scheduler = linear_decay(self.optimizer, total_updates) if cfg.lr_anneal else None
        self.generator = torch.Generator().manual_seed(seed)  # minibatch order

    def loss(self, params: Params, mb: PolicyData):
        surr, info = surrogate(self.actor, params, mb, clip_range=self.cfg.clip_range,
                               normalize_advantages=self.cfg.normalize_advantages)
        ent = entropy(self.actor, params)
        info["losses/entropy"] = ent.value.detach()
        return -surr - self.cfg.ent_coef * ent, info

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        data = policy_data(batch, self.actor)
        out = {"charts/policy_lr": self.optimizer.param_groups[0]["lr"]}
        out |= minibatch_epochs(self.actor, data, self.loss, self.optimizer, epochs=self.cfg.epochs,
                                minibatch_size=self.cfg.minibatch_size, max_grad_norm=self.cfg.max_grad_norm,
                                target_kl=self.cfg.target_kl, generator=self.generator)
        if self.scheduler is not None:
            self.scheduler.step()
        return out | policy_shift(self.actor, data)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        if self.scheduler is not None:
            load_schedule(self.scheduler, state["scheduler"])
