import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Independent, Normal, kl_divergence

from rl_trust.config import PolicyConfig
from rl_trust.policies import Actor, Categorical, DiagGaussian


def test_gaussian_formulas_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g,
                                                                                      dtype=torch.float64)
    mean2, log_std2 = mean + 0.3, log_std - 0.2
    actions = torch.randn(7, 3, generator=g, dtype=torch.float64)
    ref = Independent(Normal(mean, log_std.exp()), 1)
    ref2 = Independent(Normal(mean2, log_std2.exp()), 1)
    torch.testing.assert_close(DiagGaussian.log_prob((mean, log_std), actions), ref.log_prob(actions))
    torch.testing.assert_close(DiagGaussian.entropy((mean, log_std)), ref.entropy())
    torch.testing.assert_close(DiagGaussian.kl((mean, log_std), (mean2, log_std2)), kl_divergence(ref, ref2))


def test_categorical_formulas_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(9, 4, generator=g, dtype=torch.float64)
    logits2 = torch.randn(9, 4, generator=g, dtype=torch.float64)
    p, q = (logits,), (logits2,)
    actions = torch.randint(0, 4, (9,), generator=g)
    ref, ref2 = TorchCategorical(logits=logits), TorchCategorical(logits=logits2)
    torch.testing.assert_close(Categorical.log_prob(p, actions), ref.log_prob(actions))
    torch.testing.assert_close(Categorical.entropy(p), ref.entropy())
    torch.testing.assert_close(Categorical.kl(p, q), kl_divergence(ref, ref2))


def test_sampling_statistics():
    torch.manual_seed(0)
    mean, log_std = torch.tensor([[1.0, -2.0]]).expand(20000, 2), torch.tensor([[0.0, -1.0]]).expand(20000, 2)
    s = DiagGaussian.sample((mean, log_std))
    torch.testing.assert_close(s.mean(0), torch.tensor([1.0, -2.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(s.std(0), torch.tensor([1.0, np.exp(-1.0)], dtype=torch.float32), atol=0.03, rtol=0)
    logits = torch.log(torch.tensor([[0.2, 0.8]])).expand(20000, 2) + 3.0  # unnormalised
    assert abs(Categorical.sample((logits,)).float().mean().item() - 0.8) < 0.02


def test_actor_builds_for_box_and_discrete():
    box = Actor(3, gym.spaces.Box(-1, 1, (2,)), PolicyConfig(hidden=[8], activation="tanh", log_std_init=-0.5))
    mean, log_std = box(torch.zeros(5, 3))
    assert mean.shape == (5, 2) and torch.all(log_std == -0.5)
    disc = Actor(3, gym.spaces.Discrete(4), PolicyConfig(hidden=[8], activation="relu"))
    (logits,) = disc(torch.zeros(5, 3))
    assert logits.shape == (5, 4) and disc.log_std is None


def _dist_case(dist, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (6, 3) if dist is DiagGaussian else (6, 4)
    p = tuple(torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2 if dist is DiagGaussian else 1))
    q = tuple((t + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_() for t in p)
    actions = dist.sample(p) if dist is DiagGaussian else torch.randint(0, 4, (6,), generator=g)
    return p, q, actions


@pytest.mark.parametrize("dist", [DiagGaussian, Categorical], ids=["gaussian", "categorical"])
def test_analytic_gradients_and_fisher_product_match_autograd(dist):
    """Each distribution's *_grad against autograd of its formula, and fisher_product against the
    Hessian of the KL at q = p."""
    p, q, actions = _dist_case(dist, 0)
    for value, analytic in ((dist.log_prob(q, actions), dist.log_prob_grad(q, actions)),
                            (dist.entropy(q), dist.entropy_grad(q)), (dist.kl(p, q), dist.kl_grad(p, q))):
        ref = torch.autograd.grad(value.sum(), q, allow_unused=True)  # a Gaussian's entropy has no mean
        for a, r, t in zip(analytic, ref, q, strict=True):
            torch.testing.assert_close(a, torch.zeros_like(t) if r is None else r, rtol=1e-10, atol=1e-12)
    at = tuple(t.detach().clone().requires_grad_() for t in p)
    tangent = tuple(torch.randn_like(t) for t in p)
    grad = torch.autograd.grad(dist.kl(p, at).sum(), at, create_graph=True)
    hvp = torch.autograd.grad(sum((g * t).sum() for g, t in zip(grad, tangent, strict=True)), at)
    for a, r in zip(dist.fisher_product(p, tangent), hvp, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("space", [gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4)], ids=["box", "discrete"])
def test_actor_gradients_match_autograd(activation, space):
    """Actor.gradients (the network's hand-written backward under per-sample distribution gradients)
    against autograd through Actor.forward, in parameters() order."""
    torch.manual_seed(0)
    cfg = PolicyConfig(hidden=[16, 8], activation=activation, log_std_init=-0.5, ortho_init=False)
    actor = Actor(5, space, cfg).double()
    obs = torch.randn(32, 5, dtype=torch.float64)
    params, cache = actor.forward_cached(obs)
    weights = tuple(torch.randn_like(t) for t in params)
    hand = actor.gradients(cache, weights)
    ref = torch.autograd.grad(sum((t * w).sum() for t, w in zip(actor(obs), weights, strict=True)),
                              list(actor.parameters()))
    for h, r in zip(hand, ref, strict=True):
        torch.testing.assert_close(h, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("space", [gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4)], ids=["box", "discrete"])
def test_numpy_policy_matches_the_actor(activation, space):
    """The rollout's numpy sampling: the same network output as the actor, and samples that follow
    the actor's distribution."""
    torch.manual_seed(0)
    actor = Actor(5, space, PolicyConfig(hidden=[16, 16], activation=activation, log_std_init=-0.5, ortho_init=False))
    policy = actor.numpy_policy()
    rng = np.random.Generator(np.random.PCG64(0))
    obs = np.random.default_rng(1).standard_normal((6, 5)).astype(np.float32)
    with torch.no_grad():
        params = actor(torch.from_numpy(obs))
    for a, b in zip(policy.params(obs), params, strict=True):
        np.testing.assert_allclose(np.broadcast_to(a, b.shape), b.detach().numpy(), rtol=1e-5, atol=1e-6)
    n = 4000
    actions = np.stack([policy.sample(obs, policy.noise(rng, (6,))) for _ in range(n)])  # [n, 6, ...]
    if isinstance(space, gym.spaces.Box):
        mean, log_std = (p.detach().numpy() for p in params)
        assert actions.dtype == np.float32 and actions.shape == (n, 6, 3)
        np.testing.assert_allclose(actions.mean(0), mean, atol=5 * np.exp(-0.5) / np.sqrt(n))
        np.testing.assert_allclose(actions.std(0), np.exp(log_std), rtol=0.05)
    else:
        probs = torch.softmax(params[0], -1).numpy()
        assert actions.dtype == np.int64 and set(np.unique(actions)) <= set(range(4))
        freq = np.stack([(actions == k).mean(0) for k in range(4)], -1)
        np.testing.assert_allclose(freq, probs, atol=0.03)
    # Views of the parameters: the policy follows in-place updates (the optimizers' and the line search's).
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(1.0)
        np.testing.assert_allclose(policy.params(obs)[0], actor(torch.from_numpy(obs))[0].numpy(), rtol=1e-5, atol=1e-5)
