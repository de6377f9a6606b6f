"""Non-finite updates: detected, undone, counted, and the run stopped when they keep coming."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from rl_trust.errors import DivergedError


class Guard:
    """Wraps one kind of update (the policy's, the critic's): :meth:`begin` snapshots the state of
    ``owners`` (objects with ``state_dict``/``load_state_dict``), :meth:`end` checks the result. An update
    that raised ``FloatingPointError``, left any floating-point value of the owners' state non-finite
    (parameters, optimizer moments, β, ...) or reported a non-finite metric (any but those in
    ``unchecked``: a policy with finite but huge parameters shows itself in its KL or std) is undone (the
    snapshot restored) and counted in ``guard/<name>_rejected``; ``patience`` such updates in a row raise
    :class:`DivergedError` with ``hint`` (the settings that most likely caused it).
    """

    def __init__(self, name: str, owners: list, hint: str, patience: int, unchecked: tuple[str, ...] = ()):
        self.name, self.owners, self.hint, self.patience, self.unchecked = name, owners, hint, patience, unchecked
        self.streak, self.total = 0, 0
        self._saved: list[dict] | None = None

    def begin(self) -> None:
        self._saved = copy.deepcopy([o.state_dict() for o in self.owners])

    def end(self, metrics: dict[str, float] | None, step: int) -> dict[str, float]:
        """``metrics``: the update's, or None when it raised ``FloatingPointError``. Returns them with the
        rejection count."""
        bad = metrics is None or self._nonfinite(metrics) or not all(_finite(o.state_dict()) for o in self.owners)
        if bad:
            for owner, state in zip(self.owners, self._saved, strict=True):
                owner.load_state_dict(state)
            self.streak += 1
            self.total += 1
            if self.streak >= self.patience:
                raise DivergedError(
                    f"the {self.name} update produced non-finite values in {self.streak} consecutive iterations "
                    f"(each undone; the last at step {step}): most likely {self.hint}")
        else:
            self.streak = 0
        self._saved = None
        return (metrics or {}) | {f"guard/{self.name}_rejected": float(self.total)}

    def _nonfinite(self, metrics: dict[str, float]) -> bool:
        return any(k not in self.unchecked and isinstance(v, (int, float)) and not math.isfinite(v)
                   for k, v in metrics.items())

    def state_dict(self) -> dict:
        return {"streak": self.streak, "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.streak, self.total = int(state["streak"]), int(state["total"])


def _finite(state) -> bool:
    """Every floating-point number in a (nested) state dict is finite."""
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, np.ndarray):
        return state.dtype.kind != "f" or bool(np.isfinite(state).all())
    if isinstance(state, float):
        return math.isfinite(state)
    if isinstance(state, dict):
        return all(_finite(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return all(_finite(v) for v in state)
    return True
