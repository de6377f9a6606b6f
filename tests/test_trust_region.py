import gymnasium as gym
import pytest
import torch
from torch.autograd.functional import hessian

from rl_trust.batch import RolloutBatch
from rl_trust.config import PolicyConfig, TRPOConfig
from rl_trust.policies import Actor
from rl_trust.updaters.common import policy_data
from rl_trust.updaters.trpo import TRPO
from rl_trust.updaters.trust_region import (
    backtracking_line_search,
    cg_solve,
    conjugate_gradient,
    fisher_vector_product,
    get_flat_params,
)

SPACES = pytest.mark.parametrize("space", [gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(3)],
                                 ids=["gaussian", "categorical"])


def random_spd(n, cond, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, torch.log10(torch.tensor(float(cond))).item(), n, dtype=torch.float64)
    return q @ torch.diag(eig) @ q.T, torch.randn(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("n, cond", [(5, 10.0), (30, 1e3), (50, 1e6)])
def test_cg_matches_linalg_solve(n, cond):
    A, b = random_spd(n, cond, seed=n)
    x = conjugate_gradient(lambda v: A @ v, b, iters=10 * n, residual_tol=1e-28)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-6, atol=1e-8)


def test_cg_stops_early_on_residual_and_reports_it():
    A, b = random_spd(10, 5.0, seed=3)
    res = cg_solve(lambda v: A @ v, b, iters=100, residual_tol=1e-20)
    assert res.iterations <= 10 + 2  # exact arithmetic: n steps
    assert res.residual < 1e-9
    assert (b - A @ res.x).norm() < 1e-8
    few = cg_solve(lambda v: A @ v, b, iters=2)
    assert few.iterations == 2 and few.residual > res.residual


