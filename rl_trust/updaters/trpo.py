"""TRPO (Schulman et al. 2015, arXiv 1502.05477): natural-gradient step under a mean-KL bound."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rl_trust.batch import RolloutBatch
from rl_trust.policies import Actor
from rl_trust.updaters.common import PolicyData, normalize, policy_data, policy_shift
from rl_trust.updaters.trust_region import (
    backtracking_line_search,
    cg_solve,
    flat_grad,
    gaussian_fisher_vector_product,
    get_flat_params,
    make_fisher_vector_product,
)


class TRPO:
    """Maximise the importance-sampled surrogate subject to mean KL(π_old || π) <= ``max_kl``.

    ``params`` are the actor parameters TRPO moves, passed explicitly. The natural gradient x ≈ F⁻¹ g
    comes from ``cg_iters`` conjugate-gradient steps on damped Fisher-vector products (optionally on
    a random ``fvp_subsample`` fraction of the batch, as the original TRPO); the step
    sqrt(2 max_kl / xᵀFx) · x is then shrunk by ``backtrack_coeff`` until the exact mean KL is within
    the bound and the surrogate improves. A non-finite loss or step rejects the update (parameters
    unchanged); ``max_nan_updates`` consecutive rejections of that kind stop training.
    """

    def __init__(self, actor: Actor, params: list[nn.Parameter], *, max_kl: float, cg_iters: int = 10,
                 cg_damping: float = 0.1, backtrack_coeff: float = 0.8, max_backtracks: int = 10,
                 accept_ratio: float = 0.0, fvp_subsample: float = 1.0, ent_coef: float = 0.0,
                 normalize_advantages: bool = True, max_nan_updates: int = 10):
        self.actor, self.params = actor, list(params)
        self.max_kl, self.cg_iters, self.cg_damping = max_kl, cg_iters, cg_damping
        self.backtrack_coeff, self.max_backtracks, self.accept_ratio = backtrack_coeff, max_backtracks, accept_ratio
        self.fvp_subsample, self.ent_coef, self.normalize_advantages = fvp_subsample, ent_coef, normalize_advantages
        self.max_nan_updates = max_nan_updates
        self.nan_streak, self.nan_total, self.rejected_total = 0, 0, 0

    def _surrogate(self, data: PolicyData, old_log_probs: Tensor, adv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        params = self.actor(data.obs)
        ratio = torch.exp(self.actor.dist.log_prob(params, data.actions) - old_log_probs)
        entropy = self.actor.dist.entropy(params).mean()
        kl = self.actor.dist.kl(data.old_params, params).mean()
        return (ratio * adv).mean() + self.ent_coef * entropy, kl, entropy

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        data = policy_data(batch, self.actor)
        dist = self.actor.dist
        # Log-probabilities of the policy as it is now (= the behaviour policy): the ratio is exactly 1 at θ_old.
        old_log_probs = dist.log_prob(data.old_params, data.actions)
        adv = normalize(data.advantages) if self.normalize_advantages else data.advantages

        surrogate, _, entropy = self._surrogate(data, old_log_probs, adv)
        grad = flat_grad(surrogate, self.params)
        metrics = {"losses/policy": -surrogate.item(), "losses/entropy": entropy.item(),
                   "trust_region/max_kl": self.max_kl}
        if not torch.isfinite(grad).all():
            return metrics | self._reject_nan()

        sub = data
        if self.fvp_subsample < 1.0:
            n = len(data.obs)
            sub = data[torch.randperm(n)[: max(1, int(n * self.fvp_subsample))]]
        if self.actor.continuous and self.actor._mlp_grad is not None:  # the same products, written out
            fvp = gaussian_fisher_vector_product(self.actor, sub.obs, self.params, damping=self.cg_damping)
        else:
            kl_fn = lambda: dist.kl(sub.old_params, self.actor(sub.obs)).mean()
            fvp = make_fisher_vector_product(kl_fn, self.params, damping=self.cg_damping)
        cg = cg_solve(fvp, grad, iters=self.cg_iters)
        shs = float(cg.x.dot(fvp(cg.x)))  # xᵀ F x
        metrics |= {"trust_region/cg_residual": cg.residual, "trust_region/cg_iterations": float(cg.iterations)}
        if not (math.isfinite(shs) and shs > 0 and torch.isfinite(cg.x).all()):
            return metrics | self._reject_nan()

        full_step = math.sqrt(2 * self.max_kl / shs) * cg.x
        result = backtracking_line_search(
            self.params, full_step, lambda: self._surrogate(data, old_log_probs, adv)[:2],
            surrogate_before=surrogate.item(), expected_improvement=float(grad.dot(full_step)),
            max_kl=self.max_kl, backtrack_coeff=self.backtrack_coeff, max_backtracks=self.max_backtracks,
            accept_ratio=self.accept_ratio)
        self.nan_streak = 0
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
        metrics["trust_region/nan_rejections"] = float(self.nan_total)
        shift = policy_shift(self.actor, data)
        metrics["losses/approx_kl"] = shift["losses/approx_kl"]
        if self.actor.continuous:
            metrics["policy/std"] = float(self.actor.log_std.detach().exp().mean())
        return metrics

    def _reject_nan(self) -> dict[str, float]:
        self.nan_streak += 1
        self.nan_total += 1
        if self.nan_streak >= self.max_nan_updates:
            raise FloatingPointError(
                f"TRPO: {self.nan_streak} consecutive updates had a non-finite loss or step "
                f"(last parameters finite: {bool(torch.isfinite(get_flat_params(self.params)).all())}); "
                "check the environment's rewards/observations or lower algo.max_kl")
        return {"trust_region/line_search_accepted": 0.0, "trust_region/kl": 0.0,
                "trust_region/nan_rejections": float(self.nan_total)}

    def state_dict(self) -> dict:
        return {"nan_streak": self.nan_streak, "nan_total": self.nan_total, "rejected_total": self.rejected_total}

    def load_state_dict(self, state: dict) -> None:
        self.nan_streak, self.nan_total = int(state["nan_streak"]), int(state["nan_total"])
        self.rejected_total = int(state["rejected_total"])
