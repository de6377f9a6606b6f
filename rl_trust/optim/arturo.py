"""arTuRO: information-theoretic trust regions for stochastic gradient-based optimisation."""

from __future__ import annotations

import functools
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
        &\textbf{step:}\ \mu' - \mu = -\frac{\bar a\mu + b + \lambda\Lambda_0\mu}
            {\bar a + \lambda\Lambda_0 + \eta\Lambda}, \quad \bar a = \max(a, a_{\min}) \\
        &\textbf{dual:}\ \eta = 0 \text{ if } \mathrm{KL}(0) \le \varepsilon \text{, else }
            \mathrm{KL}(\eta) = \tfrac12 \textstyle\sum \Lambda (\mu' - \mu)^2 = \varepsilon \\
        &\textbf{precision:}\ \Lambda' = (\bar a + \lambda\Lambda_0 + \nu\Lambda) / (\lambda + \nu)
        \end{aligned}

    ``lr`` is the group's KL bound :math:`\varepsilon`, so LR schedulers schedule the bound.
    The dual is solved on the parameters' device with no host synchronisation: Newton's method
    on :math:`(2\mathrm{KL}(\eta))^{-1/2}`, which is concave and increasing in :math:`\eta`
    (Moré & Sorensen 1983): warm-started at the previous :math:`\eta`, the first iterate lands
    left of the root and the rest climb to it quadratically; after ``dual_iters`` iterations the step is scaled
    by :math:`\sqrt{\varepsilon/\mathrm{KL}}` where the residual KL still exceeds the bound, so every
    step satisfies it. The curvature used in the step and the precision is floored at
    ``min_curvature`` (the raw estimate may go negative).

    State: all per-element state of a group lives in one ``[6, n]`` tensor (precision, curvature,
    intercept and the three filter covariances) kept in ``state[first param]["group_state"]``;
    ``state[p]["curvature"]`` and ``state[p]["precision"]`` are views of it. After each step a
    group holds ``eta``, ``kl`` (achieved) and ``dual_residual`` (|KL(η) − ε|/ε before the final scaling)
    as 0-dim tensors (``float()`` them to log; that syncs).
    """

    def __init__(self, params, lr: float = 1e-3, *, reg_weight: float = 0.0587, prior_prec: float = 0.0015,
                 var_init: float = 0.01, measurement_noise: float = 2.817, dynamic_model_noise: float = 0.0174,
                 start_filter_cov: float = 5e-5, curvature_init: float = 0.1, nu: float = 1.3,
                 weight_decay: float = 0.0, min_curvature: float = 1e-6, dual_iters: int = 3,
                 fused: bool | None = None, compile: bool = False):
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
        if fused and compile:
            raise ValueError("fused=True and compile=True are mutually exclusive")
        defaults = dict(values, curvature_init=curvature_init)
        super().__init__(params, defaults)
        # fused: the CPU step as one compiled loop nest (rl_trust.optim._cpu_kernel, numba) instead of
        # ~40 eager passes. None (default): used for every group whose parameters are on the CPU.
        if fused:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.device.type != "cpu" or p.dtype not in (torch.float32, torch.float64):
                        raise ValueError(
                            f"fused=True needs float32/float64 CPU parameters, got {p.dtype} on {p.device}")
        self._fused = fused
        if fused:
            _load_kernel()  # fail here, not at the first step, if numba is missing
        # compile=True runs the step through torch.compile (needs a C++ compiler on the CPU; the first
        # step of each group size compiles, tens of seconds). Measured on the CPU (docs/benchmarks.md):
        # faster than eager on small critics, where per-op overhead dominates, slower on a 2M-parameter
        # group, where its full-size outputs cost more than the fusion saves.
        self._compiled = torch.compile(fused_update, dynamic=False) if compile else None

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
        row = buf.stride(0) * buf.element_size()
        base = buf.data_ptr() + PRECISION * row
        for p in all_params:
            st = self.state[p]
            n = p.numel()
            # After load_state_dict the views may be copies: point them back into the buffer (the
            # check is pointer arithmetic: slicing out the views on every step costs more than the step).
            ptr = base + offset * buf.element_size()
            if "precision" not in st or st["precision"].data_ptr() != ptr:
                st["precision"] = buf[PRECISION, offset:offset + n].view_as(p)
                st["curvature"] = buf[CURVATURE, offset:offset + n].view_as(p)
            offset += n
        return buf

    def _workspace(self, group: dict, buf: Tensor, rows: int) -> Tensor:
        """``rows`` scratch rows for one step (8 for the eager step, 2 for the CPU kernel), reused across
        steps (large fresh allocations dominate otherwise). Derived, not state: not saved, rebuilt after
        ``load_state_dict``."""
        cache = self.__dict__.setdefault("_scratch", {})
        key = id(group)
        ws = cache.get(key)
        if ws is None or ws.shape != (rows, buf.shape[1]) or ws.device != buf.device or ws.dtype != buf.dtype:
            ws = cache[key] = torch.empty(rows, buf.shape[1], dtype=buf.dtype, device=buf.device)
        return ws

    def _group_step(self, group: dict, params: list[Tensor]) -> None:
        buf = self._group_state(group)
        head = self.state[group["params"][0]]
        eps, wd = group["lr"], group["weight_decay"]
        reg, prior, nu = group["reg_weight"], group["prior_prec"], group["nu"]
        partial = len(params) != len(group["params"])
        if not partial and group.get("_all_initialized", False) and self._use_kernel(group, buf):
            self._kernel_step(group, head, buf, self._workspace(group, buf, 2))
            return
        ws = self._workspace(group, buf, 8)
        if partial:  # some parameters have no gradient: they take no step and keep their state
            have = {id(p) for p in params}
            mask = torch.cat([torch.full((p.numel(),), id(p) in have, device=buf.device) for p in group["params"]])
            saved = buf.clone()
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in group["params"]]
        else:
            grads = [p.grad for p in params]
        mu, g, k0, k1, s, t0, t1, t2 = ws.unbind(0)
        torch.cat([p.detach().reshape(-1) for p in group["params"]], out=mu)
        torch.cat([t.reshape(-1).to(buf.dtype) for t in grads], out=g)
        prec, a, b, p00, p01, p11 = buf.unbind(0)
        # The intercept starts at the first gradient seen (elementwise, so late-arriving gradients work).
        init = head["initialized"]
        if partial or not group.get("_all_initialized", False):
            b.copy_(torch.where(init > 0, b, g))
            if partial:
                init.masked_fill_(mask, 1.0)
            else:
                init.fill_(1.0)
                group["_all_initialized"] = True

        q, r = group["dynamic_model_noise"], group["measurement_noise"]
        if wd != 0:
            mu.mul_(1.0 - eps * wd)
        if self._compiled is not None and not partial:
            hp = torch.tensor([eps, q, r, group["min_curvature"], reg * prior, reg, nu], dtype=buf.dtype)
            new_mu, new_buf, eta, raw_kl = self._compiled(mu, g, buf, head["eta"], hp.to(buf.device),
                                                          group["dual_iters"])
            buf.copy_(new_buf)
            mu = new_mu
            self._finish(group, head, mu, eta, raw_kl, eps)
            return

        # Filter predict (random-walk drift) and update with regressor h = (1, μ), measurement g.
        p00.add_(q)
        p11.add_(q)
        torch.addcmul(p00, p01, mu, out=k0)  # k = P h
        torch.addcmul(p01, p11, mu, out=k1)
        torch.addcmul(k0, k1, mu, out=s).add_(r)  # S = hᵀ P h + r
        gain0, gain1 = torch.div(k0, s, out=t0), torch.div(k1, s, out=t1)
        innovation = torch.addcmul(b, a, mu, out=t2).neg_().add_(g)  # g − (aμ + b)
        b.addcmul_(gain0, innovation)
        a.addcmul_(gain1, innovation)
        # P −= K hᵀ P: P00 −= K0 k0, P01 −= K0 k1, P11 −= K1 k1 (K = k / S).
        p00.addcmul_(gain0, k0, value=-1.0)
        p01.addcmul_(gain0, k1, value=-1.0)
        p11.addcmul_(gain1, k1, value=-1.0)

        # Trust-region step: Δ(η) = −c / (d + ηΛ) with c = d μ + b, d = ā + λΛ0.
        d = torch.clamp(a, min=group["min_curvature"], out=k0).add_(reg * prior)
        c = torch.addcmul(b, d, mu, out=k1)
        if partial:
            c.mul_(mask)
        eta = solve_dual(c, d, prec, eps, head["eta"], group["dual_iters"], scratch=(s, t0, t1, t2))
        step = c.div_(torch.addcmul(d, prec, eta, out=s)).neg_()
        # Where the dual is not fully converged (KL a hair above ε) shrink the step onto the bound.
        raw_kl = 0.5 * torch.dot(torch.mul(prec, step, out=s), step)
        scale = torch.where(raw_kl > eps, torch.sqrt(eps / raw_kl), torch.ones_like(raw_kl))
        mu.addcmul_(step, scale)
        # Precision: Λ' = (ā + λΛ0 + νΛ) / (λ + ν).
        prec.mul_(nu).add_(d).div_(reg + nu)

        if partial:
            buf.copy_(torch.where(mask, buf, saved))
        self._finish(group, head, mu, eta, raw_kl, eps)

    def _use_kernel(self, group: dict, buf: Tensor) -> bool:
        """Whether this group's step runs as the fused CPU kernel (fused=None: wherever it can)."""
        if self._fused is False or self._compiled is not None or buf.device.type != "cpu":
            return False
        # The kernel writes parameters in place through numpy views: they must be contiguous.
        return buf.dtype in (torch.float32, torch.float64) and all(
            p.dtype == buf.dtype and p.grad.dtype == buf.dtype and p.is_contiguous() and not p.grad.is_sparse
            for p in group["params"])

    def _kernel_step(self, group: dict, head: dict, buf: Tensor, ws: Tensor) -> None:
        """The step as compiled loops over each parameter, its gradient and its state slices, in place."""
        cache = self.__dict__.setdefault("_kernel_rows", {})
        entry = cache.get(id(group))
        if entry is None or entry[0] is not buf or entry[1] is not ws:
            # Numpy views of the state rows, sliced per parameter (rebuilt if the buffers are replaced).
            b, w = buf.numpy(), ws.numpy()
            rows, offset = [], 0
            for p in group["params"]:
                sl = slice(offset, offset + p.numel())
                rows.append(tuple(b[k, sl] for k in range(6)) + (w[0, sl], w[1, sl]))
                offset += p.numel()
            entry = cache[id(group)] = (buf, ws, rows, w[0], w[1])
        _, _, rows, u, beta = entry
        # Numpy views of the parameters and gradients, reused while their storage is the same (a
        # critic that keeps its gradient buffers hands the same ones every step).
        ptrs = [(p.data_ptr(), p.grad.data_ptr()) for p in group["params"]]
        seg_cache = self.__dict__.setdefault("_kernel_segments", {})
        cached = seg_cache.get(id(group))
        if cached is None or cached[0] != ptrs or cached[1] is not rows:
            segments = [(p.detach().numpy().reshape(-1), p.grad.detach().numpy().reshape(-1)) + r
                        for p, r in zip(group["params"], rows, strict=True)]
            seg_cache[id(group)] = cached = (ptrs, rows, segments)
        segments = cached[2]
        eps, wd = group["lr"], group["weight_decay"]
        reg, nu = group["reg_weight"], group["nu"]
        eta, raw_kl = _load_kernel().step(segments, u, beta, eps, 1.0 - eps * wd, group["dynamic_model_noise"],
                                          group["measurement_noise"], group["min_curvature"],
                                          reg * group["prior_prec"], reg, nu, float(head["eta"]), group["dual_iters"])
        for p in group["params"]:  # written through numpy: tell autograd the parameters changed
            torch.autograd.graph.increment_version(p)
        head["eta"] = group["eta"] = torch.tensor(eta, dtype=buf.dtype)
        group["kl"] = torch.tensor(min(raw_kl, eps), dtype=buf.dtype)
        group["dual_residual"] = torch.tensor(abs(raw_kl - eps) / eps if eta > 0 else 0.0, dtype=buf.dtype)

    @staticmethod
    def _finish(group: dict, head: dict, mu: Tensor, eta: Tensor, raw_kl: Tensor, eps: float) -> None:
        """Record η, the achieved KL and the dual residual; write the new means into the parameters."""
        head["eta"] = eta
        group["eta"] = eta
        group["kl"] = torch.minimum(raw_kl, raw_kl.new_tensor(eps))
        # Dual residual |KL(η) − ε| / ε of an active constraint (a slack one, η = 0, has none).
        group["dual_residual"] = torch.where(eta > 0, (raw_kl - eps).abs() / eps, torch.zeros_like(raw_kl))
        offset = 0
        for p in group["params"]:
            n = p.numel()
            if p.grad is not None:
                p.copy_(mu[offset:offset + n].view_as(p))
            offset += n


@functools.cache
def _load_kernel():
    from rl_trust.optim import _cpu_kernel  # numba: imported (and compiled, or loaded from its cache) on first use

    return _cpu_kernel


def solve_dual(c: Tensor, d: Tensor, prec: Tensor, eps: float, eta_prev: Tensor, iters: int,
               scratch: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> Tensor:
    """η ≥ 0 with KL(η) = ½ Σ Λ c² / (d + ηΛ)² = ε (or η = 0 if KL(0) ≤ ε), on device, no sync.

    Written as F(η) = 2 KL = Σ w / (β + η)² with β = d/Λ, w = c²/Λ. Newton's method on
    ψ(η) = F^{-1/2} − (2ε)^{-1/2}, concave and increasing in η (Moré & Sorensen 1983): from the
    right of the root its first step lands left of it (or at η = 0 when the constraint is slack),
    and from the left it converges monotonically and quadratically. Warm-started at ``eta_prev``.
    ``scratch``: four tensors shaped like ``c`` to work in.
    """
    if scratch is None:
        scratch = tuple(torch.empty_like(c) for _ in range(4))
    beta_, w_, t_, wt2_ = scratch
    beta = torch.div(d, prec, out=beta_)
    w = torch.mul(c, c, out=w_).div_(prec)
    target = 2.0 * eps
    eta = eta_prev
    zero = torch.zeros_like(eta_prev)
    for _ in range(iters):
        t = torch.add(beta, eta, out=t_).reciprocal_()
        wt2 = torch.mul(w, t, out=wt2_).mul_(t)
        f, s3 = wt2.sum(), torch.dot(wt2, t)  # F(η) and −F'(η)/2
        increment = f * (torch.sqrt(f / target) - 1.0) / s3
        eta = torch.clamp(eta + torch.where(s3 > 0, increment, zero), min=0.0)
    return eta


def fused_update(mu: Tensor, g: Tensor, buf: Tensor, eta_prev: Tensor, hp: Tensor,
                 iters: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The eager step's filter, dual and primal updates written functionally, for ``torch.compile``.

    ``hp`` = (ε, q, r, a_min, λΛ0, λ, ν) as a tensor, so that a scheduled ε does not recompile.
    Returns (new μ, new [6, n] state, η, KL(η) of the unscaled step).
    """
    eps, q, r, floor, reg_prior, reg, nu = hp.unbind(0)
    prec, a, b, p00, p01, p11 = buf.unbind(0)
    p00 = p00 + q
    p11 = p11 + q
    k0 = p00 + p01 * mu
    k1 = p01 + p11 * mu
    s = k0 + k1 * mu + r
    gain0, gain1 = k0 / s, k1 / s
    innovation = g - (a * mu + b)
    b = b + gain0 * innovation
    a = a + gain1 * innovation
    p00, p01, p11 = p00 - gain0 * k0, p01 - gain0 * k1, p11 - gain1 * k1
    d = torch.maximum(a, floor) + reg_prior
    c = d * mu + b
    beta, w = d / prec, c * c / prec
    target = 2.0 * eps
    eta = eta_prev
    for _ in range(iters):
        t = 1.0 / (beta + eta)
        wt2 = w * t * t
        f, s3 = wt2.sum(), (wt2 * t).sum()
        increment = f * (torch.sqrt(f / target) - 1.0) / s3
        eta = torch.clamp(eta + torch.where(s3 > 0, increment, torch.zeros_like(increment)), min=0.0)
    step = -c / (d + eta * prec)
    raw_kl = 0.5 * (prec * step * step).sum()
    scale = torch.where(raw_kl > eps, torch.sqrt(eps / raw_kl), torch.ones_like(raw_kl))
    new_prec = (prec * nu + d) / (reg + nu)
    return mu + step * scale, torch.stack([new_prec, a, b, p00, p01, p11]), eta, raw_kl