def test_cg_on_indefinite_matrix_returns_finite_descent_direction():
    A = torch.diag(torch.tensor([2.0, 1.0, -1.0, -3.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    res = cg_solve(lambda v: A @ v, b, iters=10)
    assert torch.isfinite(res.x).all()
    assert res.negative_curvature
    assert b.dot(res.x) >= 0  # never a step of the wrong sign
    neg = torch.diag(torch.tensor([-1.0, -2.0], dtype=torch.float64))
    res = cg_solve(lambda v: neg @ v, torch.ones(2, dtype=torch.float64), iters=5)
    assert torch.equal(res.x, torch.zeros(2, dtype=torch.float64)) and res.negative_curvature


def tiny_actor(space):
    torch.manual_seed(0)
    actor = Actor(3, space, PolicyConfig(hidden=[5], activation="tanh")).double()
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return actor


@SPACES
def test_fisher_vector_product_matches_explicit_kl_hessian(space):
    actor = tiny_actor(space)
    obs = torch.randn(16, 3, dtype=torch.float64)
    params = list(actor.parameters())
    with torch.no_grad():
        old = tuple(t.clone() for t in actor(obs))
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def kl_of_flat(flat):
        tensors = [t.view(s) for t, s in zip(flat.split(sizes), shapes, strict=True)]
        new = torch.func.functional_call(actor, dict(zip([n for n, _ in actor.named_parameters()], tensors,
                                                         strict=True)), (obs,))
        return actor.dist.kl(old, new).mean()

    flat = get_flat_params(params)
    H = hessian(kl_of_flat, flat)
    v = torch.randn(flat.numel(), dtype=torch.float64)
    fvp = fisher_vector_product(lambda: actor.dist.kl(old, actor(obs)).mean(), params, v, damping=0.1)
    torch.testing.assert_close(fvp, H @ v + 0.1 * v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@SPACES
def test_actor_fisher_product_equals_the_reference_fvp(activation, space):
    """Actor.fisher_product (forward- then reverse-mode by hand) against fisher_vector_product (double
    backward through the KL), on every parameter including the log-std."""
    torch.manual_seed(0)
    actor = Actor(3, space, PolicyConfig(hidden=[6, 5], activation=activation, log_std_init=-0.5)).double()
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(0.3 * torch.randn_like(p))
        obs = torch.randn(16, 3, dtype=torch.float64)
        old = tuple(t.clone() for t in actor(obs))
    fvp = actor.fisher_product(obs, damping=0.1)
    for seed in range(3):
        v = torch.randn(sum(p.numel() for p in actor.parameters()), dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed))
        ref = fisher_vector_product(lambda: actor.dist.kl(old, actor(obs)).mean(), list(actor.parameters()), v,
                                    damping=0.1)
        torch.testing.assert_close(fvp(v), ref, rtol=1e-9, atol=1e-11)


def make_batch(actor, seed=0, T=64, N=4):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, N, 3, generator=g)
    with torch.no_grad():
        actions = actor.dist.sample(actor(obs))
    adv = torch.randn(T, N, generator=g)
    z = torch.zeros(T, N)
    return RolloutBatch(obs=obs, next_obs=obs, actions=actions, rewards=z, terminated=z.bool(),
                        truncated=z.bool(), values=z, next_values=z, advantages=adv, returns=adv)


@SPACES
def test_trpo_update_improves_surrogate_within_kl_bound(space):
    torch.manual_seed(0)
    actor = Actor(3, space, PolicyConfig(hidden=[16], activation="tanh"))
    trpo = TRPO(actor, TRPOConfig(max_kl=0.01))
    batch = make_batch(actor)
    data = policy_data(batch, actor)
    before = get_flat_params(trpo.params)
    m = trpo.update(batch)
    assert m["trust_region/line_search_accepted"] == 1.0
    assert 0 < m["trust_region/kl"] <= 0.01
    assert m["losses/surrogate_improvement"] > 0
    assert not torch.equal(before, get_flat_params(trpo.params))
    with torch.no_grad():
        kl = actor.dist.kl(data.old_params, actor(data.obs)).mean()
    assert kl <= 0.01


def test_line_search_accepted_steps_respect_bound_and_rejection_restores_bits():
    torch.manual_seed(1)
    actor = Actor(3, gym.spaces.Box(-1, 1, (2,)), PolicyConfig(hidden=[16], activation="tanh"))
    params = list(actor.parameters())
    batch = make_batch(actor)
    data = policy_data(batch, actor)
    adv = data.advantages

    def evaluate():
        new = actor(data.obs)
        ratio = torch.exp(actor.dist.log_prob(new, data.actions) - data.log_probs)
        return (ratio * adv).mean(), actor.dist.kl(data.old_params, new).mean()

    before = get_flat_params(params).clone()
    step = torch.randn_like(before)
    for max_kl in (1e-4, 1e-3, 1e-2):
        res = backtracking_line_search(params, step, evaluate, surrogate_before=-1e9, expected_improvement=1.0,
                                       max_kl=max_kl, backtrack_coeff=0.5, max_backtracks=30)
        assert res.accepted and res.kl <= max_kl
        with torch.no_grad():
            assert evaluate()[1] <= max_kl
        from rl_trust.updaters.trust_region import set_flat_params
        set_flat_params(params, before)
    # An impossible improvement target forces a rejection: parameters are bit-identical afterwards.
    res = backtracking_line_search(params, step, evaluate, surrogate_before=1e9, expected_improvement=1.0,
                                   max_kl=1.0, backtrack_coeff=0.5, max_backtracks=5)
    assert not res.accepted and res.backtracks == 5
    assert torch.equal(get_flat_params(params), before)


def test_trpo_raises_on_a_nan_loss_before_changing_anything():
    actor = Actor(3, gym.spaces.Box(-1, 1, (2,)), PolicyConfig(hidden=[8], activation="tanh"))
    trpo = TRPO(actor, TRPOConfig(max_kl=0.01))
    batch = make_batch(actor)
    bad = batch.replace(advantages=torch.full_like(batch.advantages, float("nan")))
    before = get_flat_params(trpo.params).clone()
    with pytest.raises(FloatingPointError, match="not finite"):
        trpo.update(bad)
    assert torch.equal(get_flat_params(trpo.params), before)
