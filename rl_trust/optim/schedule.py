"""The learning-rate schedule the policy updaters and the critic share."""

from __future__ import annotations

import torch


def linear_decay(optimizer: torch.optim.Optimizer, total_updates: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Every group's lr annealed linearly from its initial value to zero over ``total_updates`` steps
    (for arTuRO the lr is the KL bound, so the bound is annealed)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: max(1.0 - k / max(total_updates, 1), 0.0))
