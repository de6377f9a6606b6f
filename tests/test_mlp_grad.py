import copy

import pytest
import torch
from torch import nn

from rl_trust.batch import RolloutBatch
from rl_trust.critic import Critic, optimizer_factory
from rl_trust.mlp_grad import MLPGrad
from rl_trust.policies import ValueNet, mlp


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_gradients_match_autograd(activation, dtype):
    torch.manual_seed(0)
    net = mlp([5, 16, 12, 3], activation, out_gain=1.0).to(dtype)
    for m in net:  # non-zero biases, so their gradients and the activations' kinks are exercised
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.bias)
    x, target = torch.randn(40, 5, dtype=dtype), torch.randn(40, 3, dtype=dtype)
    ref = copy.deepcopy(net)
    loss = ((ref(x) - target) ** 2).sum()
    loss.backward()

    manual = MLPGrad(net)
    out, inputs = manual.forward(x)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, ref(x).detach(), **tol)
    manual.backward(inputs, 2 * (out - target))
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, **tol)
    # A second backward accumulates, as autograd does.
    manual.backward(inputs, 2 * (out - target))
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, 2 * q.grad, **tol)


def test_unsupported_networks_are_refused():
    assert not MLPGrad.supports(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 1)))
    assert not MLPGrad.supports(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))
    assert not MLPGrad.supports(nn.Sequential(nn.Linear(2, 2, bias=False)))
    assert MLPGrad.supports(nn.Sequential(nn.Linear(2, 1)))
    with pytest.raises(ValueError, match="MLPGrad"):
        MLPGrad(nn.Sequential(nn.Linear(2, 2), nn.GELU(), nn.Linear(2, 1)))


def _random_batch(T: int, N: int, seed: int) -> RolloutBatch:
    """A [T, N] batch of 6-dim observations and 2-dim actions, random where the critic reads it."""
    g = torch.Generator().manual_seed(seed)
    return RolloutBatch(obs=torch.randn(T, N, 6, generator=g), next_obs=torch.randn(T, N, 6, generator=g),
                        actions=torch.randn(T, N, 2, generator=g), log_probs=torch.zeros(T, N),
                        rewards=torch.randn(T, N, generator=g), terminated=torch.zeros(T, N, dtype=torch.bool),
                        truncated=torch.zeros(T, N, dtype=torch.bool))


@pytest.mark.parametrize("optim", ["adam", "arturo"])
def test_critic_update_with_hand_written_gradient_matches_autograd(optim):
    torch.manual_seed(0)
    T, N = 32, 4
    batch = _random_batch(T, N, seed=1)
    critics = []
    for manual in (True, False):
        torch.manual_seed(0)
        critics.append(Critic(ValueNet(6, [32, 32], "tanh"), optimizer_factory(optim), epochs=3, minibatch_size=16,
                              max_grad_norm=0.5, seed=0, manual_grad=manual))
    assert critics[0]._manual is not None and critics[1]._manual is None
    metrics = []
    for critic in critics:
        b = critic.evaluate(batch)
        b = b.replace(returns=b.values + torch.randn(T, N, generator=torch.Generator().manual_seed(2)),
                      advantages=torch.zeros(T, N))
        metrics.append(critic.update(b))
    assert metrics[0]["losses/value"] == pytest.approx(metrics[1]["losses/value"], rel=1e-4)
    for p, q in zip(critics[0].net.parameters(), critics[1].net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_leading_dimensions_are_kept():
    torch.manual_seed(0)
    net = mlp([4, 8, 2], "tanh", out_gain=1.0)
    x = torch.randn(3, 5, 4)
    out, _ = MLPGrad(net).forward(x)
    assert out.shape == (3, 5, 2)
    torch.testing.assert_close(out, net(x).detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_autograd_node_gives_autograd_gradients_under_a_policy_loss(activation):
    """Actor(hand_grad=True): the network as one autograd node, the loss above it autograd's."""
    import gymnasium as gym

    from rl_trust.policies import Actor

    torch.manual_seed(0)
    actor = Actor(5, gym.spaces.Box(-1, 1, (2,)), [16, 16], activation, log_std_init=-0.3)
    obs, actions, adv = torch.randn(30, 5), torch.randn(30, 2), torch.randn(30)
    grads = []
    for hand in (True, False):
        actor.zero_grad(set_to_none=True)
        params = actor(obs, hand_grad=hand)
        loss = -(actor.dist.log_prob(params, actions) * adv).mean() - 0.01 * actor.dist.entropy(params).mean()
        loss.backward()
        grads.append([p.grad.clone() for p in actor.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("out_dim", [1, 3])
def test_numpy_loss_and_gradients_match_autograd(activation, dtype, out_dim):
    torch.manual_seed(1)
    net = mlp([5, 16, 12, out_dim], activation, out_gain=1.0).to(dtype)
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.bias)
    x, target = torch.randn(40, 5, dtype=dtype), torch.randn(40, out_dim, dtype=dtype)
    ref = copy.deepcopy(net)
    loss = 0.5 * ((ref(x) - target) ** 2).sum(-1).mean()
    loss.backward()
    manual = MLPGrad(net)
    grads = [torch.full_like(p, float("nan")).numpy() for p in manual.params]  # overwritten, not accumulated
    got = manual.numpy_loss_grad(x.numpy(), target.squeeze(-1).numpy() if out_dim == 1 else target.numpy(), grads)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    assert got == pytest.approx(loss.item(), rel=tol["rtol"])
    for g, q in zip(grads, ref.parameters(), strict=True):
        torch.testing.assert_close(torch.from_numpy(g), q.grad, **tol)
    net[0].weight.data = net[0].weight.data.clone()  # new storage: the cached views must follow
    with torch.no_grad():
        net[0].weight.mul_(2.0)
    ref2 = copy.deepcopy(net)
    loss2 = 0.5 * ((ref2(x) - target) ** 2).sum(-1).mean().detach()
    got2 = manual.numpy_loss_grad(x.numpy(), target.squeeze(-1).numpy() if out_dim == 1 else target.numpy(), grads)
    assert got2 == pytest.approx(float(loss2), rel=tol["rtol"])


def test_numpy_critic_step_clips_like_clip_grad_norm():
    T, N = 16, 4
    batch = _random_batch(T, N, seed=2)
    critics = []
    for manual in (True, False):
        torch.manual_seed(0)
        c = Critic(ValueNet(6, [16, 16], "tanh"), optimizer_factory("sgd"), epochs=2, minibatch_size=16,
                   max_grad_norm=0.05, seed=3, manual_grad=manual)
        b = c.evaluate(batch)
        returns = 10 * torch.randn(T, N, generator=torch.Generator().manual_seed(4))
        b = b.replace(advantages=torch.zeros(T, N), returns=returns)
        critics.append((c, c.update(b)))
    (a, ma), (b, mb) = critics
    assert ma["losses/value"] == pytest.approx(mb["losses/value"], rel=1e-5)
    for p, q in zip(a.net.parameters(), b.net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
