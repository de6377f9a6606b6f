import copy

import pytest
import torch
from arturo_reference import ReferenceArturo

from rl_trust.optim import Arturo

HP = dict(reg_weight=0.0587, prior_prec=0.0015, var_init=0.01, measurement_noise=2.817, dynamic_model_noise=0.0174,
          start_filter_cov=5e-5, curvature_init=0.1, nu=1.3, weight_decay=1e-3, min_curvature=1e-6)


def quadratic(h, target):
    return lambda x: 0.5 * (h * (x - target) ** 2).sum()


def test_curvature_estimate_and_iterate_converge_on_diagonal_quadratic():
    torch.manual_seed(0)
    h = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    target = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    x = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    # Exact gradients: a near-noiseless filter (small r, no drift, wide prior) is the right model.
    opt = Arturo([x], lr=0.05, measurement_noise=0.01, dynamic_model_noise=0.0, start_filter_cov=10.0,
                 reg_weight=0.0, nu=1.0)
    f = quadratic(h, target)
    for _ in range(300):
        opt.zero_grad()
        f(x).backward()
        opt.step()
    torch.testing.assert_close(opt.state[x]["curvature"], h, rtol=1e-2, atol=0)
    torch.testing.assert_close(x.detach(), target, rtol=0, atol=1e-3)
    assert (opt.state[x]["precision"] > 0).all()


# fused=None takes the compiled CPU kernel, fused=False the eager torch step (the one used on CUDA).
FUSED = pytest.mark.parametrize("fused", [None, False], ids=["fused", "eager"])


@FUSED
@pytest.mark.parametrize("lr", [1e-4, 1e-2, 1e6])
def test_kl_bound_met_when_active_and_slack_gives_regularised_newton_step(lr, fused):
    torch.manual_seed(1)
    x = torch.nn.Parameter(torch.randn(50, dtype=torch.float64))
    hp = HP | {"weight_decay": 0.0}  # the reference scales weight decay by ε: a huge ε would blow it up
    opt = Arturo([x], lr=lr, fused=fused, **hp)
    f = quadratic(torch.rand(50, dtype=torch.float64) + 0.5, torch.randn(50, dtype=torch.float64))
    active = slack = 0
    for _ in range(20):
        opt.zero_grad()
        f(x).backward()
        before = x.detach().clone()
        buf = opt.state[x].get("group_state")
        prec_before = None if buf is None else buf[0].clone()
        opt.step()
        last = opt.last_step[0]
        kl, eta = float(last["kl"]), float(last["eta"])
        assert kl <= lr * (1 + 1e-9)
        if eta > 0:
            active += 1
            assert kl == pytest.approx(lr, rel=1e-3)
            assert float(last["dual_residual"]) <= 1e-3
        else:
            # Slack: the regularised Newton step -(ā μ + b + λΛ0 μ) / (ā + λΛ0), KL below the bound.
            slack += 1
            st = opt.state[x]["group_state"]
            mu = before
            d = st[1].clamp(min=HP["min_curvature"]) + HP["reg_weight"] * HP["prior_prec"]
            torch.testing.assert_close(x.detach(), mu - (d * mu + st[2]) / d)
            if prec_before is not None:
                assert 0.5 * (prec_before * (x.detach() - mu) ** 2).sum() <= lr
    # A tight bound is active at every step; a loose one only while the curvature estimate is poor.
    assert active == 20 if lr < 1 else slack >= 15


