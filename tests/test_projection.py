"""The projection updater's layers (rl_trust/updaters/projection.py): identity inside the trust region,
on its bound outside, gradients against finite differences, the distances against direct computation."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from rl_trust.updaters.projection import PROJECTIONS, cov_distance, mean_distance, project

F64 = {"dtype": torch.float64}
MEAN_BOUND, COV_BOUND = 0.03, 0.001


def gaussians(n=64, a=3, spread=0.3, seed=0):
    """Old and new per-state Gaussians: some states barely moved (inside), most moved far (outside)."""
    g = torch.Generator().manual_seed(seed)
    old = (torch.randn(n, a, generator=g, **F64), 0.3 * torch.randn(n, a, generator=g, **F64))
    scale = torch.where(torch.arange(n) % 4 == 0, 1e-3, spread).to(torch.float64).unsqueeze(-1)
    new = tuple(x + scale * torch.randn(n, a, generator=g, **F64) for x in old)
    return new, old


def sqrtm(m):
    values, vectors = torch.linalg.eigh(m)
    return vectors @ torch.diag_embed(values.clamp_min(0).sqrt()) @ vectors.mT


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_inside_the_region_the_projection_is_the_identity(kind):
    new, old = gaussians()
    inside = (mean_distance(kind, new[0], *old) <= MEAN_BOUND) & (cov_distance(kind, new[1], old[1]) <= COV_BOUND)
    assert inside.any() and not inside.all()
    proj = project(kind, new, old, mean_bound=MEAN_BOUND, cov_bound=COV_BOUND)
    for p, x in zip(proj, new, strict=True):
        assert torch.equal(p[inside], x[inside])


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_outside_the_projection_meets_the_bound_per_state(kind):
    new, old = gaussians()
    mean_p, log_std_p = project(kind, new, old, mean_bound=MEAN_BOUND, cov_bound=COV_BOUND)
    d_mean_before, d_cov_before = mean_distance(kind, new[0], *old), cov_distance(kind, new[1], old[1])
    d_mean, d_cov = mean_distance(kind, mean_p, *old), cov_distance(kind, log_std_p, old[1])
    out_mean, out_cov = d_mean_before > MEAN_BOUND, d_cov_before > COV_BOUND
    assert out_mean.sum() > 10 and out_cov.sum() > 10
    torch.testing.assert_close(d_mean[out_mean], torch.full_like(d_mean[out_mean], MEAN_BOUND), rtol=1e-9, atol=0)
    torch.testing.assert_close(d_cov[out_cov], torch.full_like(d_cov[out_cov], COV_BOUND), rtol=1e-9, atol=0)
    # and nowhere beyond it
    assert (d_mean <= MEAN_BOUND * (1 + 1e-9)).all() and (d_cov <= COV_BOUND * (1 + 1e-9)).all()


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_gradients_through_the_projection_match_finite_differences(kind):
    new, old = gaussians(n=12, a=2)
    inputs = tuple(x.clone().requires_grad_(True) for x in (*new, *old))

    def f(mean, log_std, old_mean, old_log_std):
        return project(kind, (mean, log_std), (old_mean, old_log_std), mean_bound=MEAN_BOUND, cov_bound=COV_BOUND)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-7, atol=1e-6, rtol=1e-5)


def test_the_distances_match_direct_computation():
    new, old = gaussians(n=16, a=3)
    (mu, ls), (mu_o, ls_o) = new, old
    cov, cov_o = torch.diag_embed(torch.exp(2 * ls)), torch.diag_embed(torch.exp(2 * ls_o))
    # KL(π ‖ π_old) from torch.distributions = its mean part + its covariance part
    kl = kl_divergence(MultivariateNormal(mu, cov), MultivariateNormal(mu_o, cov_o))
    torch.testing.assert_close(mean_distance("kl", mu, mu_o, ls_o) + cov_distance("kl", ls, ls_o), kl)
    # Frobenius: ||Σ - Σ_old||_F² and the Mahalanobis mean term with the full inverse
    torch.testing.assert_close(cov_distance("frobenius", ls, ls_o), torch.linalg.matrix_norm(cov - cov_o) ** 2)
    diff = (mu - mu_o).unsqueeze(-1)
    maha = (diff.mT @ torch.linalg.inv(cov_o) @ diff).squeeze(-1).squeeze(-1)
    torch.testing.assert_close(mean_distance("frobenius", mu, mu_o, ls_o), maha)
    # scaled W2: the Wasserstein-2 distance of the Gaussians whitened by the old covariance
    w = torch.linalg.inv(sqrtm(cov_o))
    m, m_o, s, s_o = (w @ mu.unsqueeze(-1)).squeeze(-1), (w @ mu_o.unsqueeze(-1)).squeeze(-1), w @ cov @ w.mT, \
        w @ cov_o @ w.mT
    root_o = sqrtm(s_o)
    w2_cov = (s + s_o - 2 * sqrtm(root_o @ s @ root_o)).diagonal(dim1=-2, dim2=-1).sum(-1)
    torch.testing.assert_close(mean_distance("w2", mu, mu_o, ls_o), ((m - m_o) ** 2).sum(-1))
    torch.testing.assert_close(cov_distance("w2", ls, ls_o), w2_cov)


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_entropy_control_holds_the_bound(kind):
    new, old = gaussians()
    new = (new[0], new[1] - 2.0)  # a collapsing policy
    bound = 0.5
    _, log_std_p = project(kind, new, old, mean_bound=MEAN_BOUND, cov_bound=COV_BOUND, min_entropy=bound)
    per_dim = log_std_p.mean(-1) + 0.5 * math.log(2 * math.pi * math.e)
    assert (per_dim >= bound - 1e-12).all()


@pytest.mark.parametrize("spread, bound", [(0.3, 0.001), (3.0, 0.001), (3.0, 1.0)])
def test_the_kl_dual_root_converges_from_small_to_extreme_steps(spread, bound):
    """σ moved by factors up to e^±9 in one update, a loose bound: the projected KL still sits on the bound."""
    new, old = gaussians(n=2000, a=6, spread=spread)
    _, log_std_p = project("kl", new, old, mean_bound=MEAN_BOUND, cov_bound=bound)
    outside = cov_distance("kl", new[1], old[1]) > bound
    d = cov_distance("kl", log_std_p, old[1])
    torch.testing.assert_close(d[outside], torch.full_like(d[outside], bound), rtol=1e-10, atol=0)
