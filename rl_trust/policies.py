"""Action distributions (diagonal Gaussian for Box, categorical for Discrete) and the actor.

Each distribution is one object holding its formulas (log-prob, entropy, KL) and, beside each, the
analytic pieces the fast paths use: gradients with respect to the distribution's parameters and the
KL's Hessian-vector product (the Fisher product). The actor chains them through the network's
hand-written backward (:mod:`rl_trust.nets`), so a loss written once in terms of these formulas gets
its gradient without autograd. ``tests/test_policies.py`` checks the formulas against
``torch.distributions`` and each analytic piece against autograd of its formula.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from rl_trust.config import PolicyConfig
from rl_trust.errors import ConfigError
from rl_trust.nets import MLP, Cache

_LOG_2PI = math.log(2 * math.pi)
Params = tuple[Tensor, ...]


class DiagGaussian:
    """Diagonal Gaussian; parameters ``(mean [.., A], log_std [.., A])``."""

    @staticmethod
    def log_prob(params: Params, actions: Tensor) -> Tensor:
        mean, log_std = params
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std).sum(-1) - 0.5 * _LOG_2PI * mean.shape[-1]

    @staticmethod
    def log_prob_grad(params: Params, actions: Tensor) -> Params:
        """d log_prob / d(mean, log_std), per sample."""
        mean, log_std = params
        inv_std = torch.exp(-log_std)
        z = (actions - mean) * inv_std
        return z * inv_std, z * z - 1

    @staticmethod
    def entropy(params: Params) -> Tensor:
        mean, log_std = params
        return (log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1).expand(mean.shape[:-1])

    @staticmethod
    def entropy_grad(params: Params) -> Params:
        return torch.zeros_like(params[0]), torch.ones_like(params[1])

    @staticmethod
    def kl(p: Params, q: Params) -> Tensor:
        """KL(p || q), summed over action dimensions."""
        (mp, lp), (mq, lq) = p, q
        return (lq - lp + 0.5 * (torch.exp(2 * (lp - lq)) + (mp - mq).pow(2) * torch.exp(-2 * lq)) - 0.5).sum(-1)

    @staticmethod
    def kl_grad(p: Params, q: Params) -> Params:
        """d KL(p || q) / d q, per sample."""
        (mp, lp), (mq, lq) = p, q
        inv_var = torch.exp(-2 * lq)
        return (mq - mp) * inv_var, 1 - torch.exp(2 * (lp - lq)) - (mp - mq).pow(2) * inv_var

    @staticmethod
    def fisher_product(params: Params, tangent: Params) -> Params:
        """The Hessian of KL(p || q) in q at q = p times ``tangent`` (the mean/log-std cross terms vanish there)."""
        return tangent[0] * torch.exp(-2 * params[1]), 2 * tangent[1]

    @staticmethod
    def sample(params: Params) -> Tensor:
        mean, log_std = params
        return mean + torch.exp(log_std) * torch.randn_like(mean)

    @staticmethod
    def numpy_noise(rng: np.random.Generator, shape: tuple[int, ...], act_dim: int) -> np.ndarray:
        """The standard noise :meth:`numpy_sample` turns into ``shape`` actions: N(0, 1), float32."""
        return rng.standard_normal((*shape, act_dim), dtype=np.float32)

    @staticmethod
    def numpy_sample(params: tuple[np.ndarray, ...], noise: np.ndarray) -> np.ndarray:
        """:meth:`sample` in numpy, from :meth:`numpy_noise`'s ``noise``."""
        mean, std = params[0], np.exp(params[1])
        return mean + std * noise

    @staticmethod
    def mode(params: Params) -> Tensor:
        return params[0]