@FUSED
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_equals_per_tensor_reference(seed, fused):
    torch.manual_seed(seed)
    lr = [1e-3, 3e-2, 1.0][seed]
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    ref_net = copy.deepcopy(net)
    opt = Arturo(net.parameters(), lr=lr, fused=fused, **HP)
    ref = ReferenceArturo(ref_net.parameters(), lr=lr, **HP)
    X, y = torch.randn(32, 3, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    for _ in range(8):
        for model, o in ((net, opt), (ref_net, ref)):
            for p in model.parameters():
                p.grad = None
            ((model(X) - y) ** 2).mean().backward()
            o.step()
        for p, q in zip(net.parameters(), ref_net.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-9)
        assert float(opt.last_step[0]["eta"]) == pytest.approx(ref.eta, rel=1e-5, abs=1e-12)
        assert float(opt.last_step[0]["kl"]) == pytest.approx(ref.kl, rel=1e-5)
    for p, st in zip(net.parameters(), ref.state, strict=True):
        torch.testing.assert_close(opt.state[p]["curvature"].reshape(-1), st["a"], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(opt.state[p]["precision"].reshape(-1), st["prec"], rtol=1e-6, atol=1e-9)


def _train(net, opt, data, steps):
    X, y = data
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = ((net(X) - y) ** 2).mean()
            loss.backward()
            return loss
        opt.step(closure)


@FUSED
def test_state_dict_round_trip_continues_bit_identically(fused):
    torch.manual_seed(0)
    data = torch.randn(64, 5), torch.randn(64, 1)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = Arturo(net.parameters(), lr=1e-2, fused=fused)
    _train(net, opt, data, 5)
    saved_net, saved_opt = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    _train(net, opt, data, 5)

    net2 = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    net2.load_state_dict(saved_net)
    opt2 = Arturo(net2.parameters(), lr=1e-2, fused=fused)
    opt2.load_state_dict(saved_opt)
    _train(net2, opt2, data, 5)
    for p, q in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(p, q)
    for p, q in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(opt.state[p]["curvature"], opt2.state[q]["curvature"])
    # The views point into the loaded group buffer again.
    buf = opt2.state[next(net2.parameters())]["group_state"]
    assert opt2.state[next(net2.parameters())]["precision"].data_ptr() == buf[0].data_ptr()


@FUSED
def test_closure_returns_loss_and_params_without_grad_are_skipped(fused):
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3))
    opt = Arturo([a, b], lr=1e-2, fused=fused)
    b_before = b.detach().clone()

    def closure():
        opt.zero_grad()
        loss = (a ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.item() > 0
    assert torch.equal(b.detach(), b_before)
    assert not torch.equal(a.detach(), a.detach() * 0)
    buf = opt.state[a]["group_state"]
    assert torch.all(buf[0, 3:] == 1 / 0.01)  # b's precision untouched
    assert torch.all(buf[2, 3:] == 0) and "initialized" not in opt.state[b]  # nor its intercept


@FUSED
def test_state_dict_holds_only_state_and_last_step_reports_each_group(fused):
    a, b = torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(3))
    opt = Arturo([{"params": [a]}, {"params": [b]}], lr=1e-2, fused=fused)
    (a ** 2).sum().backward()
    opt.step()
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        assert not {"eta", "kl", "dual_residual"} & group.keys()
        assert not any(key.startswith("_") for key in group)
    assert set(saved["state"]) == {0}  # b's group has not stepped: no state
    assert set(saved["state"][0]) == {"group_state", "eta", "precision", "curvature", "initialized"}
    assert set(opt.last_step[0]) == {"eta", "kl", "dual_residual"} and opt.last_step[1] == {}
    assert all(v.dim() == 0 for v in opt.last_step[0].values())
    assert opt.state[a]["eta"] is opt.last_step[0]["eta"]  # the warm start is state


@FUSED
def test_each_group_keeps_its_own_bound_and_scheduler_schedules_it(fused):
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(20)), torch.nn.Parameter(torch.randn(20))
    opt = Arturo([{"params": [a], "lr": 1e-4}, {"params": [b], "lr": 1e-2}], fused=fused)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        opt.zero_grad()
        (5 * (a ** 2).sum() + 5 * (b ** 2).sum()).backward()
        lrs = [g["lr"] for g in opt.param_groups]
        opt.step()
        sched.step()
        for last, lr in zip(opt.last_step, lrs, strict=True):
            assert float(last["kl"]) <= lr * (1 + 1e-5)
            assert float(last["kl"]) == pytest.approx(lr, rel=1e-3)
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-2 / 8)


