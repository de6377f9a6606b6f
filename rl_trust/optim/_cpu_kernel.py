"""The arTuRO step for CPU tensors as compiled loops (numba): three kinds of pass, no temporaries.

The eager torch step is ~40 elementwise passes over a group's state (each op reads and writes whole
rows). Here one pass per parameter runs the filter update, prepares the dual's two inputs and
evaluates the dual at the warm start; each further dual evaluation is one reduction over those two
rows; one pass per parameter writes the new means and precisions. Parameters and gradients are read
and written in place (no gathering into flat copies). Same arithmetic as ``Arturo``'s eager step,
except that reassociation and fused multiply-adds are allowed and reductions accumulate in float64;
``tests/test_arturo.py`` checks it against the eager step and the per-tensor reference.

Compiled on first use (a few seconds) and cached on disk next to this file when that is writable.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Reassociation (vectorised reductions) and contraction (FMA); no finite-math assumptions, so a NaN
# in a gradient still reaches the parameters as it does in the eager step. error_model="numpy": IEEE
# division (x/0 = inf, as in torch) instead of a Python ZeroDivisionError check, which blocks vectorisation.
_JIT = dict(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy", nogil=True)


@numba.njit(**_JIT)
def _filter_pass(mu, g, prec, a, b, p00, p01, p11, u, beta, wd_scale, q, r, floor, reg_prior,
                 eta, one):  # pragma: no cover - compiled
    """Filter predict + update in place; u = c/√Λ and β = d/Λ for the dual; returns the dual sums at η.

    Scalars come in the arrays' dtype, so the per-element arithmetic stays in it.
    """
    f = 0.0
    s3 = 0.0
    for i in range(mu.shape[0]):
        m = mu[i] * wd_scale
        c00 = p00[i] + q
        c01 = p01[i]
        c11 = p11[i] + q
        k0 = c00 + c01 * m
        k1 = c01 + c11 * m
        s = k0 + k1 * m + r
        gain0 = k0 / s
        gain1 = k1 / s
        innovation = g[i] - (b[i] + a[i] * m)
        bi = b[i] + gain0 * innovation
        ai = a[i] + gain1 * innovation
        b[i] = bi
        a[i] = ai
        p00[i] = c00 - gain0 * k0
        p01[i] = c01 - gain0 * k1
        p11[i] = c11 - gain1 * k1
        d = max(ai, floor) + reg_prior
        lam = prec[i]
        be = d / lam
        ui = (bi + d * m) / np.sqrt(lam)
        beta[i] = be
        u[i] = ui
        t = one / (be + eta)
        wt2 = ui * ui * t * t
        f += wt2
        s3 += wt2 * t
    return f, s3


@numba.njit(**_JIT)
def _dual_sums(u, beta, eta, one):  # pragma: no cover - compiled
    """F(η) = Σ u²/(β+η)² (= 2 KL(η)) and Σ u²/(β+η)³ (= −F'(η)/2), accumulated in float64."""
    f = 0.0
    s3 = 0.0
    for i in range(u.shape[0]):
        t = one / (beta[i] + eta)
        wt2 = u[i] * u[i] * t * t
        f += wt2
        s3 += wt2 * t
    return f, s3


@numba.njit(**_JIT)
def _primal_pass(mu, prec, u, beta, wd_scale, eta, scale, nu, inv_denom):  # pragma: no cover - compiled
    """μ ← wd·μ + scale · Δ(η), Δ = −c/(d + ηΛ) = −u/(√Λ (β+η)); Λ ← (d + νΛ)/(λ+ν)."""
    for i in range(mu.shape[0]):
        lam = prec[i]
        be = beta[i]
        mu[i] = mu[i] * wd_scale - u[i] / (np.sqrt(lam) * (be + eta)) * scale
        prec[i] = (lam * nu + be * lam) * inv_denom


def step(segments: list[tuple[np.ndarray, ...]], u: np.ndarray, beta: np.ndarray, eps: float, wd_scale: float,
         q: float, r: float, floor: float, reg_prior: float, reg: float, nu: float, eta_prev: float,
         iters: int) -> tuple[float, float]:
    """One group's step, in place. ``segments``: per parameter, (μ, g, Λ, a, b, P00, P01, P11, u, β) as
    1-D arrays (the parameter, its gradient, its slices of the state rows and of the two scratch rows
    ``u`` and ``beta``). Returns (η, KL(η) of the unscaled step).

    The dual iteration is ``arturo.solve_dual``'s: Newton on (2 KL)^{-1/2} from the previous η, η kept
    in the parameters' dtype between iterations, then the step scaled onto the bound if KL(η) > ε.
    """
    dt = u.dtype.type
    one, wd = dt(1.0), dt(wd_scale)
    eta = float(dt(eta_prev))
    f = s3 = 0.0
    for mu, g, prec, a, b, p00, p01, p11, us, bs in segments:
        fi, si = _filter_pass(mu, g, prec, a, b, p00, p01, p11, us, bs, wd, dt(q), dt(r), dt(floor),
                              dt(reg_prior), dt(eta), one)
        f += fi
        s3 += si
    target = 2.0 * eps
    for k in range(iters):
        if k > 0:
            f, s3 = _dual_sums(u, beta, dt(eta), one)
        if s3 > 0:
            eta = eta + f * (math.sqrt(f / target) - 1.0) / s3
        eta = float(dt(max(eta, 0.0)))
    f, _ = _dual_sums(u, beta, dt(eta), one)
    raw_kl = 0.5 * f
    scale = math.sqrt(eps / raw_kl) if raw_kl > eps else 1.0
    args = (wd, dt(eta), dt(scale), dt(nu), dt(1.0 / (reg + nu)))
    for mu, _g, prec, _a, _b, _p00, _p01, _p11, us, bs in segments:
        _primal_pass(mu, prec, us, bs, *args)
    return eta, raw_kl
