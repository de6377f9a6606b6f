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


@pytest.mark.parametrize("case", ["ppo", "ppo_ties", "kl_penalty", "no_clip_no_norm"])
def test_hand_written_surrogate_gradient_equals_autograd(case):
    """gaussian_loss_and_grad (PPO's and the KL penalty's minibatch step) against autograd on the same loss."""
    from rl_trust.updaters.common import PolicyData, gaussian_loss_and_grad, surrogate_objective

    torch.manual_seed(0)
    actor = Actor(5, gym.spaces.Box(-1, 1, (3,)), [16, 16], "tanh", log_std_init=-0.4)
    obs, actions = torch.randn(48, 5), torch.randn(48, 3)
    with torch.no_grad():
        old = tuple(p.detach() for p in actor(obs, hand_grad=True))
        if case == "ppo_ties":  # ratio exactly 1 (ties of min), as on an update's first minibatch
            old_lp = actor.dist.log_prob(old, actions)
        else:  # a policy moved away from the data: ratios on both sides of the clip range
            old_lp = actor.dist.log_prob(old, actions) + 0.3 * torch.randn(48)
            old = (old[0] + 0.2 * torch.randn_like(old[0]), old[1] + 0.1)
    mb = PolicyData(obs, actions, old_lp, torch.randn(48), old)
    clip = None if case == "no_clip_no_norm" else 0.2
    norm = case != "no_clip_no_norm"
    kl_coef = 3.0 if case == "kl_penalty" else None

    actor.zero_grad(set_to_none=True)
    loss, info = gaussian_loss_and_grad(actor, mb, clip_range=clip, normalize_advantages=norm, ent_coef=0.01,
                                        kl_coef=kl_coef)
    hand = [p.grad.clone() for p in actor.parameters()]
    actor.zero_grad(set_to_none=True)
    s = surrogate_objective(actor, mb, clip_range=clip, normalize_advantages=norm, hand_grad=True)
    ref_loss = -s.surrogate - 0.01 * s.entropy
    if kl_coef is not None:
        ref_loss = ref_loss + kl_coef * actor.dist.kl(mb.old_params, s.params).mean()
    ref_loss.backward()
    assert not loss.requires_grad
    assert float(loss) == pytest.approx(float(ref_loss.detach()), rel=1e-5, abs=1e-7)
    for key in ("losses/policy", "losses/entropy", "approx_kl"):
        assert float(info[key]) == pytest.approx(float(s.info[key]), rel=1e-5, abs=1e-8), key
    if clip is not None:
        assert 0 < float(info["losses/clipfrac"]) < 1 or case == "ppo_ties"
    for p, h in zip(actor.parameters(), hand, strict=True):
        torch.testing.assert_close(h, p.grad, rtol=1e-4, atol=1e-6)
