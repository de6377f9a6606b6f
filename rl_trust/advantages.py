"""Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438) as a pure function."""

from __future__ import annotations

import torch
from torch import Tensor


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    *,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Advantages and returns of ``[T, N]`` rollouts.

    ``next_values[t]`` is V of the observation step ``t`` really reached (the final observation
    where an episode ended). ``terminated`` cuts the bootstrap, ``truncated`` keeps it (a time
    limit is not a property of the state: SB3 issue 633, CleanRL issue 198); either ends the
    λ-trace, since step ``t + 1`` belongs to another episode. ``returns = advantages + values``.
    """
    shape = rewards.shape
    if rewards.dim() != 2:
        raise ValueError(f"gae expects [T, N] tensors, got rewards of shape {tuple(shape)}")
    for name, t in (("values", values), ("next_values", next_values), ("terminated", terminated),
                    ("truncated", truncated)):
        if t.shape != shape:
            raise ValueError(f"gae: {name} has shape {tuple(t.shape)}, rewards {tuple(shape)}")
    terminated, truncated = terminated.bool(), truncated.bool()
    not_terminal = (~terminated).to(values.dtype)
    continues = (~(terminated | truncated)).to(values.dtype)
    deltas = rewards + gamma * next_values * not_terminal - values
    decay = gamma * lam * continues
    advantages = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[0])
    for t in range(shape[0] - 1, -1, -1):
        running = deltas[t] + decay[t] * running
        advantages[t] = running
    return advantages, advantages + values
