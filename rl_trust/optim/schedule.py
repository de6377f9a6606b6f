"""The learning-rate schedule the policy updaters and the critic share."""

from __future__ import annotations

import torch


def linear_decay(optimizer: torch.optim.Optimizer, total_updates: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Every group's lr annealed linearly from its initial value to zero over ``total_updates`` steps
    (for arTuRO the lr is the KL bound, so the bound is annealed)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: max(1.0 - k / max(total_updates, 1), 0.0))


def load_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, state: dict) -> None:
    """Restore ``scheduler`` from a checkpoint and set each group's lr from its own schedule at the restored
    step: the checkpoint's lr when the horizon is unchanged (the same product), the re-planned one when a
    resumed run was extended (its ``total_updates`` grew)."""
    scheduler.load_state_dict(state)
    for group, base, schedule in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas,
                                     strict=True):
        group["lr"] = base * schedule(scheduler.last_epoch)
