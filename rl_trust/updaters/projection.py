"""Differentiable trust-region projections (Otto et al., ICLR 2021, arXiv 2101.09207), a fourth updater.

Per state, the policy's Gaussian N(μ, diag σ²) is projected onto the trust region around the old
policy's N(μₒ, diag σₒ²), the mean and the covariance separately, each only where its distance
exceeds its bound (inside, the projection is the identity). Distances, for ``kind``:

    mean part      d_μ = (μ - μₒ)ᵀ Σₒ⁻¹ (μ - μₒ)        (KL: ½ d_μ, the KL's mean term)
    kl             d_Σ = ½ Σᵢ (rᵢ - 1 - log rᵢ),  rᵢ = σᵢ² / σₒᵢ²     (KL(π̃ ‖ πₒ)'s covariance term)
    w2             d_Σ = Σᵢ (σᵢ / σₒᵢ - 1)²          (Wasserstein-2 scaled by Σₒ⁻¹; diagonal covariances commute)
    frobenius      d_Σ = Σᵢ (σᵢ² - σₒᵢ²)²            (squared Frobenius norm of Σ - Σₒ)

Projections: the mean, W2 and Frobenius ones interpolate towards the old policy in the quantity the
distance is quadratic in, by the factor sqrt(bound / d) that puts the result on the bound (closed
forms); the KL covariance projection interpolates the precisions, 1/σ̃² = t/σ² + (1 - t)/σₒ², with
t ∈ (0, 1] the root of d_Σ(t) = bound: the Lagrangian's one-dimensional dual, solved by safeguarded
Newton steps, a fixed number of them (no host synchronisation), and differentiated implicitly (one Newton step
whose residual carries the gradient, dt/dx = -(∂d/∂x) / (∂d/∂t)).

The update maximises the importance-weighted surrogate of the projected policy, plus an entropy
bonus, minus ``regression_coef`` times the distance from the unprojected policy to its projection
(held fixed): the trust-region regression that pulls the network's own output into the region, over
minibatch epochs with Adam. The projection's gradient comes from autograd through these few
per-state operations; the network's from its hand-written backward (``Actor.gradients``), so this
file holds no derivative.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rl_trust.batch import RolloutBatch
from rl_trust.config import ProjectionConfig
from rl_trust.errors import ConfigError
from rl_trust.optim.schedule import linear_decay, load_schedule
from rl_trust.policies import Actor, Params
from rl_trust.updaters.common import Loss, PolicyData, minibatch_epochs, policy_data, policy_shift, surrogate

PROJECTIONS = ("kl", "w2", "frobenius")


def mean_distance(kind: str, mean: Tensor, old_mean: Tensor, old_log_std: Tensor) -> Tensor:
    """The mean part of ``kind``'s distance, per state."""
    mahalanobis = ((mean - old_mean) * torch.exp(-old_log_std)).pow(2).sum(-1)
    return 0.5 * mahalanobis if kind == "kl" else mahalanobis


def cov_distance(kind: str, log_std: Tensor, old_log_std: Tensor) -> Tensor:
    """The covariance part of ``kind``'s distance, per state."""
    if kind == "frobenius":
        return (torch.exp(2 * log_std) - torch.exp(2 * old_log_std)).pow(2).sum(-1)
    if kind == "w2":
        return (torch.exp(log_std - old_log_std) - 1).pow(2).sum(-1)
    log_r = 2 * (log_std - old_log_std)
    return 0.5 * (torch.expm1(log_r) - log_r).sum(-1)  # expm1: r - 1 without cancellation near r = 1


def _kl_precision_log_std(t: Tensor, log_std: Tensor, old_log_std: Tensor) -> Tensor:
    """log σ̃ for the precision interpolation 1/σ̃² = t/σ² + (1 - t)/σₒ² (``t`` per state)."""
    t = t.unsqueeze(-1)
    return -0.5 * torch.log(t * torch.exp(-2 * log_std) + (1 - t) * torch.exp(-2 * old_log_std))