@FUSED
def test_negative_curvature_estimate_does_not_flip_the_step(fused):
    x = torch.nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    opt = Arturo([x], lr=1e-3, curvature_init=-5.0, fused=fused)
    opt.zero_grad()
    (x ** 2).sum().backward()  # gradient (2, -2): descent moves towards 0
    opt.step()
    assert x[0] < 1.0 and x[1] > -1.0
    assert (opt.state[x]["precision"] > 0).all()


@pytest.mark.parametrize("kwargs, name", [({"lr": 0.0}, "lr"), ({"lr": -1.0}, "lr"),
                                          ({"measurement_noise": 0.0}, "measurement_noise"),
                                          ({"dual_iters": 0}, "dual_iters"), ({"nu": -1.0}, "nu"),
                                          ({"min_curvature": 0.0}, "min_curvature")])
def test_invalid_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Arturo([torch.nn.Parameter(torch.zeros(2))], **({"lr": 1e-3} | kwargs))


def test_fused_rejects_what_it_cannot_run():
    with pytest.raises(ValueError, match="float32/float64 CPU"):
        Arturo([torch.nn.Parameter(torch.zeros(2, dtype=torch.float16))], fused=True)
    with pytest.raises(TypeError, match="compile"):  # the torch.compile path is gone
        Arturo([torch.nn.Parameter(torch.zeros(2))], compile=True)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_fused_kernel_matches_eager_step(dtype, tol):
    """The compiled CPU kernel against the eager step: an MLP, weight decay, two groups, a scheduler."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(6, 48), torch.nn.Tanh(), torch.nn.Linear(48, 1)).to(dtype)
    other = copy.deepcopy(net)

    def make(model, fused):
        groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 3e-3}]
        opt = Arturo(groups, lr=1e-2, weight_decay=1e-2, fused=fused)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    (fused, sched_f), (eager, sched_e) = make(net, True), make(other, False)
    data = torch.randn(128, 6, dtype=dtype), torch.randn(128, 1, dtype=dtype)
    for _ in range(12):
        _train(net, fused, data, 1)
        _train(other, eager, data, 1)
        for p, q in zip(net.parameters(), other.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=tol, atol=tol * 1e-2)
        for gf, lf, le in zip(fused.param_groups, fused.last_step, eager.last_step, strict=True):
            assert float(lf["eta"]) == pytest.approx(float(le["eta"]), rel=10 * tol, abs=1e-12)
            assert float(lf["kl"]) == pytest.approx(float(le["kl"]), rel=10 * tol)
            assert float(lf["kl"]) <= gf["lr"] * (1 + 1e-5)
        sched_f.step()
        sched_e.step()
    for p, q in zip(net.parameters(), other.parameters(), strict=True):
        for key in ("curvature", "precision"):
            torch.testing.assert_close(fused.state[p][key], eager.state[q][key], rtol=tol, atol=tol * 1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_never_syncs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1)).double()
    gpu = copy.deepcopy(net).cuda()
    # The eager step on both devices (on the CPU the default is the fused kernel, tested against it above).
    opt, opt_gpu = Arturo(net.parameters(), lr=1e-2, fused=False), Arturo(gpu.parameters(), lr=1e-2)
    X, y = torch.randn(128, 8, dtype=torch.float64), torch.randn(128, 1, dtype=torch.float64)
    Xg, yg = X.cuda(), y.cuda()
    for i in range(10):
        _train(net, opt, (X, y), 1)
        opt_gpu.zero_grad()
        ((gpu(Xg) - yg) ** 2).mean().backward()
        if i > 0:  # the first step allocates state
            torch.cuda.set_sync_debug_mode("error")
        try:
            opt_gpu.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for p, q in zip(net.parameters(), gpu.parameters(), strict=True):
        torch.testing.assert_close(p, q.cpu(), rtol=1e-9, atol=1e-12)

