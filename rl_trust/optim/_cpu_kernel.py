"""arTuRO's step for CPU tensors as compiled loops (numba), in place, with no full-size temporaries.

One pass per parameter runs the filter update; each dual evaluation is one reduction that recomputes
the Newton step's terms from the state (so the kernel needs no scratch rows); one pass per parameter
writes the new means and precisions. Parameters and gradients are read and written
where they are. Same arithmetic as ``arturo._eager_arturo`` except that reassociation and fused
multiply-adds are allowed and reductions accumulate in float64; ``tests/test_arturo.py`` checks it
against the eager step and the per-tensor reference. Compiled on first use for each dtype and number
of parameters, and cached on disk next to this file when that is writable.
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
def step(mus, grads, state, eps, wd_scale, q, r, floor, reg_prior, nu, inv_denom, eta, iters):  # pragma: no cover
    """One group's step, in place; returns η, the achieved KL and the dual residual |KL(η) − ε|/ε.

    ``mus``, ``grads``: per parameter, its values and its gradient as flat arrays (tuples); ``state``:
    the group's ``[6, n]`` rows, columns in parameter order. Scalars are cast to the state's dtype, so
    the per-element arithmetic stays in it.
    """
    dt = state.dtype.type
    hp = (dt(wd_scale), dt(floor), dt(reg_prior))
    off = _offsets(mus)
    for k in range(len(mus)):
        cols = slice(off[k], off[k + 1])
        _filter_pass(mus[k], grads[k], state[1, cols], state[2, cols], state[3, cols], state[4, cols], state[5, cols],
                     hp[0], dt(q), dt(r))
    eta = solve_dual(mus, state, hp, eps, eta, iters)
    raw_kl = 0.5 * _dual_sums(mus, state, hp, dt(eta))[0]
    scale = math.sqrt(eps / raw_kl) if raw_kl > eps else 1.0  # KL a hair above ε: shrink the step onto the bound
    for k in range(len(mus)):
        cols = slice(off[k], off[k + 1])
        _primal_pass(mus[k], state[0, cols], state[1, cols], state[2, cols], hp, dt(eta), dt(scale), dt(nu),
                     dt(inv_denom))
    out = np.empty(3, state.dtype)
    out[0] = eta
    out[1] = min(raw_kl, eps)
    out[2] = abs(raw_kl - eps) / eps if eta > 0 else 0.0  # a slack constraint (η = 0) has no residual
    return out


@numba.njit(**_JIT)
def solve_dual(mus, state, hp, eps, eta, iters):  # pragma: no cover
    """``arturo.solve_dual``'s iteration: Newton on (2 KL(η))^{-1/2} from the previous η."""
    for _ in range(iters):
        f, s3 = _dual_sums(mus, state, hp, state.dtype.type(eta))
        if s3 > 0:
            eta = max(eta + f * (math.sqrt(f / (2.0 * eps)) - 1.0) / s3, 0.0)
    return eta


@numba.njit(**_JIT)
def _dual_sums(mus, state, hp, eta):  # pragma: no cover
    """F(η) = Σ Λc²/(d+ηΛ)² (= 2 KL(η)) and Σ Λ²c²/(d+ηΛ)³ (= −F'(η)/2), accumulated in float64."""
    f = s3 = 0.0
    one = state.dtype.type(1)
    off = _offsets(mus)
    for k in range(len(mus)):
        cols = slice(off[k], off[k + 1])
        mu, prec, a, b = mus[k], state[0, cols], state[1, cols], state[2, cols]
        for i in range(mu.shape[0]):
            _, c, _, denom = _newton_terms(mu[i], prec[i], a[i], b[i], hp, eta)
            t = one / denom
            wt2 = prec[i] * c * c * t * t
            f += wt2
            s3 += wt2 * prec[i] * t
    return f, s3


@numba.njit(inline="always", **_JIT)
def _newton_terms(mu, prec, a, b, hp, eta):  # pragma: no cover
    """Weight-decayed μ, c = dμ + b, d = ā + λΛ0 and d + ηΛ: the step is Δ(η) = −c / (d + ηΛ)."""
    wd_scale, floor, reg_prior = hp
    m = mu * wd_scale
    d = max(a, floor) + reg_prior
    return m, d * m + b, d, d + eta * prec


@numba.njit(**_JIT)
def _filter_pass(mu, g, a, b, p00, p01, p11, wd_scale, q, r):  # pragma: no cover
    """Filter predict (P += qI) and update with regressor h = (1, μ), measurement g, in place."""
    for i in range(mu.shape[0]):
        m = mu[i] * wd_scale
        c00 = p00[i] + q
        c01 = p01[i]
        c11 = p11[i] + q
        k0 = c00 + c01 * m  # k = P h
        k1 = c01 + c11 * m
        s = k0 + k1 * m + r
        gain0 = k0 / s
        gain1 = k1 / s
        innovation = g[i] - (b[i] + a[i] * m)
        b[i] += gain0 * innovation
        a[i] += gain1 * innovation
        p00[i] = c00 - gain0 * k0
        p01[i] = c01 - gain0 * k1
        p11[i] = c11 - gain1 * k1


@numba.njit(**_JIT)
def _primal_pass(mu, prec, a, b, hp, eta, scale, nu, inv_denom):  # pragma: no cover
    """μ ← wd·μ + scale · Δ(η); Λ ← (d + νΛ)/(λ + ν)."""
    for i in range(mu.shape[0]):
        m, c, d, denom = _newton_terms(mu[i], prec[i], a[i], b[i], hp, eta)
        mu[i] = m - c / denom * scale
        prec[i] = (prec[i] * nu + d) * inv_denom


@numba.njit(**_JIT)
def _offsets(mus):  # pragma: no cover
    """Where each parameter's columns start in the state (and, last, the column count)."""
    off = np.zeros(len(mus) + 1, np.int64)
    for k in range(len(mus)):
        off[k + 1] = off[k] + mus[k].size
    return off
