"""rl_trust.nets and the critic's hand-written minibatch steps against autograd references."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rl_trust.batch import RolloutBatch, minibatch_indices
from rl_trust.config import CriticConfig
from rl_trust.critic import Critic, make_optimizer, value_loss
from rl_trust.nets import ACTIVATIONS, MLP

TORCH_ACT = {"tanh": torch.tanh, "relu": F.relu, "elu": F.elu}
SIZES = [5, 16, 12, 3]


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


def _ref_forward(x, params, activation):
    """The plain ``Linear (act Linear)*`` network, with torch's own layers and activations."""
    h = x
    for k in range(0, len(params), 2):
        h = F.linear(h, params[k], params[k + 1])
        if k < len(params) - 2:
            h = TORCH_ACT[activation](h)
    return h


def _net(activation, dtype, seed=0):
    torch.manual_seed(seed)
    net = MLP(SIZES, activation).to(dtype)
    with torch.no_grad():
        for layer in net.layers:  # ortho init zeroes the biases
            layer.bias.normal_()
    x = 2 * torch.randn(40, SIZES[0], dtype=dtype)  # pre-activations of both signs
    return net, x


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mlp_forward_backward_jvp_match_autograd(activation, dtype):
    net, x = _net(activation, dtype)
    tol = _tol(dtype)
    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    ref = _ref_forward(x, params, activation)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad((ref * grad_out).sum(), params)
    tangents = [torch.randn_like(p) for p in params]
    _, ref_jvp = torch.func.jvp(lambda *p: _ref_forward(x, p, activation), tuple(p.detach() for p in params),
                                tuple(tangents))

    torch.testing.assert_close(net(x), ref, **tol)
    out, cache = net.forward_cached(x)
    torch.testing.assert_close(out, ref.detach(), **tol)
    grads = net.backward(cache, grad_out)
    assert len(grads) == len(params)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, **tol)
    torch.testing.assert_close(net.jvp(cache, tangents), ref_jvp, **tol)

    np_out, inputs = net.numpy_forward(x.numpy(), weights := net.numpy_weights())
    torch.testing.assert_close(torch.from_numpy(np.asarray(np_out)), out, **tol)
    np_grads = net.numpy_backward(grad_out.numpy(), weights, inputs)
    for g, r in zip(np_grads, ref_grads, strict=True):
        torch.testing.assert_close(torch.from_numpy(np.asarray(g)), r, **tol)
    rowwise, _ = net.numpy_forward(x.numpy(), weights, rowwise=True)
    torch.testing.assert_close(torch.from_numpy(np.asarray(rowwise)), out, **tol)


@pytest.mark.parametrize("width", [6, 64])
def test_rowwise_numpy_forward_does_not_depend_on_the_batch(width):
    """The rollout's policy query: a row's output is the same bits in any batch (plain BLAS products are
    not: their kernels change with the batch's size)."""
    torch.manual_seed(0)
    net = MLP([17, 64, width], "tanh")
    weights = net.numpy_weights()
    x = np.random.default_rng(0).standard_normal((16, 17)).astype(np.float32)
    whole, _ = net.numpy_forward(x, weights, rowwise=True)
    for lo in range(16):
        for hi in range(lo + 1, 17):
            np.testing.assert_array_equal(net.numpy_forward(x[lo:hi], weights, rowwise=True)[0], whole[lo:hi])


def test_leading_dimensions():
    net, _ = _net("tanh", torch.float64)
    x = torch.randn(3, 7, SIZES[0], dtype=torch.float64)
    out = net(x)
    assert out.shape == (3, 7, SIZES[-1])
    params = list(net.parameters())
    torch.testing.assert_close(out, net(x.reshape(-1, SIZES[0])).reshape(3, 7, -1))
    for t in range(3):
        torch.testing.assert_close(out[t], _ref_forward(x[t], params, "tanh"))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_table(name):
    act = ACTIVATIONS[name]
    net = MLP([3, 4, 2], name)
    assert net.act is act and net(torch.randn(5, 3)).shape == (5, 2)
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)[torch.arange(61) != 30].requires_grad_()  # no kink at 0
    y = act.fn(z, torch)
    if name in TORCH_ACT:
        torch.testing.assert_close(y, TORCH_ACT[name](z))
    (dy,) = torch.autograd.grad(y.sum(), z)
    torch.testing.assert_close(torch.as_tensor(act.grad(y.detach(), torch), dtype=dy.dtype), dy)
    y_np = act.fn(z.detach().numpy(), np)
    np.testing.assert_allclose(y_np, y.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(act.grad(y_np, np), dtype=float), dy.numpy(), rtol=1e-12)


