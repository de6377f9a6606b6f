"""Pieces the first-order updaters (PPO-clip, KL-penalty) share, as plain functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rl_trust.batch import RolloutBatch, minibatch_indices
from rl_trust.policies import Actor


@dataclass(frozen=True)
class PolicyData:
    """The flat ``[T*N]`` tensors a policy update reads, with the old policy's parameters."""

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    advantages: Tensor
    old_params: tuple[Tensor, ...]

    def __getitem__(self, idx: Tensor) -> PolicyData:
        return PolicyData(self.obs[idx], self.actions[idx], self.log_probs[idx], self.advantages[idx],
                          tuple(p[idx] for p in self.old_params))


def policy_data(batch: RolloutBatch, actor: Actor) -> PolicyData:
    flat = batch.flat()
    with torch.no_grad():
        old_params = tuple(p.detach() for p in actor(flat["obs"]))
        # The rollout's log-probabilities come from its numpy copy of the policy; recomputed here with
        # the formulas the update differentiates, the first ratio is exactly 1 rather than 1 ± rounding.
        old_log_probs = actor.dist.log_prob(old_params, flat["actions"])
    return PolicyData(flat["obs"], flat["actions"], old_log_probs, flat["advantages"], old_params)


def normalize(x: Tensor, eps: float = 1e-8) -> Tensor:
    return (x - x.mean()) / (x.std() + eps) if x.numel() > 1 else x - x.mean()


def approx_kl(log_ratio: Tensor) -> Tensor:
    """The k3 estimator of KL(old || new), unbiased and low-variance (http://joschu.net/blog/kl-approx.html)."""
    return ((log_ratio.exp() - 1) - log_ratio).mean()


def annealed_lr(optimizer: torch.optim.Optimizer, base_lr: float, done: int, total: int) -> float:
    """Set and return ``base_lr * (1 - done/total)`` (linear annealing to zero over the run)."""
    lr = base_lr * max(1.0 - done / total, 0.0) if total > 0 else base_lr
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


@dataclass(frozen=True)
class Surrogate:
    params: tuple[Tensor, ...]  # the current policy's distribution parameters on the minibatch
    surrogate: Tensor  # mean of r·A, or of min(r·A, clip(r, 1 ± ε)·A) with a clip range
    entropy: Tensor
    info: dict[str, Tensor]  # detached diagnostics: losses/policy, losses/entropy, approx_kl (, losses/clipfrac)


def surrogate_objective(actor: Actor, mb: PolicyData, *, clip_range: float | None,
                        normalize_advantages: bool, hand_grad: bool = False) -> Surrogate:
    """The importance-sampled surrogate PPO-clip and the KL penalty share (clipped when ``clip_range``).

    ``hand_grad``: the actor's network differentiated by hand (minibatch steps; not twice differentiable).
    """
    params = actor(mb.obs, hand_grad=hand_grad)
    log_ratio = actor.dist.log_prob(params, mb.actions) - mb.log_probs
    ratio = log_ratio.exp()
    adv = normalize(mb.advantages) if normalize_advantages else mb.advantages
    objective = ratio * adv
    if clip_range is not None:
        objective = torch.min(objective, ratio.clamp(1 - clip_range, 1 + clip_range) * adv)
    surrogate = objective.mean()
    entropy = actor.dist.entropy(params).mean()
    with torch.no_grad():
        info = {"losses/policy": -surrogate.detach(), "losses/entropy": entropy.detach(),
                "approx_kl": approx_kl(log_ratio)}
        if clip_range is not None:
            info["losses/clipfrac"] = ((ratio - 1).abs() > clip_range).float().mean()
    return Surrogate(params, surrogate, entropy, info)


# A minibatch loss: (loss to minimise, diagnostics as detached scalars incl. "approx_kl").
LossFn = Callable[[PolicyData], tuple[Tensor, dict[str, Tensor]]]


def minibatch_epochs(data: PolicyData, loss_fn: LossFn, optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                     *, epochs: int, minibatch_size: int, max_grad_norm: float | None,
                     target_kl: float | None) -> dict[str, float]:
    """``epochs`` shuffled passes of minibatch SGD on ``loss_fn``.

    With ``target_kl`` the update stops as soon as a minibatch's approximate KL exceeds
    1.5 x target_kl (as SB3 does), before that minibatch's step is applied.
    Returns the means of the diagnostics over the minibatches that were applied.
    """
    sums: dict[str, Tensor] = {}
    steps, stopped = 0, False
    for _ in range(epochs):
        for idx in minibatch_indices(len(data.obs), minibatch_size):
            loss, info = loss_fn(data[idx])
            if target_kl is not None and info["approx_kl"] > 1.5 * target_kl:
                stopped = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            for k, v in info.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
        if stopped:
            break
    out = {k: float(v) / max(steps, 1) for k, v in sums.items()}
    out["minibatch_steps"] = float(steps)
    out["early_stopped"] = float(stopped)
    return out


@torch.no_grad()
def policy_shift(actor: Actor, data: PolicyData) -> dict[str, float]:
    """How far the update moved the policy over the whole batch: k3 estimate and analytic mean KL."""
    params = actor(data.obs)
    log_ratio = actor.dist.log_prob(params, data.actions) - data.log_probs
    return {"losses/approx_kl": float(approx_kl(log_ratio)),
            "trust_region/kl": float(actor.dist.kl(data.old_params, params).mean())}
