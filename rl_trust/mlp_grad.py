"""Forward and backward of a plain MLP written out by hand, for the many small minibatch steps.

A value-network minibatch step (128 samples, 64x64) spends most of its time in autograd's per-node
bookkeeping and in torch's CPU ``tanh`` kernel (measured on the development machine at 3.3 ns per
element against 0.55 for ``sigmoid``; docs/benchmarks.md). For an ``nn.Sequential`` of ``Linear``
layers and elementwise activations the gradient is a handful of matrix products, written here with
no autograd graph; ``tanh`` is computed as ``2 sigmoid(2x) - 1``. The parameters stay those of the
module: :meth:`MLPGrad.backward` accumulates into their ``.grad`` like ``loss.backward()``.
``tests/test_mlp_grad.py`` checks outputs and gradients against autograd.

:meth:`MLPGrad.numpy_loss_grad` is the same computation in numpy on views of the parameters, for
the critic's minibatch steps on the CPU: for a 128-sample minibatch numpy's per-call overhead is a
fraction of torch's, and its ``tanh`` is as fast as a ``sigmoid``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

_ACTIVATIONS = (nn.Tanh, nn.ReLU, nn.ELU)


class MLPGrad:
    """Hand-written forward/backward for ``Linear (activation Linear)*`` (activations: Tanh, ReLU, ELU)."""

    def __init__(self, net: nn.Sequential):
        if not self.supports(net):
            raise ValueError(f"MLPGrad needs Linear (Tanh|ReLU|ELU Linear)*, got {net}")
        self.linears: list[nn.Linear] = [m for m in net if isinstance(m, nn.Linear)]
        self.acts: list[type[nn.Module]] = [type(m) for m in net if not isinstance(m, nn.Linear)]

    @staticmethod
    def supports(net: nn.Module) -> bool:
        if not isinstance(net, nn.Sequential) or len(net) % 2 == 0:
            return False
        for i, m in enumerate(net):
            want = nn.Linear if i % 2 == 0 else _ACTIVATIONS
            if not isinstance(m, want) or (isinstance(m, nn.ELU) and m.alpha != 1.0):
                return False
        return all(m.bias is not None for m in net if isinstance(m, nn.Linear))

    @torch.no_grad()
    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The output and what :meth:`backward` needs (each layer's input). ``x``: [..., in_features]."""
        lead = x.shape[:-1]
        h = x.reshape(-1, x.shape[-1])
        inputs = [h]
        for i, lin in enumerate(self.linears):
            h = torch.addmm(lin.bias, h, lin.weight.t())
            if i < len(self.acts):
                act = self.acts[i]
                if act is nn.Tanh:
                    h = torch.sigmoid(h.mul_(2.0), out=h).mul_(2.0).sub_(1.0)
                elif act is nn.ReLU:
                    h = h.clamp_(min=0.0)
                else:  # ELU(alpha=1): x for x > 0, exp(x) - 1 otherwise
                    h = torch.where(h > 0, h, torch.expm1(h))
                inputs.append(h)
        return h.reshape(*lead, h.shape[-1]), inputs

    def numpy_views(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight, bias) of each layer as numpy views of the parameters (CPU), cached while the
        parameters keep their storage (optimizers and ``load_state_dict`` write in place)."""
        ptrs = [p.data_ptr() for p in self.params]
        if getattr(self, "_views_ptrs", None) != ptrs:
            self._views = [(lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in self.linears]
            self._views_ptrs = ptrs
        return self._views

    def numpy_loss_grad(self, x: np.ndarray, target: np.ndarray, grads: list[np.ndarray]) -> float:
        """½ mean over samples of the squared error ‖net(x) − target‖², its gradient with respect to
        each entry of :attr:`params` written into ``grads`` (arrays of their shapes), in numpy (CPU
        parameters only). ``x``: [B, in_features], ``target``: [B] or [B, out_features]."""
        weights = self.numpy_views()
        h = x
        inputs = [h]
        for i, (w, b) in enumerate(weights):
            h = h @ w.T
            h += b
            if i < len(self.acts):
                act = self.acts[i]
                if act is nn.Tanh:
                    np.tanh(h, out=h)
                elif act is nn.ReLU:
                    np.maximum(h, 0, out=h)
                else:  # ELU(alpha=1)
                    np.copyto(h, np.expm1(h), where=h <= 0)
                inputs.append(h)
        diff = h - target.reshape(h.shape)
        loss = 0.5 * float(np.vdot(diff, diff)) / len(diff)
        g = diff
        g *= 1.0 / len(diff)
        for i in range(len(weights) - 1, -1, -1):
            h_in = inputs[i]
            np.sum(g, 0, out=grads[2 * i + 1])
            np.matmul(g.T, h_in, out=grads[2 * i])
            if i == 0:
                break
            g = g @ weights[i][0]
            act, h = self.acts[i - 1], h_in  # h_in is that activation's output
            if act is nn.Tanh:
                g *= 1.0 - h * h
            elif act is nn.ReLU:
                g *= h > 0
            else:
                g *= np.where(h > 0, 1.0, h + 1.0).astype(g.dtype, copy=False)
        return loss

    @property
    def params(self) -> list[nn.Parameter]:
        """Weight and bias of each layer, in order."""
        return [p for lin in self.linears for p in (lin.weight, lin.bias)]

    @torch.no_grad()
    def backward(self, inputs: list[Tensor], grad_out: Tensor) -> None:
        """Accumulate d(loss)/d(parameters) into ``.grad`` given ``grad_out`` = d(loss)/d(output)."""
        for p, grad in zip(self.params, self.gradients(inputs, grad_out), strict=True):
            if p.requires_grad:
                if p.grad is None:
                    p.grad = grad
                else:
                    p.grad.add_(grad)

    def apply(self, x: Tensor) -> Tensor:
        """The network's output as a node of an autograd graph whose backward is :meth:`gradients`.

        For losses built on the output with autograd (the policy's minibatch surrogate): the graph
        above the network stays autograd's, the network itself is one node. Not twice differentiable.
        """
        return _MLPFunction.apply(x, self, *self.params)

    @torch.no_grad()
    def jvp(self, inputs: list[Tensor], tangents: list[Tensor]) -> Tensor:
        """d(output)/d(parameters) · ``tangents`` (one tangent per entry of :attr:`params`), at the point
        :meth:`forward` computed ``inputs`` for: forward-mode differentiation, the input held fixed."""
        dh = None
        for i, lin in enumerate(self.linears):
            d_weight, d_bias = tangents[2 * i], tangents[2 * i + 1]
            dz = torch.addmm(d_bias, inputs[i], d_weight.t())
            if dh is not None:
                dz.addmm_(dh, lin.weight.t())
            if i == len(self.acts):
                return dz
            act, h = self.acts[i], inputs[i + 1]  # that activation's output
            if act is nn.Tanh:
                dh = dz.mul_(1.0 - h * h)
            elif act is nn.ReLU:
                dh = dz.mul_(h > 0)
            else:
                dh = dz.mul_(torch.where(h > 0, 1.0, h + 1.0))
        raise AssertionError("unreachable: the last layer returns")

    @torch.no_grad()
    def gradients(self, inputs: list[Tensor], grad_out: Tensor) -> list[Tensor]:
        """d(loss)/d(parameter) for each of :attr:`params`, given ``grad_out`` = d(loss)/d(output)."""
        grads: list[Tensor] = []
        g = grad_out.reshape(-1, grad_out.shape[-1])
        for i in range(len(self.linears) - 1, -1, -1):
            lin, h_in = self.linears[i], inputs[i]
            grads += [g.sum(0), g.t() @ h_in]  # reversed below: (weight, bias) per layer
            if i == 0:
                break
            g = g @ lin.weight
            act, h = self.acts[i - 1], h_in  # h_in is that activation's output
            if act is nn.Tanh:
                g.mul_(1.0 - h * h)
            elif act is nn.ReLU:
                g.mul_(h > 0)
            else:  # ELU'(x) = 1 for x > 0, exp(x) = output + 1 otherwise
                g.mul_(torch.where(h > 0, 1.0, h + 1.0))
        return grads[::-1]


class _MLPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, manual: MLPGrad, *params: Tensor) -> Tensor:
        out, inputs = manual.forward(x)
        ctx.manual, ctx.inputs = manual, inputs
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grads = ctx.manual.gradients(ctx.inputs, grad_out)
        return (None, None, *grads)
