"""Trust-region maths as free functions: conjugate gradient, Fisher-vector products, line search.

References: Schulman et al. 2015, "Trust Region Policy Optimization" (arXiv 1502.05477), appendix C;
Nocedal & Wright, "Numerical Optimization", algorithm 5.2 (CG) and 7.2 (CG with negative-curvature
stop, after Steihaug).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class CGResult:
    x: Tensor
    residual: float  # ||b - A x|| of the returned iterate (as tracked by the recurrence)
    iterations: int
    negative_curvature: bool  # stopped because p^T A p <= 0 (A not positive definite along p)


def cg_solve(matvec: Callable[[Tensor], Tensor], b: Tensor, *, iters: int, residual_tol: float = 1e-10) -> CGResult:
    """Conjugate gradient for ``A x = b``, A symmetric positive definite, known only through ``matvec``.

    Stops when ``r^T r <= residual_tol`` or after ``iters`` matrix-vector products. A direction of
    non-positive (or non-finite) curvature ends the iteration before any division by it, returning
    the last iterate: every step taken so far had positive curvature, so ``b^T x > 0`` still holds
    (x is a descent direction for the model) and nothing is NaN.
    """
    if iters < 1:
        raise ValueError(f"iters={iters} must be >= 1")
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r.dot(r)
    negative, iterations = False, 0
    for _ in range(iters):
        if rr <= residual_tol:
            break
        Ap = matvec(p)
        pAp = p.dot(Ap)
        if not torch.isfinite(pAp) or pAp <= 0:
            negative = True
            break
        alpha = rr / pAp
        x.add_(p, alpha=alpha)
        r.sub_(Ap, alpha=alpha)
        rr_new = r.dot(r)
        p.mul_(rr_new / rr).add_(r)
        rr = rr_new
        iterations += 1
    return CGResult(x, float(rr.sqrt()), iterations, negative)


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, *, iters: int,
                       residual_tol: float = 1e-10) -> Tensor:
    """Approximately solve ``A x = b`` (see :func:`cg_solve`, which also reports the residual)."""
    return cg_solve(matvec, b, iters=iters, residual_tol=residual_tol).x


def flat_grad(output: Tensor, params: Sequence[Tensor], **kwargs) -> Tensor:
    grads = torch.autograd.grad(output, params, **kwargs)
    return torch.cat([g.reshape(-1) for g in grads])


def fisher_vector_product(kl_fn: Callable[[], Tensor], params: Sequence[Tensor], vector: Tensor, *,
                          damping: float) -> Tensor:
    """``(H + damping I) v`` with H the Hessian of the scalar ``kl_fn()`` w.r.t. the flattened ``params``.

    Two backward passes, no matrix: ``H v = d/dθ (∇θ KL · v)``. At the old parameters the Hessian
    of the mean KL is the Fisher information matrix (TRPO appendix C.1). The reference form: TRPO
    uses :meth:`rl_trust.policies.Actor.fisher_product`, the same product without double backward.
    """
    params = list(params)
    grad = flat_grad(kl_fn(), params, create_graph=True)
    return flat_grad(grad.dot(vector), params) + damping * vector


def get_flat_params(params: Sequence[Tensor]) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def set_flat_params(params: Sequence[Tensor], flat: Tensor) -> None:
    """Copy ``flat`` into the parameters in place (their storage, and so optimizers' references, kept)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[offset:offset + n].view_as(p))
        offset += n


@dataclass(frozen=True)
class LineSearchResult:
    accepted: bool
    fraction: float  # of the full step finally applied (0 when rejected)
    backtracks: int  # step sizes tried and rejected
    kl: float  # KL of the applied step (0 when rejected)
    improvement: float  # actual surrogate improvement of the applied step
    expected_improvement: float  # first-order prediction for the applied step


def backtracking_line_search(params: Sequence[nn.Parameter], full_step: Tensor,
                             evaluate: Callable[[], tuple[Tensor, Tensor]], *, surrogate_before: float,
                             expected_improvement: float, max_kl: float, backtrack_coeff: float,
                             max_backtracks: int, accept_ratio: float = 0.0) -> LineSearchResult:
    """Try ``θ_old + c^k · full_step`` for k = 0 .. max_backtracks-1; keep the first acceptable one.

    ``evaluate()`` returns (surrogate, mean KL to the old policy) at the current parameters.
    A step is accepted when its KL is at most ``max_kl``, the surrogate improves, and the improvement
    is at least ``accept_ratio`` times the first-order prediction. If none is, the old parameters are
    restored bit for bit.
    """
    old = get_flat_params(params)
    fraction = 1.0
    for k in range(max_backtracks):
        set_flat_params(params, old + fraction * full_step)
        with torch.no_grad():
            surrogate, kl = evaluate()
        surrogate, kl = float(surrogate), float(kl)
        improvement = surrogate - surrogate_before
        expected = expected_improvement * fraction
        finite = improvement == improvement and kl == kl  # NaN check without a tensor op
        if finite and kl <= max_kl and improvement > 0 and improvement >= accept_ratio * expected:
            return LineSearchResult(True, fraction, k, kl, improvement, expected)
        fraction *= backtrack_coeff
    set_flat_params(params, old)
    return LineSearchResult(False, 0.0, max_backtracks, 0.0, 0.0, 0.0)