def _kl_dual_root(k: Tensor, bound: float, iters: int = 8) -> tuple[Tensor, Tensor]:
    """t ∈ (0, 1] with d(t) = bound, per state, and d'(t) there, where d(t) = ½ Σᵢ (1/qᵢ - 1 + log qᵢ),
    qᵢ = 1 + t kᵢ, kᵢ = σₒᵢ²/σᵢ² - 1: the KL covariance term of the precision interpolation (σ̃²/σₒ² = 1/q).
    d rises from 0 at t = 0, with d'(t) = ½ Σᵢ t kᵢ² / qᵢ²: near 0 it is ¼ t² Σᵢ kᵢ², and where σ ≫ σₒ it
    grows like 1/q towards a pole, so Newton's method runs on log d against log t (linear near 0, smooth
    towards the pole) from t = 2 √(bound / Σᵢ kᵢ²), inside a bisection bracket (a step leaving it bisects
    it), a fixed number of steps: no host synchronisation. 8 steps reach 1e-15 of the bound from
    realistic bounds to a bound of 1 with σ changed by factors of e^±9."""
    tiny = torch.finfo(k.dtype).tiny
    lo, hi = torch.zeros(k.shape[:-1], dtype=k.dtype), torch.ones(k.shape[:-1], dtype=k.dtype)
    t = torch.clamp(2 * torch.sqrt(bound / (k * k).sum(-1).clamp_min(tiny)), max=1.0)
    log_bound = math.log(bound)
    for _ in range(iters):
        q = 1 + t.unsqueeze(-1) * k
        d = (0.5 * (1 / q - 1 + torch.log(q)).sum(-1)).clamp_min(tiny)
        slope = 0.5 * (t.unsqueeze(-1) * k * k / (q * q)).sum(-1)
        above = d > bound
        hi, lo = torch.where(above, t, hi), torch.where(above, lo, t)
        step = t * torch.exp((log_bound - torch.log(d)) * d / (t * slope).clamp_min(tiny))
        t = torch.where((step >= lo) & (step <= hi), step, 0.5 * (lo + hi))
    q = 1 + t.unsqueeze(-1) * k
    return t, 0.5 * (t.unsqueeze(-1) * k * k / (q * q)).sum(-1)


def project_mean(kind: str, mean: Tensor, old_mean: Tensor, old_log_std: Tensor, bound: float) -> Tensor:
    d = mean_distance(kind, mean, old_mean, old_log_std)
    outside = d > bound
    scale = torch.sqrt(bound / torch.where(outside, d, torch.ones_like(d))).unsqueeze(-1)
    return torch.where(outside.unsqueeze(-1), old_mean + (mean - old_mean) * scale, mean)


def project_cov(kind: str, log_std: Tensor, old_log_std: Tensor, bound: float) -> Tensor:
    """The projected log σ, per state."""
    d = cov_distance(kind, log_std, old_log_std)
    outside = d > bound
    if kind in ("frobenius", "w2"):
        safe = torch.where(outside, d, torch.ones_like(d))
        scale = torch.sqrt(bound / safe).unsqueeze(-1)
        if kind == "frobenius":  # interpolate the variances
            var, old_var = torch.exp(2 * log_std), torch.exp(2 * old_log_std)
            projected = 0.5 * torch.log(old_var + (var - old_var) * scale)
        else:  # interpolate the standard deviations
            std, old_std = torch.exp(log_std), torch.exp(old_log_std)
            projected = torch.log(old_std + (std - old_std) * scale)
        return torch.where(outside.unsqueeze(-1), projected, log_std)
    # KL: the dual's root t*, then its gradient by the implicit function theorem:
    # t = t* - (d_Σ(t*; x) - bound) / (∂d_Σ/∂t)(t*), the slope held fixed.
    with torch.no_grad():  # in float64: d(t) is a difference of O(1) terms, its root set to the bound's precision
        k = torch.expm1(-2 * (log_std - old_log_std).detach().double())
        t_star, slope = (x.to(log_std.dtype) for x in _kl_dual_root(k, bound))
    residual = cov_distance(kind, _kl_precision_log_std(t_star, log_std, old_log_std), old_log_std) - bound
    t = t_star - residual / torch.where(outside, slope, torch.ones_like(slope))
    return torch.where(outside.unsqueeze(-1), _kl_precision_log_std(t, log_std, old_log_std), log_std)


def project(kind: str, params: Params, old_params: Params, *, mean_bound: float, cov_bound: float,
            min_entropy: Tensor | float | None = None) -> Params:
    """The projection of the Gaussian ``params`` (mean, log σ per state) onto the trust region around
    ``old_params``. ``min_entropy``: afterwards, raise σ (all dimensions alike) where the entropy per action
    dimension is below it (the paper's entropy control)."""
    (mean, log_std), (old_mean, old_log_std) = params, old_params
    mean_p = project_mean(kind, mean, old_mean, old_log_std, mean_bound)
    log_std_p = project_cov(kind, log_std, old_log_std, cov_bound)
    if min_entropy is not None:  # a Gaussian's entropy per dimension is mean(log σ) + ½ log(2πe)
        per_dim = log_std_p.mean(-1, keepdim=True) + 0.5 * math.log(2 * math.pi * math.e)
        log_std_p = log_std_p + torch.clamp(min_entropy - per_dim, min=0.0)
    return mean_p, log_std_p


