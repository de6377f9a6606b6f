"""The interface every policy updater implements (TRPO, PPO-clip, KL-penalty)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rl_trust.batch import RolloutBatch


@runtime_checkable
class Updater(Protocol):
    """Improves the policy from one batch that carries advantages.

    ``update`` returns metrics (TensorBoard tags as keys) and logs nothing itself; the state dict
    holds everything a resumed run needs (optimizer moments, adaptive coefficients, counters).
    """

    def update(self, batch: RolloutBatch) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...
