"""arTuRO: information-theoretic trust regions for stochastic gradient-based optimisation."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor
from torch.optim import Optimizer

# Rows of a group's state buffer (one contiguous [6, n] tensor per parameter group).
PRECISION, CURVATURE, INTERCEPT, P00, P01, P11 = range(6)
# The group settings one step uses (the others only initialise the state).
_STEP_ARGS = ("lr", "weight_decay", "reg_weight", "prior_prec", "measurement_noise", "dynamic_model_noise", "nu",
              "min_curvature", "dual_iters", "fused")
_KERNEL_NEEDS = "fused=True needs contiguous float32/float64 CPU parameters of one dtype"


class Arturo(Optimizer):
    r"""arTuRO (Dahlinger et al. 2023, https://arxiv.org/abs/2310.20574).

    Each scalar parameter is the mean :math:`\mu` of a Gaussian with precision :math:`\Lambda`.
    A Kalman filter fits the per-element gradient model :math:`g \approx a\mu + b`; each step solves,
    per parameter group, a KL trust region on the means:

    .. math::
        \begin{aligned}
        &\textbf{filter:}\ P \mathrel{+}= qI;\ K = P h / (h^\top P h + r),\ h = (1, \mu);\
            (b, a) \mathrel{+}= K\,(g - a\mu - b);\ P \mathrel{-}= K h^\top P \\
        &\textbf{step:}\ \mu' - \mu = -\frac{\bar a\mu + b + \lambda\Lambda_0\mu}
            {\bar a + \lambda\Lambda_0 + \eta\Lambda}, \quad \bar a = \max(a, a_{\min}) \\
        &\textbf{dual:}\ \eta = 0 \text{ if } \mathrm{KL}(0) \le \varepsilon \text{, else }
            \mathrm{KL}(\eta) = \tfrac12 \textstyle\sum \Lambda (\mu' - \mu)^2 = \varepsilon \\
        &\textbf{precision:}\ \Lambda' = (\bar a + \lambda\Lambda_0 + \nu\Lambda) / (\lambda + \nu)
        \end{aligned}

    The intercept :math:`b` starts at the first gradient.

    ``lr`` is the group's KL bound :math:`\varepsilon`, so LR schedulers schedule the bound.
    The dual is solved on the parameters' device with no host synchronisation (:func:`solve_dual`);
    after ``dual_iters`` Newton iterations the step is scaled by :math:`\sqrt{\varepsilon/\mathrm{KL}}`
    where the residual KL still exceeds the bound, so every step satisfies it. The curvature used in
    the step and the precision is floored at ``min_curvature`` (the raw estimate may go negative).
    ``fused``: the step as compiled CPU loops (``_cpu_kernel``, numba) instead of torch ops; None
    (default) uses it wherever it can run (contiguous float32/float64 CPU parameters).

    State: all per-element state of a group lives in one ``[6, n]`` tensor (precision, curvature,
    intercept and the three filter covariances) kept in ``state[first param]["group_state"]`` with
    the group's last :math:`\eta` (``"eta"``, the dual's warm start); ``state[p]["curvature"]`` and
    ``state[p]["precision"]`` are views of it.

    ``last_step``: after each :meth:`step`, one dict per parameter group (an empty one for a group
    without gradients) of 0-dim tensors on the parameters' device: ``eta``, ``kl`` (achieved) and
    ``dual_residual`` (|KL(η) − ε|/ε before the final scaling). ``float()`` them to log (that syncs).
    """

    def __init__(self, params, lr: float = 1e-3, *, reg_weight: float = 0.0587, prior_prec: float = 0.0015,
                 var_init: float = 0.01, measurement_noise: float = 2.817, dynamic_model_noise: float = 0.0174,
                 start_filter_cov: float = 5e-5, curvature_init: float = 0.1, nu: float = 1.3,
                 weight_decay: float = 0.0, min_curvature: float = 1e-6, dual_iters: int = 3,
                 fused: bool | None = None):
        checks = {"lr": lr > 0, "reg_weight": reg_weight >= 0, "prior_prec": prior_prec >= 0, "var_init": var_init > 0,
                  "measurement_noise": measurement_noise > 0, "dynamic_model_noise": dynamic_model_noise >= 0,
                  "start_filter_cov": start_filter_cov > 0, "nu": nu >= 0, "weight_decay": weight_decay >= 0,
                  "min_curvature": min_curvature > 0, "dual_iters": dual_iters >= 1}
        defaults = dict(lr=lr, reg_weight=reg_weight, prior_prec=prior_prec, var_init=var_init,
                        measurement_noise=measurement_noise, dynamic_model_noise=dynamic_model_noise,
                        start_filter_cov=start_filter_cov, nu=nu, weight_decay=weight_decay,
                        min_curvature=min_curvature, dual_iters=dual_iters)
        for name, ok in checks.items():
            if not (ok and math.isfinite(defaults[name])):
                raise ValueError(f"Invalid {name} value: {defaults[name]}")
        if reg_weight + nu <= 0:
            raise ValueError(f"Invalid reg_weight + nu: {reg_weight + nu} (must be > 0)")
        super().__init__(params, dict(defaults, curvature_init=curvature_init, fused=fused))
        if fused:
            if not all(_kernel_can_run(g["params"], g["params"][0].dtype) for g in self.param_groups):
                raise ValueError(_KERNEL_NEEDS)
            _kernel()  # fail here, not at the first step, if numba is missing
        self.last_step: list[dict[str, Tensor]] = [{} for _ in self.param_groups]

    def __setstate__(self, state):  # unpickling and load_state_dict: no step taken yet
        super().__setstate__(state)
        self.last_step = [{} for _ in self.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.last_step = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("Arturo does not support sparse gradients")
            if not params:
                self.last_step.append({})
                continue
            buf, cols = self._init_group(group)
            head = self.state[group["params"][0]]
            # Parameters without a gradient take no step: the others' state columns step on their own.
            state = buf if cols is None else buf.index_select(1, cols)
            out = arturo(params, [p.grad for p in params], state, head["eta"], **{k: group[k] for k in _STEP_ARGS})
            if cols is not None:
                buf.index_copy_(1, cols, state)
            head["eta"] = out["eta"]
            self.last_step.append(out)
        return loss

    def _init_group(self, group: dict) -> tuple[Tensor, Tensor | None]:
        """The group's [6, n] buffer (created on first use, per-parameter views (re)attached, intercepts
        set from first gradients) and the columns of the parameters with a gradient (None: all)."""
        params = group["params"]
        head = self.state[params[0]]
        if "group_state" not in head:
            p0, n = params[0], sum(p.numel() for p in params)
            init = [1.0 / group["var_init"], group["curvature_init"], 0.0, group["start_filter_cov"], 0.0,
                    group["start_filter_cov"]]
            head["group_state"] = torch.tensor(init, dtype=p0.dtype, device=p0.device)[:, None].repeat(1, n)
            head["eta"] = torch.zeros((), dtype=p0.dtype, device=p0.device)
        buf = head["group_state"]
        stepping, offset = [], 0
        base, size = buf.data_ptr() + PRECISION * buf.stride(0) * buf.element_size(), buf.element_size()
        for p in params:
            st, n = self.state[p], p.numel()
            # After load_state_dict the views may be copies: point them back into the buffer.
            if "precision" not in st or st["precision"].data_ptr() != base + offset * size:
                st["precision"] = buf[PRECISION, offset:offset + n].view_as(p)
                st["curvature"] = buf[CURVATURE, offset:offset + n].view_as(p)
            if p.grad is not None:
                if not st.get("initialized", False):
                    buf[INTERCEPT, offset:offset + n] = p.grad.reshape(-1)
                    st["initialized"] = True
                stepping.append(range(offset, offset + n))
            offset += n
        if len(stepping) == len(params):
            return buf, None
        return buf, torch.cat([torch.arange(r.start, r.stop, device=buf.device) for r in stepping])


def arturo(params: list[Tensor], grads: list[Tensor], state: Tensor, eta: Tensor, *, fused: bool | None = None,
           lr: float, weight_decay: float, reg_weight: float, prior_prec: float, measurement_noise: float,
           dynamic_model_noise: float, nu: float, min_curvature: float, dual_iters: int) -> dict[str, Tensor]:
    """One arTuRO step of one KL constraint (bound ``lr``), in place on ``params`` and ``state``.

    ``state``: ``[6, n]`` rows (precision, curvature, intercept, P00, P01, P11) whose columns are the
    elements of ``params`` in order; ``eta``: the previous η (0-dim, the dual's warm start). ``fused``:
    the compiled CPU kernel (True), torch ops on any device (False), the kernel wherever it can run
    (None). Returns ``eta``, ``kl`` (achieved) and ``dual_residual`` as 0-dim tensors.
    """
    if fused is None:
        fused = _kernel_can_run(params, state.dtype)
    elif fused and not _kernel_can_run(params, state.dtype):
        raise ValueError(_KERNEL_NEEDS)
    return (_kernel_arturo if fused else _eager_arturo)(
        params, grads, state, eta, lr=lr, weight_decay=weight_decay, reg_weight=reg_weight, prior_prec=prior_prec,
        measurement_noise=measurement_noise, dynamic_model_noise=dynamic_model_noise, nu=nu,
        min_curvature=min_curvature, dual_iters=dual_iters)


def _eager_arturo(params, grads, state, eta, *, lr, weight_decay, reg_weight, prior_prec, measurement_noise,
                  dynamic_model_noise, nu, min_curvature, dual_iters) -> dict[str, Tensor]:
    """The step as torch ops on flat copies of the parameters and gradients."""
    prec, a, b, p00, p01, p11 = state.unbind(0)
    mu = torch.cat([p.reshape(-1) for p in params]).to(state.dtype)
    g = torch.cat([t.reshape(-1) for t in grads]).to(state.dtype)
    if weight_decay != 0:
        mu.mul_(1.0 - lr * weight_decay)
    # Filter predict (random-walk drift) and update with regressor h = (1, μ), measurement g.
    p00.add_(dynamic_model_noise)
    p11.add_(dynamic_model_noise)
    k0, k1 = torch.addcmul(p00, p01, mu), torch.addcmul(p01, p11, mu)  # k = P h
    s = torch.addcmul(k0, k1, mu).add_(measurement_noise)  # S = hᵀ P h + r
    gain0, gain1 = k0 / s, k1 / s
    innovation = torch.addcmul(b, a, mu).neg_().add_(g)  # g − (aμ + b)
    b.addcmul_(gain0, innovation)
    a.addcmul_(gain1, innovation)
    p00.addcmul_(gain0, k0, value=-1.0)  # P −= K hᵀ P: P00 −= K0 k0, P01 −= K0 k1, P11 −= K1 k1
    p01.addcmul_(gain0, k1, value=-1.0)
    p11.addcmul_(gain1, k1, value=-1.0)
    # Trust-region step: Δ(η) = −c / (d + ηΛ) with c = d μ + b, d = ā + λΛ0.
    d = a.clamp(min=min_curvature).add_(reg_weight * prior_prec)
    c = torch.addcmul(b, d, mu)
    eta = solve_dual(c, d, prec, lr, eta, dual_iters)
    step = c.div_(torch.addcmul(d, prec, eta)).neg_()
    raw_kl = 0.5 * torch.dot(prec * step, step)
    # Where the dual is not fully converged (KL a hair above ε) shrink the step onto the bound.
    mu.addcmul_(step, torch.where(raw_kl > lr, torch.sqrt(lr / raw_kl), 1.0))
    prec.mul_(nu).add_(d).div_(reg_weight + nu)  # Λ' = (ā + λΛ0 + νΛ) / (λ + ν)
    for p, new in zip(params, mu.split([p.numel() for p in params]), strict=True):
        p.copy_(new.view_as(p))
    # The step was scaled onto the bound where KL(η) exceeds it; a slack constraint (η = 0) has no residual.
    residual = torch.where(eta > 0, (raw_kl - lr).abs() / lr, 0.0)
    return {"eta": eta, "kl": raw_kl.clamp(max=lr), "dual_residual": residual}


def _kernel_arturo(params, grads, state, eta, *, lr, weight_decay, reg_weight, prior_prec, measurement_noise,
                   dynamic_model_noise, nu, min_curvature, dual_iters) -> dict[str, Tensor]:
    """The step as ``_cpu_kernel.step``, on numpy views of the parameters, gradients and state."""
    out = _kernel().step(
        tuple(p.numpy(force=True).ravel() for p in params), tuple(g.numpy(force=True).ravel() for g in grads),
        state.numpy(), lr, 1.0 - lr * weight_decay, dynamic_model_noise, measurement_noise, min_curvature,
        reg_weight * prior_prec, nu, 1.0 / (reg_weight + nu), float(eta), dual_iters)
    for p in params:  # written through numpy: tell autograd the parameters changed
        torch.autograd.graph.increment_version(p)
    return dict(zip(("eta", "kl", "dual_residual"), torch.from_numpy(out).unbind(), strict=True))


def _kernel_can_run(params: list[Tensor], dtype: torch.dtype) -> bool:
    """The kernel writes the parameters in place through numpy views."""
    return dtype in (torch.float32, torch.float64) and all(
        p.device.type == "cpu" and p.dtype == dtype and p.is_contiguous() for p in params)


@functools.cache
def _kernel():
    from rl_trust.optim import _cpu_kernel  # numba: imported (and compiled, or loaded from its cache) on first use

    return _cpu_kernel


def solve_dual(c: Tensor, d: Tensor, prec: Tensor, eps: float, eta: Tensor, iters: int) -> Tensor:
    """η ≥ 0 with KL(η) = ½ Σ Λ c² / (d + ηΛ)² = ε (or η = 0 if KL(0) ≤ ε), on device, no sync.

    Written as F(η) = 2 KL = Σ w / (β + η)² with β = d/Λ, w = c²/Λ. Newton's method on
    ψ(η) = F^{-1/2} − (2ε)^{-1/2}, concave and increasing in η (Moré & Sorensen 1983): from the
    right of the root its first step lands left of it (or at η = 0 when the constraint is slack),
    and from the left it converges monotonically and quadratically. Warm-started at ``eta``.
    """
    beta, w = d / prec, c * c / prec
    for _ in range(iters):
        t = (beta + eta).reciprocal_()
        wt2 = w * t * t
        f, s3 = wt2.sum(), torch.dot(wt2, t)  # F(η) and −F'(η)/2
        increment = f * (torch.sqrt(f / (2.0 * eps)) - 1.0) / s3
        eta = torch.clamp(eta + torch.where(s3 > 0, increment, 0.0), min=0.0)
    return eta
