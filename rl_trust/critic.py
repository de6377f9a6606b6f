"""The one value-function trainer every policy updater shares."""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rl_trust.batch import RolloutBatch, minibatch_indices
from rl_trust.config import CriticConfig
from rl_trust.errors import ConfigError
from rl_trust.nets import MLP, backward, derivatives, forward
from rl_trust.optim.schedule import linear_decay, load_schedule

# Named critic optimizers: ``critic.optim=NAME``; ``critic.optim_kwargs.KEY=...`` overrides an argument.
PRESETS: dict[str, dict[str, Any]] = {
    "arturo": {"_target_": "rl_trust.optim.Arturo", "lr": 0.01},
    "adam": {"_target_": "torch.optim.Adam", "lr": 1e-3, "eps": 1e-5, "fused": True},
    "sgd": {"_target_": "torch.optim.SGD", "lr": 1e-2, "momentum": 0.9},
    # Muon on the weight matrices, Adam (adam_lr) on the biases: critic.lr is Muon's
    "muon": {"_target_": "rl_trust.optim.MuonAdam", "lr": 0.02, "adam_lr": 1e-3},
}


def make_optimizer(cfg: CriticConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer ``critic.optim`` names (a preset or a ``{_target_: class, **kwargs}`` mapping), with
    ``critic.lr`` and ``critic.optim_kwargs`` over its arguments; a bad class or argument is a
    :class:`ConfigError` naming the key."""
    optim = cfg.optim
    if isinstance(optim, str):
        if optim not in PRESETS:
            raise ConfigError(f"critic.optim={optim!r} is invalid: allowed: {', '.join(sorted(PRESETS))}, "
                              "or a mapping with _target_ naming a torch.optim.Optimizer class")
        spec = dict(PRESETS[optim])
    elif isinstance(optim, Mapping) and "_target_" in optim:
        spec = dict(optim)
    else:
        raise ConfigError(f"critic.optim={optim!r} is invalid: a preset name or a mapping with _target_")
    spec |= dict(cfg.optim_kwargs) | ({} if cfg.lr is None else {"lr": cfg.lr})
    target = spec.pop("_target_")
    module_name, _, attr = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"critic.optim._target_={target!r} cannot be imported ({type(e).__name__}: {e})") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"critic.optim._target_={target!r} is not a torch.optim.Optimizer subclass")
    try:
        return cls(params, **spec)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"critic.optim={target} rejects its arguments {spec}: {e}") from None


def explained_variance(pred: Tensor, target: Tensor) -> float:
    """1 - Var[target - pred] / Var[target]; NaN when the target is constant."""
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - pred).var() / var)


def value_loss(values, returns, old_values, clip_range: float | None, xp) -> tuple[Any, Any]:
    """½ mean (V − R)², with PPO2-style value clipping when ``clip_range`` (Engstrom et al. 2020 found it
    rarely helps; off by default), and its gradient with respect to ``values``; numpy or torch (``xp``)."""
    n = len(values)
    diff = values - returns
    if clip_range is None:
        return 0.5 * (diff * diff).sum() / n, diff / n
    step = values - old_values
    diff_clipped = old_values + xp.clip(step, -clip_range, clip_range) - returns
    sq, sq_clipped = diff * diff, diff_clipped * diff_clipped
    # max's gradient: to the larger branch, half to each on a tie; the clipped one only inside the range.
    d_clipped = diff_clipped * (abs(step) <= clip_range)
    grad = xp.where(sq > sq_clipped, diff, xp.where(sq < sq_clipped, d_clipped, 0.5 * (diff + d_clipped))) / n
    return 0.5 * xp.maximum(sq, sq_clipped).sum() / n, grad


class Critic:
    """Fits ``V(obs)`` to the GAE returns by minibatch regression.

    The value net and optimizer state live on ``device``. On the CPU the minibatch steps run the
    network in numpy on views of the parameters (:mod:`rl_trust.nets`; numpy's per-call cost is a
    fraction of torch's at these sizes), elsewhere in torch: the same functions either way.
    Minibatches come from the critic's own generator, so an update gives the same result whenever
    it runs: all at once or step by step beside the next rollout (:meth:`start_update`).
    """

    def __init__(self, obs_dim: int, cfg: CriticConfig, *, total_updates: int, device: torch.device | str = "cpu",
                 seed: int = 0):
        self.cfg, self.device = cfg, torch.device(device)
        self.net = MLP([obs_dim, *cfg.hidden, 1], cfg.activation, ortho_init=cfg.ortho_init).to(self.device)
        self.optimizer = make_optimizer(cfg, list(self.net.parameters()))
        self.scheduler = linear_decay(self.optimizer, total_updates) if cfg.lr_anneal else None
        self.generator = torch.Generator().manual_seed(seed)
        self.xp = np if self.device.type == "cpu" else torch

    def _weights(self) -> list:
        return self.net.numpy_weights() if self.xp is np else self.net.weights()

    def _array(self, x: Tensor):
        return x.numpy() if self.xp is np else x.to(self.device, non_blocking=True)

    @torch.no_grad()
    def values(self, obs: Tensor) -> Tensor:
        """V(obs) for ``obs`` [..., obs_dim], on the CPU."""
        out, _ = forward(self._array(obs.reshape(-1, obs.shape[-1])), self._weights(), self.net.act, self.xp)
        return torch.as_tensor(out).cpu().reshape(obs.shape[:-1])

    def evaluate(self, batch: RolloutBatch) -> RolloutBatch:
        """The batch with ``values`` = V(obs) and ``next_values`` = V(next_obs) filled."""
        both = self.values(torch.stack([batch.obs, batch.next_obs]))
        return batch.replace(values=both[0], next_values=both[1])

    def start_update(self, batch: RolloutBatch) -> CriticUpdate:
        """The update on ``batch`` (``returns`` and ``values`` filled), run step by step or at once."""
        return CriticUpdate(self, batch)

    def _steps(self, batch: RolloutBatch, losses: list) -> Iterator[None]:
        xp, weights = self.xp, self._weights()
        obs = self._array(batch.obs.reshape(len(batch), -1))
        returns, old_values = self._array(batch.returns.reshape(-1)), self._array(batch.values.reshape(-1))
        for p in self.net.parameters():  # gradient buffers the steps write into (numpy views of them on the CPU)
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [self._array(p.grad) for p in self.net.parameters()]
        for _ in range(self.cfg.epochs):
            for idx in minibatch_indices(len(batch), self.cfg.minibatch_size, self.generator):
                i = self._array(idx)

                @torch.no_grad()  # optimizers call closures under enable_grad: the gradient here is by hand
                def closure(i=i) -> Tensor:
                    out, inputs = forward(obs[i], weights, self.net.act, xp)
                    loss, grad_out = value_loss(out[:, 0], returns[i], old_values[i], self.cfg.clip_range, xp)
                    new = backward(grad_out[:, None], weights, derivatives(inputs, self.net.act, xp), inputs)
                    scale = 1.0
                    if self.cfg.max_grad_norm is not None:  # as nn.utils.clip_grad_norm_
                        norm = math.sqrt(sum(float((g * g).sum()) for g in new))
                        scale = min(self.cfg.max_grad_norm / (norm + 1e-6), 1.0)
                    for buf, g in zip(grads, new, strict=True):
                        buf[...] = g * scale
                    return torch.as_tensor(loss)

                losses.append(self.optimizer.step(closure))
                yield
        if self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            load_schedule(self.scheduler, state["scheduler"])
        self.generator.set_state(state["generator"])


class CriticUpdate:
    """One update of the critic in progress: :meth:`step` advances it by an optimizer step (the
    collector calls it while the envs step elsewhere), :meth:`finish` runs the rest and returns the
    metrics. ``losses/explained_variance`` is of the values the batch's advantages used (before the
    update), as SB3 and CleanRL report it."""

    def __init__(self, critic: Critic, batch: RolloutBatch):
        self.critic, self.batch = critic, batch
        self.losses: list = []
        self._steps = critic._steps(batch, self.losses)

    def step(self) -> bool:
        """One optimizer step; False when the update is done."""
        try:
            next(self._steps)
            return True
        except StopIteration:
            return False

    def finish(self) -> dict[str, float]:
        while self.step():
            pass
        metrics = {
            "losses/value": float(np.mean([float(x) for x in self.losses])) if self.losses else float("nan"),
            "losses/explained_variance": explained_variance(self.batch.values, self.batch.returns),
            "critic/lr": self.critic.optimizer.param_groups[0]["lr"],
        }
        for i, stats in enumerate(getattr(self.critic.optimizer, "last_step", [])):
            for key in ("eta", "kl"):
                if key in stats:
                    metrics[f"optim/{key}{'' if i == 0 else f'_{i}'}"] = float(stats[key])
        return metrics
