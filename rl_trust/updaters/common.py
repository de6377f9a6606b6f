"""The policy losses the updaters share, each written once with its gradient beside it.

A :class:`Loss` is a scalar of the distribution's parameters on a batch and its gradient with respect
to them; losses combine linearly (``-surrogate - c * entropy + beta * kl``), and the actor turns the
gradient into parameter gradients through its network's hand-written backward. So an updater writes
its loss once, as a combination of these, and has no derivative code of its own. ``value`` is built
from differentiable torch ops: ``tests/test_updaters.py`` checks ``grad`` against autograd of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rl_trust.batch import RolloutBatch, minibatch_indices
from rl_trust.policies import Actor, Params


@dataclass(frozen=True)
class Loss:
    value: Tensor  # a scalar
    grad: Params  # d value / d distribution parameters, per sample

    def __add__(self, other: Loss) -> Loss:
        return Loss(self.value + other.value, tuple(a + b for a, b in zip(self.grad, other.grad, strict=True)))

    def __mul__(self, c: float) -> Loss:
        return Loss(self.value * c, tuple(g * c for g in self.grad))

    __rmul__ = __mul__

    def __neg__(self) -> Loss:
        return self * -1.0

    def __sub__(self, other: Loss) -> Loss:
        return self + -other


@dataclass(frozen=True)
class PolicyData:
    """The flat ``[T*N]`` tensors a policy update reads, with the old policy's parameters and log-probs."""

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    advantages: Tensor
    old_params: Params

    def __getitem__(self, idx: Tensor) -> PolicyData:
        return PolicyData(self.obs[idx], self.actions[idx], self.log_probs[idx], self.advantages[idx],
                          tuple(p[idx] for p in self.old_params))

    def __len__(self) -> int:
        return len(self.obs)


@torch.no_grad()
def policy_data(batch: RolloutBatch, actor: Actor) -> PolicyData:
    """The batch flattened, with the policy's parameters and log-probabilities before the update (the
    behaviour policy's: the rollout sampled from this same network)."""
    flat = batch.flat()
    # Cloned: a Gaussian's log-std comes out as a view of the parameter, which the update changes in place.
    old_params = tuple(p.clone() for p in actor(flat["obs"]))
    return PolicyData(flat["obs"], flat["actions"], actor.dist.log_prob(old_params, flat["actions"]),
                      flat["advantages"], old_params)


def normalize(x: Tensor, eps: float = 1e-8) -> Tensor:
    return (x - x.mean()) / (x.std() + eps) if x.numel() > 1 else x - x.mean()


def approx_kl(log_ratio: Tensor) -> Tensor:
    """The k3 estimator of KL(old || new), unbiased and low-variance (http://joschu.net/blog/kl-approx.html)."""
    return ((log_ratio.exp() - 1) - log_ratio).mean()


def surrogate(actor: Actor, params: Params, data: PolicyData, *, clip_range: float | None = None,
              normalize_advantages: bool = False) -> tuple[Loss, dict[str, Tensor]]:
    """The importance-sampled surrogate, mean of r·A, or of min(r·A, clip(r, 1 ± ε)·A) with a clip range
    (PPO, arXiv 1707.06347, eq. 7), and detached diagnostics (``approx_kl``, ``losses/clipfrac``)."""
    log_ratio = actor.dist.log_prob(params, data.actions) - data.log_probs
    ratio = log_ratio.exp()
    adv = normalize(data.advantages) if normalize_advantages else data.advantages
    objective, d_objective = ratio * adv, adv  # d objective / d ratio
    info = {"approx_kl": approx_kl(log_ratio.detach())}
    if clip_range is not None:
        clipped = ratio.clamp(1 - clip_range, 1 + clip_range) * adv
        inside = ((ratio >= 1 - clip_range) & (ratio <= 1 + clip_range)).to(adv.dtype)
        # torch.min's gradient: to the smaller branch, half to each on a tie.
        plain = torch.where(objective < clipped, 1.0, torch.where(objective > clipped, 0.0, 0.5)).detach()
        d_objective = adv * (plain + (1 - plain) * inside)
        objective = torch.minimum(objective, clipped)
        info["losses/clipfrac"] = ((ratio.detach() - 1).abs() > clip_range).float().mean()
    value = objective.mean()
    info["losses/policy"] = -value.detach()
    weight = (d_objective * ratio / len(ratio)).detach().unsqueeze(-1)  # d value / d log-prob, per sample
    return Loss(value, tuple(weight * g for g in actor.dist.log_prob_grad(params, data.actions))), info


def entropy(actor: Actor, params: Params) -> Loss:
    """The mean entropy."""
    n = len(params[0])
    return Loss(actor.dist.entropy(params).mean(), tuple(g / n for g in actor.dist.entropy_grad(params)))


def mean_kl(actor: Actor, old_params: Params, params: Params) -> Loss:
    """The mean KL(π_old ‖ π), analytic."""
    n = len(params[0])
    return Loss(actor.dist.kl(old_params, params).mean(), tuple(g / n for g in actor.dist.kl_grad(old_params, params)))


# A minibatch loss: (loss to minimise, detached diagnostics incl. "approx_kl"), given the current
# distribution parameters on the minibatch.
LossFn = Callable[[Params, PolicyData], tuple[Loss, dict[str, Tensor]]]


def minibatch_epochs(actor: Actor, data: PolicyData, loss_fn: LossFn, optimizer: torch.optim.Optimizer, *,
                     epochs: int, minibatch_size: int, max_grad_norm: float | None, target_kl: float | None,
                     generator: torch.Generator) -> dict[str, float]:
    """``epochs`` shuffled passes of minibatch steps on ``loss_fn``, minibatches drawn from ``generator``.

    With ``target_kl`` the update stops as soon as a minibatch's approximate KL exceeds
    1.5 x target_kl (as SB3 does), before that minibatch's step is applied.
    Returns the means of the diagnostics over the minibatches that were applied.
    """
    params_list = list(actor.parameters())
    sums: dict[str, Tensor] = {}
    steps, stopped = 0, False
    for _ in range(epochs):
        for idx in minibatch_indices(len(data), minibatch_size, generator):
            mb = data[idx]
            params, cache = actor.forward_cached(mb.obs)
            loss, info = loss_fn(params, mb)
            if target_kl is not None and info["approx_kl"] > 1.5 * target_kl:
                stopped = True
                break
            for p, g in zip(params_list, actor.gradients(cache, loss.grad), strict=True):
                p.grad = g
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(params_list, max_grad_norm)
            optimizer.step()
            for k, v in info.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
        if stopped:
            break
    out = {k: float(v) / max(steps, 1) for k, v in sums.items()}
    out.pop("approx_kl", None)  # the whole batch's, after the update, comes from policy_shift
    return out | {"minibatch_steps": float(steps), "early_stopped": float(stopped)}


@torch.no_grad()
def policy_shift(actor: Actor, data: PolicyData) -> dict[str, float]:
    """How far the update moved the policy over the whole batch: k3 estimate and analytic mean KL."""
    params = actor(data.obs)
    out = {"losses/approx_kl": float(approx_kl(actor.dist.log_prob(params, data.actions) - data.log_probs)),
           "trust_region/kl": float(actor.dist.kl(data.old_params, params).mean())}
    if actor.continuous:
        out["policy/std"] = float(actor.log_std.exp().mean())
    return out

