import gymnasium as gym
import pytest
import torch
from test_trust_region import make_batch

from rl_trust.policies import Actor, Categorical, DiagGaussian
from rl_trust.updaters.kl_penalty import KLPenalty, adapt_beta


@pytest.mark.parametrize("kl, expected", [(0.016, 2.0), (0.015, 1.0), (0.01, 1.0), (0.0067, 1.0), (0.006, 0.5)])
def test_adaptation_rule(kl, expected):
    assert adapt_beta(1.0, kl, 0.01, 1e-4, 1e4) == expected


def test_adaptation_respects_bounds():
    assert adapt_beta(8.0, 1.0, 0.01, 0.1, 10.0) == 10.0
    assert adapt_beta(0.15, 0.0, 0.01, 0.1, 10.0) == 0.1


def test_analytic_kl_matches_monte_carlo():
    torch.manual_seed(0)
    n = 400_000
    p = (torch.tensor([0.3, -0.2]), torch.tensor([0.1, -0.4]))
    q = (torch.tensor([0.0, 0.1]), torch.tensor([-0.2, 0.0]))
    x = DiagGaussian.sample((p[0].expand(n, 2), p[1].expand(n, 2)))
    mc = (DiagGaussian.log_prob(p, x) - DiagGaussian.log_prob(q, x)).mean()
    assert DiagGaussian.kl(p, q).item() == pytest.approx(mc.item(), abs=5e-3)
    lp = (torch.log_softmax(torch.tensor([1.0, 0.0, -1.0]), -1),)
    lq = (torch.log_softmax(torch.tensor([0.0, 0.5, 0.0]), -1),)
    lp_n, lq_n = (lp[0].expand(n, 3),), (lq[0].expand(n, 3),)
    a = Categorical.sample(lp_n)
    mc = (Categorical.log_prob(lp_n, a) - Categorical.log_prob(lq_n, a)).mean()
    assert Categorical.kl(lp, lq).item() == pytest.approx(mc.item(), abs=5e-3)


def _updater(actor, **kw):
    args = dict(lr=3e-3, epochs=4, minibatch_size=64, kl_target=0.01, beta=1.0)
    return KLPenalty(actor, **(args | kw))


def test_beta_adapts_once_per_update_from_batch_kl_and_round_trips():
    torch.manual_seed(0)
    actor = Actor(3, gym.spaces.Box(-1, 1, (2,)), [16], "tanh")
    upd = _updater(actor, lr=1e-2, kl_target=1e-6)  # any real step overshoots this target
    m = upd.update(make_batch(actor))
    assert m["trust_region/beta"] == 1.0 and m["trust_region/kl"] > 1.5e-6
    assert upd.beta == 2.0 == m["trust_region/beta_next"]
    state = upd.state_dict()
    other = _updater(Actor(3, gym.spaces.Box(-1, 1, (2,)), [16], "tanh"))
    other.load_state_dict(state)
    assert other.beta == 2.0 and other.num_updates == 1


def test_fixed_beta_stays_fixed():
    torch.manual_seed(0)
    actor = Actor(3, gym.spaces.Discrete(3), [16], "tanh")
    upd = _updater(actor, adaptive=False, beta=0.3)
    for seed in range(3):
        upd.update(make_batch(actor, seed=seed))
    assert upd.beta == 0.3
