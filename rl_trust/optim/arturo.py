"""arTuRO: information-theoretic trust regions for stochastic gradient-based optimisation."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.optim import Optimizer

# Rows of a group's state buffer (one contiguous [6, n] tensor per parameter group).
PRECISION, CURVATURE, INTERCEPT, P00, P01, P11 = range(6)


class Arturo(Optimizer):
    r"""arTuRO (Dahlinger et al. 2023, https://arxiv.org/abs/2310.20574).

    Each scalar parameter is the mean :math:`\mu` of a Gaussian with precision :math:`\Lambda`.
    A Kalman filter fits the per-element gradient model :math:`g \approx a\mu + b`; each step solves,
    per parameter group, a KL trust region on the means:

    .. math::
        \begin{aligned}
        &\textbf{filter:}\ P \mathrel{+}= qI;\ K = P h / (h^\top P h + r),\ h = (1, \mu);\
            (b, a) \mathrel{+}= K\,(g - a\mu - b);\ P \mathrel{-}= K h^\top P \\
        &\textbf{step:}\ \mu' - \mu = -\frac{\bar a\mu + b + \lambda\Lambda_0\mu}{\bar a + \lambda\Lambda_0 + \eta\Lambda},
            \quad \bar a = \max(a, a_{\min}) \\
        &\textbf{dual:}\ \eta = 0 \text{ if } \mathrm{KL}(0) \le \varepsilon \text{, else }
            \mathrm{KL}(\eta) = \tfrac12 \textstyle\sum \Lambda (\mu' - \mu)^2 = \varepsilon \\
        &\textbf{precision:}\ \Lambda' = (\bar a + \lambda\Lambda_0 + \nu\Lambda) / (\lambda + \nu)
        \end{aligned}

    ``lr`` is the group's KL bound :math:`\varepsilon`, so LR schedulers schedule the bound.
    The dual is solved on the parameters' device with no host synchronisation: Newton's method
    on :math:`(2\mathrm{KL}(\eta))^{-1/2}`, which is concave and increasing in :math:`\eta`
    (Moré & Sorensen 1983), so the iterates approach the root monotonically from below,
    warm-started at the previous :math:`\eta`; after ``dual_iters`` iterations the step is scaled
    by :math:`\sqrt{\varepsilon/\mathrm{KL}}` where the residual KL still exceeds the bound, so every
    step satisfies it. The curvature used in the step and the precision is floored at
    ``min_curvature`` (the raw estimate may go negative).

    State: all per-element state of a group lives in one ``[6, n]`` tensor (precision, curvature,
    intercept and the three filter covariances) kept in ``state[first param]["group_state"]``;
    ``state[p]["curvature"]`` and ``state[p]["precision"]`` are views of it. After each step a
    group holds ``eta``, ``kl`` (achieved) and ``dual_residual`` (relative, before the final scaling)
    as 0-dim tensors (``float()`` them to log; that syncs).
    """

    def __init__(self, params, lr: float = 1e-3, *, reg_weight: float = 0.0587, prior_prec: float = 0.0015,
                 var_init: float = 0.01, measurement_noise: float = 2.817, dynamic_model_noise: float = 0.0174,
                 start_filter_cov: float = 5e-5, curvature_init: float = 0.1, nu: float = 1.3,
                 weight_decay: float = 0.0, min_curvature: float = 1e-6, dual_iters: int = 6):
        checks = {"lr": lr > 0, "reg_weight": reg_weight >= 0, "prior_prec": prior_prec >= 0, "var_init": var_init > 0,
                  "measurement_noise": measurement_noise > 0, "dynamic_model_noise": dynamic_model_noise >= 0,
                  "start_filter_cov": start_filter_cov > 0, "nu": nu >= 0, "weight_decay": weight_decay >= 0,
                  "min_curvature": min_curvature > 0, "dual_iters": dual_iters >= 1}
        values = dict(lr=lr, reg_weight=reg_weight, prior_prec=prior_prec, var_init=var_init,
                      measurement_noise=measurement_noise, dynamic_model_noise=dynamic_model_noise,
                      start_filter_cov=start_filter_cov, nu=nu, weight_decay=weight_decay,
                      min_curvature=min_curvature, dual_iters=dual_iters)
        for name, ok in checks.items():
            if not (ok and math.isfinite(values[name])):
                raise ValueError(f"Invalid {name} value: {values[name]}")
        if reg_weight + nu <= 0:
            raise ValueError(f"Invalid reg_weight + nu: {reg_weight + nu} (must be > 0)")
        defaults = dict(values, curvature_init=curvature_init)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("Arturo does not support sparse gradients")
            self._group_step(group, params)
        return loss

    def _group_state(self, group: dict) -> Tensor:
        """The group's [6, n] buffer, created on first use; per-parameter views (re)attached."""
        all_params = group["params"]
        head = self.state[all_params[0]]
        buf = head.get("group_state")
        if buf is None:
            p0 = all_params[0]
            n = sum(p.numel() for p in all_params)
            buf = torch.zeros(6, n, dtype=p0.dtype, device=p0.device)
            buf[PRECISION] = 1.0 / group["var_init"]
            buf[CURVATURE] = group["curvature_init"]
            buf[P00] = group["start_filter_cov"]
            buf[P11] = group["start_filter_cov"]
            head["group_state"] = buf
            head["eta"] = torch.zeros((), dtype=p0.dtype, device=p0.device)
            # 1.0 where the intercept has been set from a first gradient (float: load_state_dict casts state).
            head["initialized"] = torch.zeros(n, dtype=p0.dtype, device=p0.device)
        offset = 0
        for p in all_params:
            st = self.state[p]
            n = p.numel()
            view = buf[PRECISION, offset:offset + n]
            # After load_state_dict the views may be copies: point them back into the buffer.
            if "precision" not in st or st["precision"].data_ptr() != view.data_ptr():
                st["precision"] = view.view_as(p)
                st["curvature"] = buf[CURVATURE, offset:offset + n].view_as(p)
            offset += n
        return buf

    def _group_step(self, group: dict, params: list[Tensor]) -> None:
        buf = self._group_state(group)
        head = self.state[group["params"][0]]
        eps, wd = group["lr"], group["weight_decay"]
        reg, prior, nu = group["reg_weight"], group["prior_prec"], group["nu"]
        partial = len(params) != len(group["params"])
        if partial:  # some parameters have no gradient: they take no step and keep their state
            have = {id(p) for p in params}
            mask = torch.cat([torch.full((p.numel(),), id(p) in have, device=buf.device) for p in group["params"]])
            saved = buf.clone()
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in group["params"]]
        else:
            grads = [p.grad for p in params]
        mu = torch.cat([p.reshape(-1) for p in group["params"]])
        g = torch.cat([t.reshape(-1) for t in grads]).to(mu.dtype)
        if wd != 0:
            mu.mul_(1.0 - eps * wd)
        prec, a, b, p00, p01, p11 = buf.unbind(0)
        # The intercept starts at the first gradient seen (elementwise, so late-arriving gradients work).
        init = head["initialized"]
        b.copy_(torch.where(init > 0, b, g))
        if partial:
            init.masked_fill_(mask, 1.0)
        else:
            init.fill_(1.0)

        # Filter predict (random-walk drift) and update with regressor h = (1, μ), measurement g.
        q, r = group["dynamic_model_noise"], group["measurement_noise"]
        p00.add_(q)
        p11.add_(q)
        k0 = torch.addcmul(p00, p01, mu)
        k1 = torch.addcmul(p01, p11, mu)
        s = torch.addcmul(k0, k1, mu).add_(r)
        gain0, gain1 = k0.div_(s), k1.div_(s)
        innovation = g - torch.addcmul(b, a, mu)
        b.addcmul_(gain0, innovation)
        a.addcmul_(gain1, innovation)
        # P -= K h^T P, i.e. P00 -= K0² S, P01 -= K0 K1 S, P11 -= K1² S.
        gs0, gs1 = gain0 * s, gain1 * s
        p00.addcmul_(gain0, gs0, value=-1.0)
        p01.addcmul_(gain0, gs1, value=-1.0)
        p11.addcmul_(gain1, gs1, value=-1.0)

        # Trust-region step: Δ(η) = -c / (d + ηΛ) with c = d μ + b, d = ā + λΛ0.
        d = a.clamp(min=group["min_curvature"]).add_(reg * prior)
        c = torch.addcmul(b, d, mu)
        if partial:
            c.mul_(mask)
        eta, kl, residual = solve_dual(c, d, prec, eps, head["eta"], group["dual_iters"])
        step = c.div_(torch.addcmul(d, prec, eta)).neg_()
        step.mul_(torch.where(kl > eps, torch.sqrt(eps / kl), torch.ones_like(kl)))
        mu.add_(step)
        achieved = 0.5 * torch.dot(prec * step, step)
        # Precision: Λ' = (ā + λΛ0 + νΛ) / (λ + ν).
        prec.mul_(nu).add_(d).div_(reg + nu)

        if partial:
            buf.copy_(torch.where(mask, buf, saved))
        head["eta"] = eta
        group["eta"], group["kl"], group["dual_residual"] = eta, achieved, residual
        offset = 0
        for p in group["params"]:
            n = p.numel()
            if not partial or p.grad is not None:
                p.copy_(mu[offset:offset + n].view_as(p))
            offset += n


def solve_dual(c: Tensor, d: Tensor, prec: Tensor, eps: float, eta_prev: Tensor,
               iters: int) -> tuple[Tensor, Tensor, Tensor]:
    """η ≥ 0 with KL(η) = ½ Σ Λ c² / (d + ηΛ)² = ε (or η = 0 if KL(0) ≤ ε), on device, no sync.

    Written as F(η) = 2 KL = Σ w / (β + η)² with β = d/Λ, w = c²/Λ. Newton on ψ = F^{-1/2}, concave
    and increasing, from a point left of the root converges monotonically from below.
    Returns (η, KL(η), relative residual |KL(η) − ε| / ε).
    """
    beta = d / prec
    w = c * c / prec
    target = 2.0 * eps

    def f_and_s3(eta: Tensor) -> tuple[Tensor, Tensor]:
        t = (beta + eta).reciprocal_()
        wt2 = w * t * t
        return wt2.sum(), torch.dot(wt2, t)

    f_prev, _ = f_and_s3(eta_prev)
    # Warm start at the previous η only if it is still left of the root (F(η_prev) ≥ 2ε). From η = 0
    # with F(0) ≤ 2ε (slack constraint) no increment is taken, so η stays 0.
    eta = torch.where(f_prev >= target, eta_prev, torch.zeros_like(eta_prev))
    for _ in range(iters):
        f, s3 = f_and_s3(eta)
        increment = f * (torch.sqrt(f / target) - 1.0) / s3
        eta = eta + torch.where((f > target) & (s3 > 0), increment, torch.zeros_like(increment))
    f, _ = f_and_s3(eta)
    kl = 0.5 * f
    return eta, kl, (kl - eps).abs() / eps