@pytest.mark.parametrize("clip_range", [None, 0.2, 0.25])
@pytest.mark.parametrize("xp", [np, torch])
def test_value_loss_matches_autograd(clip_range, xp):
    g = torch.Generator().manual_seed(0)
    old = torch.randn(30, generator=g, dtype=torch.float64)
    values = old + 0.5 * torch.randn(30, generator=g, dtype=torch.float64)
    returns = torch.randn(30, generator=g, dtype=torch.float64)
    # Exact ties and steps exactly at the clip boundary: (old, value, return)
    special = [(0.0, 0.2, 1.0), (0.0, -0.2, -1.0), (0.0, 0.2, 0.3), (0.0, 0.1, 0.7), (1.0, 1.0, 0.0),
               (0.0, 0.25, -0.5), (0.0, -0.25, 0.5), (0.0, 0.5, 0.375), (0.0, -0.5, -0.375)]
    for o, v, r in special:
        old, values, returns = (torch.cat([a, torch.tensor([b], dtype=torch.float64)])
                                for a, b in ((old, o), (values, v), (returns, r)))
    sq = ((v := values.clone().requires_grad_()) - returns) ** 2
    if clip_range is not None:
        sq = torch.maximum(sq, (old + torch.clamp(v - old, -clip_range, clip_range) - returns) ** 2)
    ref = 0.5 * sq.mean()
    (ref_grad,) = torch.autograd.grad(ref, v)
    conv = (lambda t: t.numpy()) if xp is np else (lambda t: t)
    loss, grad = value_loss(conv(values), conv(returns), conv(old), clip_range, xp)
    assert float(loss) == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(torch.as_tensor(grad), ref_grad, rtol=1e-12, atol=1e-15)


def _random_batch(T: int, N: int, seed: int) -> RolloutBatch:
    g = torch.Generator().manual_seed(seed)
    return RolloutBatch(obs=torch.randn(T, N, 6, generator=g), next_obs=torch.randn(T, N, 6, generator=g),
                        actions=torch.randn(T, N, 2, generator=g), rewards=torch.randn(T, N, generator=g),
                        terminated=torch.zeros(T, N, dtype=torch.bool), truncated=torch.zeros(T, N, dtype=torch.bool))


def _critic(cfg, seed=3):
    torch.manual_seed(0)  # the same initial network every time
    return Critic(6, cfg, total_updates=10, seed=seed)


def _filled_batch(critic, T=16, N=4):
    b = critic.evaluate(_random_batch(T, N, seed=1))
    return b.replace(returns=torch.randn(T, N, generator=torch.Generator().manual_seed(2)),
                     advantages=torch.zeros(T, N))


def _reference_update(net, cfg, batch, seed):
    """The critic's update written with autograd, torch's clip_grad_norm_ and the optimizer's step."""
    net = copy.deepcopy(net)
    opt = make_optimizer(cfg, list(net.parameters()))
    gen = torch.Generator().manual_seed(seed)
    obs, returns, old = batch.obs.reshape(len(batch), -1), batch.returns.reshape(-1), batch.values.reshape(-1)
    losses = []
    for _ in range(cfg.epochs):
        for i in minibatch_indices(len(batch), cfg.minibatch_size, gen):
            opt.zero_grad()
            v = net(obs[i])[:, 0]
            sq = (v - returns[i]) ** 2
            if cfg.clip_range is not None:
                clipped = old[i] + torch.clamp(v - old[i], -cfg.clip_range, cfg.clip_range)
                sq = torch.maximum(sq, (clipped - returns[i]) ** 2)
            loss = 0.5 * sq.mean()
            loss.backward()
            if cfg.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
            opt.step()
            losses.append(loss.item())
    return net, float(np.mean(losses))


@pytest.mark.parametrize("optim", ["sgd", "adam", "arturo"])
@pytest.mark.parametrize("max_grad_norm", [0.05, None])
@pytest.mark.parametrize("clip_range", [None, 0.2])
def test_critic_update_matches_autograd(optim, max_grad_norm, clip_range):
    cfg = CriticConfig(optim=optim, epochs=2, minibatch_size=16, max_grad_norm=max_grad_norm, hidden=[16, 16],
                       clip_range=clip_range)
    numpy_critic, torch_critic = _critic(cfg), _critic(cfg)
    torch_critic.xp = torch
    assert numpy_critic.xp is np
    batch = _filled_batch(numpy_critic)  # old values off the net's, so the value clipping acts from the start:
    batch = batch.replace(values=batch.values + 0.3 * torch.randn(16, 4, generator=torch.Generator().manual_seed(5)))
    ref_net, ref_loss = _reference_update(numpy_critic.net, cfg, batch, seed=3)
    init = numpy_critic.net.layers[0].weight.detach().clone()
    for critic in (numpy_critic, torch_critic):
        metrics = critic.start_update(batch).finish()
        assert metrics["losses/value"] == pytest.approx(ref_loss, rel=1e-5)
        for p, q in zip(critic.net.parameters(), ref_net.parameters(), strict=True):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-5)
        # The steps write plain gradient buffers: no autograd graph kept (and chained across steps).
        assert not any(p.grad.requires_grad for p in critic.net.parameters())
        assert not torch.allclose(critic.net.layers[0].weight, init)


@pytest.mark.parametrize("epochs", [1, 3])
def test_update_steps_and_explained_variance(epochs):
    critic = _critic(CriticConfig(optim="adam", epochs=epochs, minibatch_size=16, hidden=[16, 16]))
    batch = _filled_batch(critic)
    update = critic.start_update(batch)
    steps = 0
    while update.step():
        steps += 1
    assert steps == epochs * len(batch) // 16
    assert not update.step()
    v, r = batch.values.double().numpy().ravel(), batch.returns.double().numpy().ravel()
    expected = 1 - np.var(r - v) / np.var(r)
    assert update.finish()["losses/explained_variance"] == pytest.approx(expected, rel=1e-5)
    assert not torch.allclose(critic.evaluate(batch).values, batch.values)  # the update moved the net


def test_minibatch_size_must_divide_the_batch():
    critic = _critic(CriticConfig(optim="sgd", epochs=1, minibatch_size=24, hidden=[16, 16]))
    with pytest.raises(ValueError, match="does not divide"):
        critic.start_update(_filled_batch(critic)).finish()
