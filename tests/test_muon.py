"""critic.optim=muon: torch's Muon on the weight matrices and Adam on the rest (biases, the value head), as
one optimizer whose state dict round-trips (checkpoints)."""

import copy

import torch
from torch import nn

from rl_trust.optim import MuonAdam


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))


def _steps(net, optimizers, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x, y = torch.randn(64, 5, generator=g), torch.randn(64, 1, generator=g)
        for o in optimizers:
            o.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        for o in optimizers:
            o.step()


def test_muon_adam_is_torchs_muon_and_adam_side_by_side():
    net, ref = _net(), _net()
    _steps(net, [MuonAdam(net.parameters(), lr=0.02, adam_lr=1e-3)], 5)
    # Muon: the 16 x 5 hidden weight; Adam: the biases and the 1 x 16 head (a matrix with a dimension of 1)
    matrices = [p for p in ref.parameters() if p.ndim == 2 and min(p.shape) > 1]
    vectors = [p for p in ref.parameters() if not (p.ndim == 2 and min(p.shape) > 1)]
    assert [tuple(p.shape) for p in matrices] == [(16, 5)]
    _steps(ref, [torch.optim.Muon(matrices, lr=0.02, weight_decay=0.0), torch.optim.Adam(vectors, lr=1e-3)], 5)
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)


def test_state_dict_round_trips_and_a_scheduler_scales_both_groups():
    net = _net()
    opt = MuonAdam(net.parameters())
    _steps(net, [opt], 3)
    clone = copy.deepcopy(net)
    opt2 = MuonAdam(clone.parameters())
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as a checkpoint file gives it: no shared tensors
    _steps(net, [opt], 2, seed=7)
    _steps(clone, [opt2], 2, seed=7)
    for p, q in zip(net.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5)
    _steps(net, [opt], 1)
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.0005]
    assert [g["lr"] for inner in opt._inner for g in inner.param_groups] == [0.01, 0.0005]
