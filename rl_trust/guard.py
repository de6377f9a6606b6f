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
        self._saved = [_copy(o.state_dict()) for o in self.owners]

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


def _copy(state):
    """A copy of a (nested) state dict that no later update can change: its tensors and arrays cloned
    (``copy.deepcopy`` does the same at several times the cost, on every iteration)."""
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, np.ndarray):
        return state.copy()
    if isinstance(state, dict):
        return {k: _copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_copy(v) for v in state)
    return copy.copy(state)


def _finite(state) -> bool:
    """Every floating-point number in a (nested) state dict is finite: one check per device."""
    tensors: dict[torch.device, list[torch.Tensor]] = {}
    numbers: list[float] = []
    _gather(state, tensors, numbers)
    return all(math.isfinite(x) for x in numbers) and all(
        bool(torch.isfinite(torch.cat([t.reshape(-1) for t in ts])).all()) for ts in tensors.values())


def _gather(state, tensors: dict, numbers: list) -> None:
    if isinstance(state, torch.Tensor):
        if state.is_floating_point():
            tensors.setdefault(state.device, []).append(state.float())
    elif isinstance(state, np.ndarray):
        if state.dtype.kind == "f":
            tensors.setdefault(torch.device("cpu"), []).append(torch.from_numpy(state).float())
    elif isinstance(state, float):
        numbers.append(state)
    elif isinstance(state, dict):
        for v in state.values():
            _gather(v, tensors, numbers)
    elif isinstance(state, (list, tuple)):
        for v in state:
            _gather(v, tensors, numbers)
