"""Muon for a network's weight matrices and Adam for its other parameters, as one optimizer.

Muon (Jordan et al. 2024) orthogonalises each 2-D weight's momentum by Newton-Schulz iterations, so
a step's spectral size is set by the learning rate whatever the gradient's scale. It is meant for
matrices: biases, and weight matrices with a dimension of 1 (the critic's value head, 1 x 64, whose
orthogonalised step would be a unit-norm step whatever its gradient), go to Adam. (Muon's authors also
keep a network's first layer on Adam; here the first layer's input is the normalised observation and
it stays on Muon.) Both steps are torch's own
(``torch.optim.Muon``, ``torch.optim.Adam``): this class only routes the parameters and keeps the two
inner optimizers' groups and state in its own, so schedulers, ``state_dict`` and checkpoints see one
optimizer.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class MuonAdam(torch.optim.Optimizer):
    """``lr``: Muon's, for the 2-D weights; ``adam_lr``: Adam's, for the rest (``adam_lr`` follows
    ``lr``'s schedule: a scheduler scales both groups alike)."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 0.02, adam_lr: float = 1e-3,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5, weight_decay: float = 0.0,
                 adam_betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8):
        if not hasattr(torch.optim, "Muon"):
            raise ValueError(f"torch {torch.__version__} has no torch.optim.Muon (torch >= 2.9)")
        for name, value in (("lr", lr), ("adam_lr", adam_lr)):
            if not value > 0:
                raise ValueError(f"{name}={value} must be > 0")
        params = list(params)
        matrices = [p for p in params if p.ndim == 2 and min(p.shape) > 1]
        others = [p for p in params if not (p.ndim == 2 and min(p.shape) > 1)]
        groups = [g for g in ({"params": matrices, "lr": lr, "muon": True},
                              {"params": others, "lr": adam_lr, "muon": False}) if g["params"]]
        super().__init__(groups, {"lr": lr})
        # The inner optimizers hold these very group dicts (a scheduler's lr reaches them) and this state.
        self._inner = []
        for group in self.param_groups:
            if group["muon"]:
                inner = torch.optim.Muon([group], lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                         weight_decay=weight_decay)
            else:
                inner = torch.optim.Adam([group], lr=adam_lr, betas=adam_betas, eps=adam_eps)
            self._inner.append(inner)
        self._link()
        self.register_load_state_dict_post_hook(lambda optimizer: optimizer._link())

    def _link(self) -> None:
        """Point the inner optimizers at this one's groups and state (``load_state_dict`` replaces both)."""
        for inner, group in zip(self._inner, self.param_groups, strict=True):
            inner.param_groups = [group]
            inner.state = self.state

    def step(self, closure=None):
        loss = self._inner[0].step(closure)  # torch's own closure handling, once
        for inner in self._inner[1:]:
            inner.step()
        return loss
