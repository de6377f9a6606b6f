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


def policy_data(batch: RolloutBatch, actor: Actor, hand_grad: bool = False) -> PolicyData:
    """The batch flattened, with the old policy's parameters and log-probabilities; ``hand_grad``:
    computed with the same forward as the minibatch steps that use :func:`actor_loss_and_grad`."""
    flat = batch.flat()
    with torch.no_grad():
        old_params = tuple(p.detach() for p in actor(flat["obs"], hand_grad=hand_grad))
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


@torch.no_grad()
def gaussian_loss_and_grad(actor: Actor, mb: PolicyData, *, clip_range: float | None, normalize_advantages: bool,
                           ent_coef: float, kl_coef: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """``-surrogate - ent_coef·H (+ kl_coef·KL(old ‖ new))`` on a Gaussian policy's minibatch, its gradient
    written into the actor's ``.grad`` by hand (the network through :class:`~rl_trust.mlp_grad.MLPGrad`).

    The same loss and the same gradient as building it with autograd from :func:`surrogate_objective`
    (``tests/test_kl_penalty.py`` compares them, ties of ``min`` and the clip's bounds included), without
    autograd's per-node cost, which dominates a 64-sample minibatch step. Returns a detached loss.
    """
    manual = actor._mlp_grad
    mean, inputs = manual.forward(mb.obs)
    log_std = actor.log_std.expand_as(mean)
    params = (mean, log_std)
    log_prob = actor.dist.log_prob(params, mb.actions)  # the formula policy_data's old log-probs used
    inv_std = torch.exp(-log_std)
    z = (mb.actions - mean) * inv_std
    log_ratio = log_prob - mb.log_probs
    ratio = log_ratio.exp()
    adv = normalize(mb.advantages) if normalize_advantages else mb.advantages
    objective = ratio * adv
    d_obj = adv  # d objective / d ratio
    if clip_range is not None:
        clipped = ratio.clamp(1 - clip_range, 1 + clip_range)
        obj_clip = clipped * adv
        inside = ((ratio >= 1 - clip_range) & (ratio <= 1 + clip_range)).to(adv.dtype)
        # torch.min's gradient: to the smaller branch, half to each on a tie.
        w_plain = torch.where(objective < obj_clip, 1.0, torch.where(objective > obj_clip, 0.0, 0.5))
        d_obj = adv * (w_plain + (1 - w_plain) * inside)
        objective = torch.minimum(objective, obj_clip)
    n = len(ratio)
    surrogate = objective.mean()
    entropy = actor.dist.entropy(params).mean()
    g_logp = (-d_obj * ratio / n).unsqueeze(-1)  # d loss / d log-prob, per sample
    grad_mean = g_logp * z * inv_std
    grad_log_std = (g_logp * (z * z - 1)).sum(0) - ent_coef
    loss = -surrogate - ent_coef * entropy
    info = {"losses/policy": -surrogate, "losses/entropy": entropy, "approx_kl": approx_kl(log_ratio)}
    if clip_range is not None:
        info["losses/clipfrac"] = ((ratio - 1).abs() > clip_range).float().mean()
    if kl_coef is not None:
        old_mean, old_log_std = mb.old_params
        kl = actor.dist.kl(mb.old_params, params).mean()
        inv_var = torch.exp(-2 * log_std)
        grad_mean += (kl_coef / n) * (mean - old_mean) * inv_var
        grad_log_std += (kl_coef / n) * (1 - torch.exp(2 * (old_log_std - log_std))
                                         - (old_mean - mean).pow(2) * inv_var).sum(0)
        loss = loss + kl_coef * kl
        info["kl"] = kl
    manual.backward(inputs, grad_mean)
    if actor.log_std.grad is None:
        actor.log_std.grad = grad_log_std
    else:
        actor.log_std.grad.add_(grad_log_std)
    return loss, info


def hand_grad_ok(actor: Actor) -> bool:
    """Whether :func:`gaussian_loss_and_grad` applies (a Gaussian policy on a plain MLP)."""
    return actor.continuous and actor._mlp_grad is not None


# A minibatch loss: (loss to minimise, diagnostics as detached scalars incl. "approx_kl"). A loss that
# does not require grad has written its gradient into the parameters' .grad itself.
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
            optimizer.zero_grad(set_to_none=True)
            loss, info = loss_fn(data[idx])
            if target_kl is not None and info["approx_kl"] > 1.5 * target_kl:
                stopped = True
                break
            if loss.requires_grad:
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