class Projection:
    """Trust-region projection layers (see the module docstring) over minibatch epochs (Adam)."""

    def __init__(self, actor: Actor, cfg: ProjectionConfig, *, total_updates: int, seed: int = 0):
        if not actor.continuous:
            raise ConfigError("algo=projection projects Gaussian policies: the env needs a Box action space")
        self.actor, self.cfg = actor, cfg
        self.optimizer = torch.optim.Adam(actor.parameters(), lr=cfg.lr, eps=1e-5)
        self.scheduler = linear_decay(self.optimizer, total_updates) if cfg.lr_anneal else None
        self.generator = torch.Generator().manual_seed(seed)  # minibatch order
        self.total_updates, self.updates = max(total_updates, 1), 0
        self.initial_entropy: float | None = None  # per action dimension, for the entropy schedule

    def entropy_bound(self) -> float | None:
        """The entropy control's bound for this update: linear from the first policy's entropy per action
        dimension to ``entropy_final`` over the run (None: no control)."""
        if self.cfg.entropy_final is None:
            return None
        if self.initial_entropy is None:
            self.initial_entropy = float(self.actor.log_std.detach().mean()) + 0.5 * math.log(2 * math.pi * math.e)
        frac = min(self.updates / self.total_updates, 1.0)
        return self.initial_entropy + frac * (self.cfg.entropy_final - self.initial_entropy)

    def loss(self, params: Params, mb: PolicyData, min_entropy: float | None) -> tuple[Loss, dict[str, Tensor]]:
        cfg, dist = self.cfg, self.actor.dist
        p = tuple(x.detach().requires_grad_(True) for x in params)
        with torch.enable_grad():
            proj = project(cfg.projection, p, mb.old_params, mean_bound=cfg.mean_bound, cov_bound=cfg.cov_bound,
                           min_entropy=min_entropy)
            surr, info = surrogate(self.actor, proj, mb, normalize_advantages=cfg.normalize_advantages)
            ent = dist.entropy(proj).mean()
            fixed = tuple(x.detach() for x in proj)
            regression = (mean_distance(cfg.projection, p[0], fixed[0], fixed[1]) +
                          cov_distance(cfg.projection, p[1], fixed[1])).mean()
            value = -surr.value - cfg.ent_coef * ent + cfg.regression_coef * regression
            grads = torch.autograd.grad(value, p)
        info |= {"losses/regression": regression.detach(), "losses/entropy": ent.detach()}
        return Loss(value.detach(), grads), info

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        data = policy_data(batch, self.actor)
        min_entropy = self.entropy_bound()
        out = {"charts/policy_lr": self.optimizer.param_groups[0]["lr"]}
        if min_entropy is not None:
            out["trust_region/entropy_bound"] = min_entropy
        out |= minibatch_epochs(self.actor, data, lambda params, mb: self.loss(params, mb, min_entropy),
                                self.optimizer, epochs=self.cfg.epochs, minibatch_size=self.cfg.minibatch_size,
                                max_grad_norm=self.cfg.max_grad_norm, target_kl=None, generator=self.generator)
        if self.scheduler is not None:
            self.scheduler.step()
        self.updates += 1
        return out | self.distances(data, min_entropy) | policy_shift(self.actor, data)

    @torch.no_grad()
    def distances(self, data: PolicyData, min_entropy: float | None) -> dict[str, float]:
        """The updated policy's distances to the old one on the whole batch, before and after projection,
        and the fraction of states the projection moves."""
        cfg, (old_mean, old_log_std) = self.cfg, data.old_params
        mean, log_std = self.actor(data.obs)
        proj = project(cfg.projection, (mean, log_std), data.old_params, mean_bound=cfg.mean_bound,
                       cov_bound=cfg.cov_bound, min_entropy=min_entropy)
        d_mean, d_cov = mean_distance(cfg.projection, mean, old_mean, old_log_std), cov_distance(
            cfg.projection, log_std, old_log_std)
        return {"trust_region/mean_distance": float(d_mean.mean()), "trust_region/cov_distance": float(d_cov.mean()),
                "trust_region/mean_distance_projected": float(mean_distance(cfg.projection, proj[0], old_mean,
                                                                            old_log_std).mean()),
                "trust_region/cov_distance_projected": float(cov_distance(cfg.projection, proj[1], old_log_std).mean()),
                "trust_region/projected_fraction": float(((d_mean > cfg.mean_bound) | (d_cov > cfg.cov_bound))
                                                         .float().mean())}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "updates": self.updates, "initial_entropy": self.initial_entropy}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        if self.scheduler is not None:
            load_schedule(self.scheduler, state["scheduler"])
        self.updates, self.initial_entropy = int(state["updates"]), state["initial_entropy"]
