"""Policies (diagonal Gaussian for Box, categorical for Discrete) and the value network.

The action distributions are small closed-form helpers rather than ``torch.distributions``
objects: TRPO differentiates their KL twice, and every update evaluates them on the whole
batch, so a tuple of tensors and a few formulas is both faster and easier to check. Tests
compare each formula with ``torch.distributions``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from rl_trust.errors import ConfigError
from rl_trust.mlp_grad import MLPGrad

_LOG_2PI = math.log(2 * math.pi)
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


class DiagGaussian:
    """Diagonal Gaussian; parameters ``(mean [.., A], log_std [.., A])``."""

    @staticmethod
    def log_prob(params: tuple[Tensor, Tensor], actions: Tensor) -> Tensor:
        mean, log_std = params
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std).sum(-1) - 0.5 * _LOG_2PI * mean.shape[-1]

    @staticmethod
    def entropy(params: tuple[Tensor, Tensor]) -> Tensor:
        mean, log_std = params
        return (log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1).expand(mean.shape[:-1])

    @staticmethod
    def kl(p: tuple[Tensor, Tensor], q: tuple[Tensor, Tensor]) -> Tensor:
        """KL(p || q), summed over action dimensions."""
        (mp, lp), (mq, lq) = p, q
        var_ratio = torch.exp(2 * (lp - lq))
        return (lq - lp + 0.5 * (var_ratio + (mp - mq).pow(2) * torch.exp(-2 * lq)) - 0.5).sum(-1)

    @staticmethod
    def sample(params: tuple[Tensor, Tensor]) -> Tensor:
        mean, log_std = params
        return mean + torch.exp(log_std) * torch.randn_like(mean)

    @staticmethod
    def mode(params: tuple[Tensor, Tensor]) -> Tensor:
        return params[0]


class Categorical:
    """Categorical over ``K`` actions; parameters ``(log_probs [.., K],)`` (normalised logits)."""

    @staticmethod
    def log_prob(params: tuple[Tensor], actions: Tensor) -> Tensor:
        return params[0].gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def entropy(params: tuple[Tensor]) -> Tensor:
        logp = params[0]
        return -(logp.exp() * logp).sum(-1)

    @staticmethod
    def kl(p: tuple[Tensor], q: tuple[Tensor]) -> Tensor:
        return (p[0].exp() * (p[0] - q[0])).sum(-1)

    @staticmethod
    def sample(params: tuple[Tensor]) -> Tensor:
        return torch.multinomial(params[0].exp().reshape(-1, params[0].shape[-1]), 1).reshape(params[0].shape[:-1])

    @staticmethod
    def mode(params: tuple[Tensor]) -> Tensor:
        return params[0].argmax(-1)


def mlp(sizes: list[int], activation: str, out_gain: float, ortho_init: bool = True) -> nn.Sequential:
    """An MLP; with ``ortho_init`` orthogonal weights (gain sqrt(2) hidden, ``out_gain`` last), zero biases."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        linear = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        if ortho_init:
            nn.init.orthogonal_(linear.weight, gain=out_gain if last else math.sqrt(2))
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(act())
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """A policy: ``forward(obs)`` returns the distribution parameters; ``dist`` holds the formulas."""

    dist: type[DiagGaussian] | type[Categorical]

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden: list[int], activation: str,
                 log_std_init: float = 0.0, ortho_init: bool = True):
        super().__init__()
        if isinstance(action_space, gym.spaces.Box):
            act_dim = int(np.prod(action_space.shape))
            self.dist = DiagGaussian
            self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))
        elif isinstance(action_space, gym.spaces.Discrete):
            act_dim = int(action_space.n)
            self.dist = Categorical
            self.log_std = None
        else:
            raise ConfigError(f"action space {action_space} is not supported (Box or Discrete)")
        # Small last-layer gain: the initial policy is close to uniform/centred (Andrychowicz et al. 2021).
        self.net = mlp([obs_dim, *hidden, act_dim], activation, out_gain=0.01, ortho_init=ortho_init)
        self._mlp_grad = MLPGrad(self.net) if MLPGrad.supports(self.net) else None

    @property
    def continuous(self) -> bool:
        return self.dist is DiagGaussian

    def forward(self, obs: Tensor, hand_grad: bool = False) -> tuple[Tensor, ...]:
        """Distribution parameters. ``hand_grad``: the network as one autograd node with a hand-written
        backward (:class:`~rl_trust.mlp_grad.MLPGrad`), for minibatch losses; not twice differentiable."""
        out = self._mlp_grad.apply(obs) if hand_grad and self._mlp_grad is not None else self.net(obs)
        if self.log_std is None:
            return (torch.log_softmax(out, -1),)
        return out, self.log_std.expand_as(out)


    def numpy_policy(self) -> NumpyPolicy:
        """A snapshot of this policy for the rollout's per-step sampling (see :class:`NumpyPolicy`)."""
        return NumpyPolicy(self)


