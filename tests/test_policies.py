import gymnasium as gym
import numpy as np
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
