import re
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from test_trust_region import make_batch

from rl_trust.config import KLPenaltyConfig, PolicyConfig, PPOConfig
from rl_trust.policies import Actor, Categorical, DiagGaussian
from rl_trust.updaters import UPDATERS
from rl_trust.updaters.common import PolicyData, entropy, mean_kl, policy_data, surrogate
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
    lp = (torch.tensor([1.0, 0.0, -1.0]),)
    lq = (torch.tensor([0.0, 0.5, 0.0]),)
    lp_n, lq_n = (lp[0].expand(n, 3),), (lq[0].expand(n, 3),)
    a = Categorical.sample(lp_n)
    mc = (Categorical.log_prob(lp_n, a) - Categorical.log_prob(lq_n, a)).mean()
    assert Categorical.kl(lp, lq).item() == pytest.approx(mc.item(), abs=5e-3)


def _updater(actor, **kw):
    return KLPenalty(actor, KLPenaltyConfig(**(dict(lr=3e-3, epochs=4, minibatch_size=64, target_kl=0.01) | kw)),
                     total_updates=10)


def test_beta_adapts_once_per_update_from_batch_kl_and_round_trips():
    torch.manual_seed(0)
    actor = Actor(3, gym.spaces.Box(-1, 1, (2,)), PolicyConfig(hidden=[16], activation="tanh"))
    upd = _updater(actor, lr=1e-2, target_kl=1e-6)  # any real step overshoots this target
    m = upd.update(make_batch(actor))
    assert m["trust_region/beta"] == 1.0 and m["trust_region/kl"] > 1.5e-6
    assert upd.beta == 2.0 == m["trust_region/beta_next"]
    state = upd.state_dict()
    other = _updater(Actor(3, gym.spaces.Box(-1, 1, (2,)), PolicyConfig(hidden=[16], activation="tanh")))
    other.load_state_dict(state)
    assert other.beta == 2.0 and other.scheduler.last_epoch == 1
    assert torch.equal(other.generator.get_state(), upd.generator.get_state())


def test_fixed_beta_stays_fixed():
    torch.manual_seed(0)
    actor = Actor(3, gym.spaces.Discrete(3), PolicyConfig(hidden=[16], activation="tanh"))
    upd = _updater(actor, adaptive=False, beta=0.3)
    for seed in range(3):
        upd.update(make_batch(actor, seed=seed))
    assert upd.beta == 0.3


def test_minibatch_order_comes_from_the_updater_generator():
    """Two updaters with the same seed give the same update whatever the global torch RNG does."""
    results = []
    for global_seed in (0, 1):
        torch.manual_seed(7)
        actor = Actor(3, gym.spaces.Box(-1, 1, (2,)), PolicyConfig(hidden=[16], activation="tanh"))
        upd = UPDATERS["ppo"](actor, PPOConfig(minibatch_size=32, epochs=2), total_updates=5, seed=3)
        batch = make_batch(actor)
        torch.manual_seed(global_seed)
        upd.update(batch)
        results.append(torch.cat([p.detach().reshape(-1) for p in actor.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


CASES = ["ppo", "ppo_ties", "kl_penalty", "no_clip_no_norm", "discrete_ppo"]


@pytest.mark.parametrize("case", CASES)
def test_loss_gradients_equal_autograd(case):
    """The losses the updaters write (combinations of surrogate, entropy and mean_kl) give through
    Actor.gradients the parameter gradients autograd gives through Actor.forward; ties of min and
    the clip's bounds included."""
    torch.manual_seed(0)
    space = gym.spaces.Discrete(4) if case.startswith("discrete") else gym.spaces.Box(-1, 1, (3,))
    actor = Actor(5, space, PolicyConfig(hidden=[16, 16], activation="tanh", log_std_init=-0.4)).double()
    obs = torch.randn(48, 5, dtype=torch.float64)
    with torch.no_grad():
        old = actor(obs)
        actions = actor.dist.sample(old)
        old_lp = actor.dist.log_prob(old, actions)
        if case != "ppo_ties":  # a policy moved away from the data: ratios on both sides of the clip range
            old_lp = old_lp + 0.3 * torch.randn(48, dtype=torch.float64)
            old = tuple(p + 0.2 * torch.randn_like(p) for p in old)
    mb = PolicyData(obs, actions, old_lp, torch.randn(48, dtype=torch.float64), old)
    clip = None if case == "no_clip_no_norm" else 0.2

    def loss_of(params):
        surr, info = surrogate(actor, params, mb, clip_range=clip, normalize_advantages=case != "no_clip_no_norm")
        loss = -surr - 0.01 * entropy(actor, params)
        return (loss + 3.0 * mean_kl(actor, old, params) if case == "kl_penalty" else loss), info

    params, cache = actor.forward_cached(obs)
    loss, info = loss_of(params)
    hand = actor.gradients(cache, loss.grad)
    ref_loss, _ = loss_of(actor(obs))
    ref = torch.autograd.grad(ref_loss.value, list(actor.parameters()))
    assert float(loss.value) == pytest.approx(float(ref_loss.value.detach()), rel=1e-12)
    if clip is not None:
        assert 0 < float(info["losses/clipfrac"]) < 1 or case == "ppo_ties"
    for h, r in zip(hand, ref, strict=True):
        torch.testing.assert_close(h, r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["ppo", "kl_penalty", "trpo"])
def test_updater_files_hold_no_derivatives(name):
    """An updater writes its loss once; gradients come from the distributions and the network."""
    source = (Path(__file__).parents[1] / "rl_trust" / "updaters" / f"{name}.py").read_text()
    assert not re.search(r"autograd|\.backward\(|_grad\(|jvp|hessian", source)


def test_old_policy_is_a_snapshot_not_a_view():
    """The update changes the log-std in place: the old policy's parameters must not follow it."""
    actor = Actor(3, gym.spaces.Box(-1, 1, (2,)), PolicyConfig(hidden=[8], activation="tanh"))
    data = policy_data(make_batch(actor), actor)
    before = tuple(p.clone() for p in data.old_params)
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(0.5)
    for a, b in zip(data.old_params, before, strict=True):
        assert torch.equal(a, b)
