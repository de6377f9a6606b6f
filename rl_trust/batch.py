"""RolloutBatch: the one typed object a rollout travels in, from the collector to the updaters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RolloutBatch:
    """``T`` steps of ``N`` environments; every tensor is ``[T, N, ...]``.

    ``next_obs[t]`` is the observation step ``t`` really reached: where step ``t`` ended an
    episode it is the final observation, never the reset one. ``obs``/``next_obs`` are already
    normalised (with the statistics current at that step) and ``rewards`` already scaled.
    Derived fields (values, advantages, returns) are filled with :func:`dataclasses.replace`.
    """

    obs: Tensor
    next_obs: Tensor
    actions: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    values: Tensor | None = None
    next_values: Tensor | None = None
    advantages: Tensor | None = None
    returns: Tensor | None = None

    @property
    def num_steps(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_envs(self) -> int:
        return self.rewards.shape[1]

    def __len__(self) -> int:
        return self.rewards.numel()

    def replace(self, **changes) -> RolloutBatch:
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> RolloutBatch:
        return RolloutBatch(**{k: (None if v is None else v.to(device)) for k, v in self._tensors().items()})

    def flat(self) -> dict[str, Tensor]:
        """The filled fields with the ``[T, N]`` dimensions merged into one sample dimension."""
        return {k: v.reshape(len(self), *v.shape[2:]) for k, v in self._tensors().items() if v is not None}

    def _tensors(self) -> dict[str, Tensor | None]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def minibatch_indices(n: int, minibatch_size: int, generator: torch.Generator) -> list[Tensor]:
    """A random permutation of ``range(n)`` cut into minibatches of ``minibatch_size`` (0: one of all),
    which must divide ``n`` (the config checks it): no sample is silently dropped."""
    if minibatch_size and n % minibatch_size:
        raise ValueError(f"minibatch_size={minibatch_size} does not divide the batch size {n}")
    return list(torch.randperm(n, generator=generator).split(minibatch_size or n))