_NP_ACTIVATIONS = {
    "Tanh": lambda x: np.tanh(x, out=x),
    "ReLU": lambda x: np.maximum(x, 0, out=x),
    "ELU": lambda x: np.where(x > 0, x, np.expm1(x)),
}


class NumpyPolicy:
    """The actor's network and distribution in numpy, for one small batch per env step.

    A rollout step queries the policy on a handful of observations: there torch's per-op and per-module
    dispatch (~80 µs per step for a 64x64 Gaussian policy with sampling and log-probability) costs
    more than the arithmetic; numpy does the same in about a fifth of the time. Weights are copied
    at construction: build one per rollout, after each update. Same formulas as :class:`DiagGaussian`
    and :class:`Categorical` (``tests/test_policies.py`` compares them); samples come from the
    numpy ``Generator`` passed in.
    """

    def __init__(self, actor: Actor):
        self.layers: list[tuple[np.ndarray, np.ndarray] | Callable[[np.ndarray], np.ndarray]] = []
        for module in actor.net:
            if isinstance(module, nn.Linear):
                self.layers.append((module.weight.detach().numpy().T.copy(), module.bias.detach().numpy().copy()))
            else:
                self.layers.append(_NP_ACTIVATIONS[type(module).__name__])
        self.continuous = actor.continuous
        if self.continuous:
            self.log_std = actor.log_std.detach().numpy().astype(np.float32)
            self.std = np.exp(self.log_std)
            self.log_norm = float(self.log_std.sum() + 0.5 * _LOG_2PI * self.log_std.size)

    def _forward(self, obs: np.ndarray) -> np.ndarray:
        x = obs
        for layer in self.layers:
            if isinstance(layer, tuple):
                x = x @ layer[0]
                x += layer[1]
            else:
                x = layer(x)
        return x

    def sample(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Actions for ``obs`` [N, obs_dim] (float32) and their log-probabilities."""
        out = self._forward(obs)
        if self.continuous:
            z = rng.standard_normal(out.shape, dtype=np.float32)
            log_prob = np.einsum("ij,ij->i", z, z)
            log_prob *= -0.5
            log_prob -= self.log_norm
            z *= self.std
            z += out  # the actions: (a - mean) / std = z exactly up to rounding
            return z, log_prob
        logits = out - out.max(-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        cdf = np.cumsum(np.exp(log_probs), -1)
        u = rng.random((len(obs), 1), dtype=np.float32) * cdf[:, -1:]
        actions = np.minimum((u >= cdf).sum(-1), cdf.shape[-1] - 1)
        return actions.astype(np.int64), log_probs[np.arange(len(obs)), actions].astype(np.float32)


class ValueNet(nn.Module):
    def __init__(self, obs_dim: int, hidden: list[int], activation: str, ortho_init: bool = True):
        super().__init__()
        self.net = mlp([obs_dim, *hidden, 1], activation, out_gain=1.0, ortho_init=ortho_init)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs).squeeze(-1)
