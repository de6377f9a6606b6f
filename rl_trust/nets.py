"""The MLP every network here is: one forward and one backward, run on torch tensors or numpy arrays.

Policies and value functions are ``Linear (activation Linear)*``. The forward, the reverse-mode
backward and the forward-mode product below are each written once with operators that numpy arrays
and torch tensors share (``xp`` is ``numpy`` or ``torch``), so the rollout's numpy query, the
autograd forward, and the hand-written gradients of the minibatch steps and Fisher products compute
the same network. Hand-written gradients skip autograd's per-node bookkeeping, which dominates the
small minibatches of the updaters and the critic; ``tests/test_nets.py`` checks them against autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Activation:
    fn: Callable[[Any, Any], Any]  # (x, xp) -> activation(x)
    grad: Callable[[Any, Any], Any]  # (y, xp) -> activation'(x), from the output y = activation(x)


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(lambda x, xp: xp.tanh(x), lambda y, xp: 1 - y * y),
    "relu": Activation(lambda x, xp: x * (x > 0), lambda y, xp: y > 0),
    # ELU(alpha=1): x for x > 0, exp(x) - 1 otherwise; its derivative there is exp(x) = y + 1.
    "elu": Activation(lambda x, xp: xp.where(x > 0, x, xp.expm1(x)), lambda y, xp: xp.where(y > 0, 1.0, y + 1.0)),
}


def forward(x, weights: list[tuple[Any, Any]], act: Activation, xp, rowwise: bool = False) -> tuple[Any, list[Any]]:
    """The network's output for ``x`` [B, in] and each layer's input (what :func:`backward` needs).
    ``weights``: (weight [out, in], bias [out]) per layer. ``rowwise``: each row's product taken alone (a
    stacked matmul), so a row's output is the same bits whatever batch it is in (BLAS picks its kernels by
    the batch's size, and their roundings differ)."""
    inputs = [x]
    h = x
    for i, (w, b) in enumerate(weights):
        h = xp.matmul(h[:, None, :], w.T)[:, 0] if rowwise else h @ w.T
        h += b
        if i < len(weights) - 1:
            h = act.fn(h, xp)
            inputs.append(h)
    return h, inputs


def derivatives(inputs: list[Any], act: Activation, xp) -> list[Any]:
    """Each hidden activation's derivative at the point :func:`forward` computed ``inputs`` for."""
    return [act.grad(h, xp) for h in inputs[1:]]


# backward and jvp take the derivatives precomputed: many products share one point (CG's Fisher products).
# Their in-place updates are on fresh arrays only; they run without autograd.
def backward(grad_out, weights: list[tuple[Any, Any]], derivs: list[Any], inputs: list[Any]) -> list[Any]:
    """d(loss)/d(weight), d(loss)/d(bias) of each layer given ``grad_out`` = d(loss)/d(output)."""
    grads: list[Any] = []
    g = grad_out
    for i in range(len(weights) - 1, -1, -1):
        grads += [g.sum(0), g.T @ inputs[i]]  # reversed below: (weight, bias) per layer
        if i > 0:
            g = g @ weights[i][0]
            g *= derivs[i - 1]
    return grads[::-1]


def jvp(tangents: list[tuple[Any, Any]], weights: list[tuple[Any, Any]], derivs: list[Any], inputs: list[Any]):
    """d(output)/d(weights) · ``tangents`` (a (weight, bias) tangent per layer) at the point whose
    layer inputs are ``inputs``: forward-mode differentiation with the input held fixed."""
    dh = None
    for i, ((w, _), (dw, db)) in enumerate(zip(weights, tangents, strict=True)):
        dz = inputs[i] @ dw.T
        dz += db
        if dh is not None:
            dz += dh @ w.T
        if i == len(weights) - 1:
            return dz
        dz *= derivs[i]
        dh = dz


@dataclass
class Cache:
    """What a no-grad :meth:`MLP.forward_cached` keeps for :meth:`MLP.backward` and :meth:`MLP.jvp`."""

    inputs: list[Tensor]
    derivs: list[Tensor]


class MLP(nn.Module):
    """``Linear (activation Linear)*`` with orthogonal init (gain sqrt(2) hidden, ``out_gain`` last) and
    zero biases when ``ortho_init``; torch's default init otherwise."""

    def __init__(self, sizes: list[int], activation: str, out_gain: float = 1.0, ortho_init: bool = True):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.layers = nn.ModuleList()
        for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):  # layer by layer: a seed's weights
            linear = nn.Linear(i, o)                                           # do not depend on the depth
            if ortho_init:
                nn.init.orthogonal_(linear.weight, gain=out_gain if k == len(sizes) - 2 else math.sqrt(2))
                nn.init.zeros_(linear.bias)
            self.layers.append(linear)

    def weights(self) -> list[tuple[Tensor, Tensor]]:
        return [(linear.weight, linear.bias) for linear in self.layers]

    def forward(self, x: Tensor) -> Tensor:
        """The output for ``x`` [..., in] (autograd-differentiable)."""
        out, _ = forward(x.reshape(-1, x.shape[-1]), self.weights(), self.act, torch)
        return out.reshape(*x.shape[:-1], out.shape[-1])

    @torch.no_grad()
    def forward_cached(self, x: Tensor) -> tuple[Tensor, Cache]:
        """The output for ``x`` [B, in] without an autograd graph, and what :meth:`backward` needs."""
        out, inputs = forward(x, self.weights(), self.act, torch)
        return out, Cache(inputs, derivatives(inputs, self.act, torch))

    @torch.no_grad()
    def backward(self, cache: Cache, grad_out: Tensor) -> list[Tensor]:
        """d(loss)/d(parameter) for each of :meth:`parameters` (in order) given d(loss)/d(output)."""
        return backward(grad_out, self.weights(), cache.derivs, cache.inputs)

    @torch.no_grad()
    def jvp(self, cache: Cache, tangents: list[Tensor]) -> Tensor:
        """d(output)/d(parameters) · ``tangents`` (one per parameter, in order) at the cached point."""
        return jvp(list(zip(tangents[::2], tangents[1::2], strict=True)), self.weights(), cache.derivs, cache.inputs)

    def numpy_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight, bias) per layer as numpy views of the (CPU) parameters: optimizers write in place,
        so the views stay current."""
        return [(w.detach().numpy(), b.detach().numpy()) for w, b in self.weights()]

    def numpy_forward(self, x: np.ndarray, weights: list[tuple[np.ndarray, np.ndarray]],
                      rowwise: bool = False) -> tuple[np.ndarray, list]:
        """:meth:`forward` in numpy (for a handful of observations numpy's per-call cost is a fraction
        of torch's): the output and each layer's input (``rowwise``: see :func:`forward`)."""
        return forward(x, weights, self.act, np, rowwise)

    def numpy_backward(self, grad_out: np.ndarray, weights: list, inputs: list) -> list[np.ndarray]:
        return backward(grad_out, weights, derivatives(inputs, self.act, np), inputs)
