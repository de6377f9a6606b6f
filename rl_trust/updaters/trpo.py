"""TRPO (Schulman et al. 2015, arXiv 1502.05477): natural-gradient step under a mean-KL bound."""

from __future__ import annotations

import dataclasses
import math

import torch

from rl_trust.batch import RolloutBatch
from rl_trust.config import TRPOConfig
from rl_trust.policies import Actor
from rl_trust.updaters.common import PolicyData, entropy, mean_kl, normalize, policy_data, policy_shift, surrogate
from rl_trust.updaters.trust_region import backtracking_line_search, cg_solve


class TRPO:
    """Maximise the importance-sampled surrogate subject to mean KL(π_old || π) <= ``max_kl``.

    The natural gradient x ≈ F⁻¹ g comes from ``cg_iters`` conjugate-gradient steps on damped
    Fisher-vector products (optionally on a random ``fvp_subsample`` fraction of the batch, as the
    original TRPO, drawn from the updater's generator); the step sqrt(2 max_kl / xᵀFx) · x is then
    shrunk by ``backtrack_coeff`` until the exact mean KL is within the bound and the surrogate
    improves. A non-finite loss or step raises ``FloatingPointError`` before any parameter changes (the
    trainer's :class:`~rl_trust.guard.Guard` counts it and stops a run where it keeps happening).
    """

    def __init__(self, actor: Actor, cfg: TRPOConfig, *, total_updates: int = 0, seed: int = 0):
        self.actor, self.cfg = actor, cfg
        self.params = list(actor.parameters())
        self.generator = torch.Generator().manual_seed(seed)  # FVP subsamples
        self.rejected_total = 0  # line searches that found no acceptable step

    def objective(self, data: PolicyData, params=None):
        """The surrogate (+ entropy bonus) as a :class:`~rl_trust.updaters.common.Loss`, and the mean KL
        to the old policy, at ``params`` (default: the current policy's on ``data``)."""
        params = self.actor(data.obs) if params is None else params
        surr, _ = surrogate(self.actor, params, data)
        return surr + self.cfg.ent_coef * entropy(self.actor, params), mean_kl(self.actor, data.old_params, params)

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        cfg = self.cfg
        data = policy_data(batch, self.actor)
        if cfg.normalize_advantages:  # over the whole batch
            data = dataclasses.replace(data, advantages=normalize(data.advantages))
        params, cache = self.actor.forward_cached(data.obs)
        objective, _ = self.objective(data, params)
        grad = torch.cat([g.reshape(-1) for g in self.actor.gradients(cache, objective.grad)])
        metrics = {"losses/policy": -float(objective.value), "losses/entropy": float(entropy(self.actor, params).value),
                   "trust_region/max_kl": cfg.max_kl}
        if not torch.isfinite(grad).all():
            raise FloatingPointError("TRPO: the surrogate's gradient is not finite")

        sub = data.obs
        if cfg.fvp_subsample < 1.0:
            n = len(data)
            sub = sub[torch.randperm(n, generator=self.generator)[: max(1, int(n * cfg.fvp_subsample))]]
        fvp = self.actor.fisher_product(sub, damping=cfg.cg_damping)
        cg = cg_solve(fvp, grad, iters=cfg.cg_iters)
        shs = float(cg.x.dot(fvp(cg.x)))  # xᵀ F x
        metrics |= {"trust_region/cg_residual": cg.residual, "trust_region/cg_iterations": float(cg.iterations)}
        if not (math.isfinite(shs) and torch.isfinite(cg.x).all()):
            raise FloatingPointError(f"TRPO: the natural-gradient step is not finite (x'Fx = {shs})")
        if shs <= 0:  # a zero gradient (e.g. constant advantages): nothing to step along
            return metrics | {"trust_region/line_search_accepted": 0.0, "trust_region/kl": 0.0}

        full_step = math.sqrt(2 * cfg.max_kl / shs) * cg.x

        def evaluate():
            objective, kl = self.objective(data)
            return objective.value, kl.value

        result = backtracking_line_search(
            self.params, full_step, evaluate, surrogate_before=float(objective.value),
            expected_improvement=float(grad.dot(full_step)), max_kl=cfg.max_kl, backtrack_coeff=cfg.backtrack_coeff,
            max_backtracks=cfg.max_backtracks, accept_ratio=cfg.accept_ratio)
        self.rejected_total += not result.accepted
        metrics |= {
            "trust_region/kl": result.kl,
            "trust_region/backtracks": float(result.backtracks),
            "trust_region/line_search_accepted": float(result.accepted),
            "trust_region/step_fraction": result.fraction,
            "trust_region/step_norm": float(full_step.norm()) * result.fraction,
            "trust_region/rejected_total": float(self.rejected_total),
            "losses/surrogate_improvement": result.improvement,
            "losses/expected_improvement": result.expected_improvement,
        }
        shift = policy_shift(self.actor, data)
        return metrics | {k: v for k, v in shift.items() if k != "trust_region/kl"}

    def state_dict(self) -> dict:
        return {"rejected_total": self.rejected_total, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rejected_total = int(state["rejected_total"])
        self.generator.set_state(state["generator"])
