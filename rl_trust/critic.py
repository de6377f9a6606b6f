"""The one value-function trainer every policy updater shares."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rl_trust.batch import RolloutBatch, minibatch_indices
from rl_trust.errors import ConfigError
from rl_trust.mlp_grad import MLPGrad
from rl_trust.policies import ValueNet

# Named critic optimizers: ``critic.optim=NAME``; ``critic.optim_kwargs.KEY=...`` overrides an argument.
PRESETS: dict[str, dict[str, Any]] = {
    "arturo": {"_target_": "rl_trust.optim.Arturo", "lr": 0.01},
    "adam": {"_target_": "torch.optim.Adam", "lr": 1e-3, "eps": 1e-5, "fused": True},
    "sgd": {"_target_": "torch.optim.SGD", "lr": 1e-2, "momentum": 0.9},
}

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def optimizer_factory(optim: str | Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> OptimizerFactory:
    """Resolve ``critic.optim`` (a preset name or a ``{_target_: class, **kwargs}`` mapping).

    The optimizer is built once on a dummy parameter so that a bad class or argument fails here,
    at start-up, with the key named, not after the first rollout.
    """
    if isinstance(optim, str):
        if optim not in PRESETS:
            raise ConfigError(f"critic.optim={optim!r} is invalid: allowed: {', '.join(sorted(PRESETS))}, "
                              "or a mapping with _target_ naming a torch.optim.Optimizer class")
        spec = dict(PRESETS[optim])
    elif isinstance(optim, Mapping) and "_target_" in optim:
        spec = dict(optim)
    else:
        raise ConfigError(f"critic.optim={optim!r} is invalid: a preset name or a mapping with _target_")
    spec.update(overrides or {})
    target = spec.pop("_target_")
    module_name, _, attr = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"critic.optim._target_={target!r} cannot be imported ({type(e).__name__}: {e})") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"critic.optim._target_={target!r} is not a torch.optim.Optimizer subclass")
    try:
        cls([nn.Parameter(torch.zeros(1))], **spec)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"critic.optim={target} rejects its arguments {spec}: {e}") from None
    return lambda params: cls(params, **spec)


def explained_variance(pred: Tensor, target: Tensor) -> float:
    """1 - Var[target - pred] / Var[target]; NaN when the target is constant."""
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - pred).var() / var)


class Critic:
    """Fits ``V(obs)`` to the GAE returns by minibatch regression.

    ``make_optimizer(params)`` builds the optimizer (arTuRO, Adam or any ``torch.optim`` class).
    The value net and optimizer state live on ``device``; a batch's observations cross to it once
    per update (:meth:`evaluate` keeps the device copy for :meth:`update`). Minibatches are drawn
    from the critic's own generator (seeded by ``seed``), so the update gives the same result
    wherever it runs: all at once (:meth:`update`) or interleaved with the next rollout
    (:meth:`update_steps`).
    """

    def __init__(self, net: ValueNet, make_optimizer: OptimizerFactory, *, epochs: int,
                 minibatch_size: int, max_grad_norm: float | None = None, clip_range: float | None = None,
                 total_updates: int = 0, lr_anneal: bool = False, device: torch.device | str = "cpu",
                 seed: int | None = None, manual_grad: bool = True):
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.optimizer = make_optimizer(self.net.parameters())
        self.epochs, self.minibatch_size = epochs, minibatch_size
        self.max_grad_norm, self.clip_range = max_grad_norm, clip_range
        self.scheduler = None
        if lr_anneal and total_updates > 0:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda k: max(1.0 - k / total_updates, 0.0))
        self._cache: tuple[Tensor, Tensor] | None = None
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.last_metrics: dict[str, float] = {}
        # The value net's gradient written out by hand (rl_trust.mlp_grad) where it is a plain MLP and
        # the loss the plain squared error; autograd otherwise. Same gradients, a fraction of the time.
        self._manual = MLPGrad(net.net) if manual_grad and MLPGrad.supports(net.net) else None
        self._grad_buffers: list[Tensor] | None = None  # the numpy path's .grad tensors (and their arrays)
        self._grad_arrays: list[np.ndarray] = []

    def _to_device(self, obs: Tensor) -> Tensor:
        if self._cache is not None and self._cache[0] is obs:
            return self._cache[1]
        return obs.to(self.device, non_blocking=True)

    @torch.no_grad()
    def evaluate(self, batch: RolloutBatch) -> RolloutBatch:
        """The batch with ``values`` = V(obs) and ``next_values`` = V(next_obs) filled (on the CPU)."""
        obs = batch.obs.to(self.device, non_blocking=True)
        self._cache = (batch.obs, obs)
        both = torch.stack([obs, batch.next_obs.to(self.device, non_blocking=True)])
        both = (self.net(both) if self._manual is None else self._manual.forward(both)[0].squeeze(-1)).cpu()
        return batch.replace(values=both[0], next_values=both[1])

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """``epochs`` passes of minibatch regression on ``batch.returns``; returns the metrics."""
        for _ in self.update_steps(batch):
            pass
        return self.last_metrics

    def update_steps(self, batch: RolloutBatch) -> Iterator[None]:
        """:meth:`update` as an iterator that yields after each optimizer step; once exhausted,
        ``last_metrics`` holds the update's metrics. ``batch`` must not change meanwhile."""
        obs = self._to_device(batch.obs).reshape(len(batch), -1)
        returns = batch.returns.reshape(-1).to(self.device)
        old_values = batch.values.reshape(-1).to(self.device)
        n = len(batch)
        mb = n if self.minibatch_size <= 0 else self.minibatch_size
        # The hand-written gradient in numpy on the CPU (views of the same memory, no copies).
        numpy_ok = (self._manual is not None and self.clip_range is None and self.device.type == "cpu"
                    and not isinstance(self.optimizer, torch.optim.LBFGS)  # re-evaluates the closure
                    and obs.dtype == returns.dtype and all(p.dtype == obs.dtype for p in self.net.parameters()))
        np_data = (obs.numpy(), returns.numpy()) if numpy_ok else None
        losses = []
        for _ in range(self.epochs):
            for idx in minibatch_indices(n, mb, self.generator):
                idx = idx.to(self.device)

                def closure(idx: Tensor = idx) -> Tensor:
                    if np_data is not None:  # overwrites the gradient buffers: no zeroing needed
                        i = idx.numpy()
                        return self._numpy_loss_and_grad(np_data[0][i], np_data[1][i])
                    self.optimizer.zero_grad(set_to_none=True)
                    if self._manual is not None and self.clip_range is None:
                        loss = self._manual_loss_and_grad(obs[idx], returns[idx])
                    else:
                        loss = self._loss(obs[idx], returns[idx], old_values[idx])
                        loss.backward()
                    if self.max_grad_norm is not None:  # (the numpy path clips in numpy)
                        nn.utils.clip_grad_norm_(self.net.parameters(), self.max_grad_norm)
                    return loss

                losses.append(self.optimizer.step(closure).detach())
                yield
        self._cache = None
        if self.scheduler is not None:
            self.scheduler.step()
        with torch.no_grad():
            pred = self.net(obs)
        metrics = {
            "losses/value": float(torch.stack(losses).mean()) if losses else float("nan"),
            "losses/explained_variance": explained_variance(pred, returns),
            "critic/lr": self.optimizer.param_groups[0]["lr"],
        }
        for i, group in enumerate(self.optimizer.param_groups):
            suffix = "" if i == 0 else f"_{i}"
            for key in ("eta", "kl"):
                if key in group:
                    metrics[f"optim/{key}{suffix}"] = float(group[key])
        self.last_metrics = metrics

    def _numpy_loss_and_grad(self, obs: np.ndarray, returns: np.ndarray) -> Tensor:
        """:meth:`_manual_loss_and_grad` in numpy (``MLPGrad.numpy_loss_grad``), the gradients written
        into buffers that stay the parameters' ``.grad`` (replacing, not accumulating), then
        ``max_grad_norm`` clipping as ``clip_grad_norm_`` does it."""
        params = self._manual.params
        if self._grad_buffers is None or any(p.grad is not (g if p.requires_grad else None)
                                             for p, g in zip(params, self._grad_buffers, strict=True)):
            self._grad_buffers = [torch.zeros_like(p) for p in params]
            for p, g in zip(params, self._grad_buffers, strict=True):
                p.grad = g if p.requires_grad else None
            self._grad_arrays = [g.numpy() for g in self._grad_buffers]
        arrays = self._grad_arrays
        loss = self._manual.numpy_loss_grad(obs, returns, arrays)
        for p, a in zip(params, arrays, strict=True):
            if not p.requires_grad:
                a[...] = 0.0
        if self.max_grad_norm is not None:
            total = math.sqrt(sum(float(np.vdot(a, a)) for a in arrays))
            coef = min(self.max_grad_norm / (total + 1e-6), 1.0)
            if coef < 1.0:
                for a in arrays:
                    a *= np.asarray(coef, a.dtype)
        return torch.tensor(loss)

    def _manual_loss_and_grad(self, obs: Tensor, returns: Tensor) -> Tensor:
        """½ mean (V − R)², its gradient accumulated into the value net's ``.grad`` by hand."""
        out, inputs = self._manual.forward(obs)
        diff = out.squeeze(-1) - returns
        self._manual.backward(inputs, (diff / len(diff)).unsqueeze(-1))
        return 0.5 * diff.pow(2).mean()

    def _loss(self, obs: Tensor, returns: Tensor, old_values: Tensor) -> Tensor:
        values = self.net(obs)
        loss = (values - returns).pow(2)
        if self.clip_range is not None:
            # PPO2-style value clipping (Engstrom et al. 2020 found it rarely helps; off by default).
            clipped = old_values + (values - old_values).clamp(-self.clip_range, self.clip_range)
            loss = torch.maximum(loss, (clipped - returns).pow(2))
        return 0.5 * loss.mean()

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])

