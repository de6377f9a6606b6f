import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Independent, Normal, kl_divergence

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
    p, q = (torch.log_softmax(logits, -1),), (torch.log_softmax(logits2, -1),)
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
    logp = torch.log(torch.tensor([[0.2, 0.8]])).expand(20000, 2)
    assert abs(Categorical.sample((logp,)).float().mean().item() - 0.8) < 0.02


def test_actor_builds_for_box_and_discrete():
    box = Actor(3, gym.spaces.Box(-1, 1, (2,)), [8], "tanh", log_std_init=-0.5)
    mean, log_std = box(torch.zeros(5, 3))
    assert mean.shape == (5, 2) and torch.all(log_std == -0.5)
    disc = Actor(3, gym.spaces.Discrete(4), [8], "relu")
    (logp,) = disc(torch.zeros(5, 3))
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(5))


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("space", [gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4)], ids=["box", "discrete"])
def test_numpy_policy_matches_the_actor(activation, space):
    """The rollout's numpy snapshot: its log-probabilities are the torch formulas' at the actions it
    samples, and its samples follow the actor's distribution."""
    torch.manual_seed(0)
    actor = Actor(5, space, [16, 16], activation, log_std_init=-0.5, ortho_init=False)
    policy = actor.numpy_policy()
    rng = np.random.Generator(np.random.PCG64(0))
    obs = np.random.default_rng(1).standard_normal((6, 5)).astype(np.float32)
    with torch.no_grad():
        params = actor(torch.from_numpy(obs))
    n = 4000
    actions, log_probs = zip(*(policy.sample(obs, rng) for _ in range(n)), strict=True)
    actions, log_probs = np.stack(actions), np.stack(log_probs)  # [n, 6, ...], [n, 6]
    with torch.no_grad():
        expanded = tuple(p.expand(n, *p.shape) for p in params)
        ref = actor.dist.log_prob(expanded, torch.from_numpy(actions)).numpy()
    np.testing.assert_allclose(log_probs, ref, rtol=1e-5, atol=1e-5)
    if isinstance(space, gym.spaces.Box):
        mean, log_std = (p.detach().numpy() for p in params)
        assert actions.dtype == np.float32 and actions.shape == (n, 6, 3)
        np.testing.assert_allclose(actions.mean(0), mean, atol=5 * np.exp(-0.5) / np.sqrt(n))
        np.testing.assert_allclose(actions.std(0), np.exp(log_std), rtol=0.05)
    else:
        probs = params[0].detach().exp().numpy()
        assert actions.dtype == np.int64 and set(np.unique(actions)) <= set(range(4))
        freq = np.stack([(actions == k).mean(0) for k in range(4)], -1)
        np.testing.assert_allclose(freq, probs, atol=0.03)
    # The snapshot does not follow later changes to the actor: a new one does.
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(1.0)
    assert not np.allclose(policy._forward(obs), actor.numpy_policy()._forward(obs))