class Categorical:
    """Categorical over ``K`` actions; parameters ``(logits [.., K],)`` (unnormalised)."""

    @staticmethod
    def log_prob(params: Params, actions: Tensor) -> Tensor:
        return torch.log_softmax(params[0], -1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def log_prob_grad(params: Params, actions: Tensor) -> Params:
        onehot = torch.nn.functional.one_hot(actions.long(), params[0].shape[-1]).to(params[0].dtype)
        return (onehot - torch.softmax(params[0], -1),)

    @staticmethod
    def entropy(params: Params) -> Tensor:
        logp = torch.log_softmax(params[0], -1)
        return -(logp.exp() * logp).sum(-1)

    @staticmethod
    def entropy_grad(params: Params) -> Params:
        logp = torch.log_softmax(params[0], -1)
        p = logp.exp()
        return (-p * (logp - (p * logp).sum(-1, keepdim=True)),)

    @staticmethod
    def kl(p: Params, q: Params) -> Tensor:
        logp, logq = torch.log_softmax(p[0], -1), torch.log_softmax(q[0], -1)
        return (logp.exp() * (logp - logq)).sum(-1)

    @staticmethod
    def kl_grad(p: Params, q: Params) -> Params:
        return (torch.softmax(q[0], -1) - torch.softmax(p[0], -1),)

    @staticmethod
    def fisher_product(params: Params, tangent: Params) -> Params:
        p, t = torch.softmax(params[0], -1), tangent[0]
        return (p * (t - (p * t).sum(-1, keepdim=True)),)

    @staticmethod
    def sample(params: Params) -> Tensor:
        logits = params[0]
        return torch.multinomial(torch.softmax(logits.reshape(-1, logits.shape[-1]), -1), 1).reshape(logits.shape[:-1])

    @staticmethod
    def numpy_noise(rng: np.random.Generator, shape: tuple[int, ...], act_dim: int) -> np.ndarray:
        """The uniform noise :meth:`numpy_sample` turns into ``shape`` actions: U[0, 1), float32, one per action."""
        return rng.random((*shape, 1), dtype=np.float32)

    @staticmethod
    def numpy_sample(params: tuple[np.ndarray, ...], noise: np.ndarray) -> np.ndarray:
        """:meth:`sample` in numpy, from :meth:`numpy_noise`'s ``noise`` (inverse CDF)."""
        cdf = np.cumsum(np.exp(params[0] - params[0].max(-1, keepdims=True)), -1)
        u = noise * cdf[..., -1:]
        return np.minimum((u >= cdf).sum(-1), cdf.shape[-1] - 1).astype(np.int64)

    @staticmethod
    def mode(params: Params) -> Tensor:
        return params[0].argmax(-1)


class Actor(nn.Module):
    """A policy: an MLP from observations to the distribution's parameters (a state-independent
    log-std for Gaussians).

    ``forward`` is the autograd form; :meth:`forward_cached` with :meth:`gradients` and
    :meth:`fisher_product` are the hand-differentiated forms the updaters' fast paths use.
    """

    def __init__(self, obs_dim: int, action_space: gym.Space, cfg: PolicyConfig):
        super().__init__()
        if isinstance(action_space, gym.spaces.Box):
            act_dim, self.dist = int(np.prod(action_space.shape)), DiagGaussian
        elif isinstance(action_space, gym.spaces.Discrete):
            act_dim, self.dist = int(action_space.n), Categorical
        else:
            raise ConfigError(f"action space {action_space} is not supported (Box or Discrete)")
        # Small last-layer gain: the initial policy is close to uniform/centred (Andrychowicz et al. 2021).
        self.net = MLP([obs_dim, *cfg.hidden, act_dim], cfg.activation, out_gain=0.01, ortho_init=cfg.ortho_init)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(cfg.log_std_init))) if self.continuous else None

    @property
    def continuous(self) -> bool:
        return self.dist is DiagGaussian

    def forward(self, obs: Tensor) -> Params:
        """The distribution's parameters at ``obs``."""
        out = self.net(obs)
        return (out, self.log_std.expand_as(out)) if self.continuous else (out,)

    @torch.no_grad()
    def forward_cached(self, obs: Tensor) -> tuple[Params, Cache]:
        """:meth:`forward` on ``obs`` [B, obs_dim] without a graph, and what :meth:`gradients` needs."""
        out, cache = self.net.forward_cached(obs)
        return ((out, self.log_std.detach().expand_as(out)) if self.continuous else (out,)), cache

    @torch.no_grad()
    def gradients(self, cache: Cache, grad_params: Params) -> list[Tensor]:
        """d(loss)/d(parameter) for each of :meth:`parameters`, given d(loss)/d(distribution parameters)
        per sample (as the distributions' ``*_grad`` give them)."""
        grads = self.net.backward(cache, grad_params[0])
        return [grad_params[1].sum(0), *grads] if self.continuous else grads  # log_std first, as parameters()

    def fisher_product(self, obs: Tensor, *, damping: float):
        """``v -> (F + damping I) v`` over the flattened :meth:`parameters`, F the Hessian of the mean
        KL(π_old ‖ π) at π = π_old on ``obs``: the fast form of
        :func:`rl_trust.updaters.trust_region.fisher_vector_product` (one forward-mode and one
        reverse-mode pass through the network per product, no double backward)."""
        params, cache = self.forward_cached(obs)
        shapes = [p.shape for p in self.parameters()]
        scale = 1.0 / len(obs)

        @torch.no_grad()
        def matvec(vector: Tensor) -> Tensor:
            tangents = [t.view(s) for t, s in zip(vector.split([s.numel() for s in shapes]), shapes, strict=True)]
            d_out = self.net.jvp(cache, tangents[self.continuous:])
            d_params = (d_out, tangents[0].expand_as(d_out)) if self.continuous else (d_out,)
            fv = self.dist.fisher_product(params, d_params)
            grads = self.gradients(cache, tuple(f * scale for f in fv))
            return torch.cat([g.reshape(-1) for g in grads]).add_(vector, alpha=damping)

        return matvec

    def numpy_policy(self) -> NumpyPolicy:
        return NumpyPolicy(self)


class NumpyPolicy:
    """The actor's sampling in numpy, for the rollout's one small batch per env step (where torch's
    per-call cost exceeds the arithmetic). Holds views of the actor's parameters, not copies."""

    def __init__(self, actor: Actor):
        self.net, self.dist = actor.net, actor.dist
        self.weights = actor.net.numpy_weights()
        self.log_std = actor.log_std.detach().numpy() if actor.continuous else None
        self.act_dim = 0 if self.log_std is None else len(self.log_std)

    def params(self, obs: np.ndarray) -> tuple[np.ndarray, ...]:
        out, _ = self.net.numpy_forward(obs, self.weights, rowwise=True)  # the same actions whatever the env split
        return (out,) if self.log_std is None else (out, self.log_std)

    def noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Noise for ``shape`` actions from ``rng``, for :meth:`sample` (drawn ahead: the rollout draws a
        whole segment's per env, from the env's own generator)."""
        return self.dist.numpy_noise(rng, shape, self.act_dim)

    def sample(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Actions for ``obs`` [N, obs_dim] (float32) from :meth:`noise` ``[N, ...]``."""
        return self.dist.numpy_sample(self.params(obs), noise)
