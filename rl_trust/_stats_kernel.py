"""The rollout's per-step statistics as compiled loops (numba): one call where numpy makes a dozen.

Each env step updates the observation statistics, normalises the observations and scales the
rewards; for a handful of envs numpy's per-call overhead (a dozen small calls for ``mean``/``var``/
``clip``/``astype``) costs several times the arithmetic, and in a rollout with worker processes that
time sits between two simulator steps. Same formulas as the numpy code they replace, evaluated in
the same order with IEEE arithmetic (no fast-math): the statistics agree with numpy's to rounding
(numpy sums pairwise), the normalised values and scaled rewards exactly given the statistics.
``tests/test_normalization.py`` checks both against the plain numpy formulas.

Compiled on first use and cached on disk next to this file when that is writable.
"""

from __future__ import annotations

import math

import numba

_JIT = dict(cache=True, error_model="numpy", nogil=True)


@numba.njit(**_JIT)
def _clip(v, bound):  # pragma: no cover - compiled
    """np.clip(v, -bound, bound), NaN passing through as there."""
    if v < -bound:
        return -bound
    if v > bound:
        return bound
    return v


@numba.njit(**_JIT)
def rms_update(mean, var, count, x):  # pragma: no cover - compiled
    """Merge the batch ``x`` [n, d] into ``mean`` / ``var`` [d] (float64, in place) of ``count``
    samples (Chan et al.'s parallel update, the population variance of the batch); returns the new count."""
    n, d = x.shape
    if n == 0:
        return count
    total = count + n
    for j in range(d):
        s = 0.0
        for i in range(n):
            s += x[i, j]
        batch_mean = s / n
        s2 = 0.0
        for i in range(n):
            e = x[i, j] - batch_mean
            s2 += e * e
        batch_var = s2 / n
        delta = batch_mean - mean[j]
        m2 = var[j] * count + batch_var * n + delta * delta * count * n / total
        mean[j] = mean[j] + delta * n / total
        var[j] = m2 / total
    return total


@numba.njit(**_JIT)
def normalize(x, mean, var, eps, clip, out):  # pragma: no cover - compiled
    """``out`` [n, d] (float32) = clip((x - mean) / sqrt(var + eps), -clip, clip), computed in float64."""
    n, d = x.shape
    for j in range(d):
        sd = math.sqrt(var[j] + eps)
        m = mean[j]
        for i in range(n):
            out[i, j] = _clip((x[i, j] - m) / sd, clip)


@numba.njit(**_JIT)
def scale_rewards(rewards, dones, ret, gamma, mean, var, count, update, eps, clip, out):  # pragma: no cover
    """Reward scaling for one step: with ``update``, ret = gamma ret + r, the return statistics
    ``mean`` / ``var`` [1] take ``ret`` in, then ret is reset where ``dones``; ``out`` (float32) =
    clip(r / sqrt(var + eps), -clip, clip). Returns the new count."""
    n = rewards.shape[0]
    if update:
        for i in range(n):
            ret[i] = ret[i] * gamma + rewards[i]
        count = rms_update(mean, var, count, ret.reshape(n, 1))
        for i in range(n):
            if dones[i]:
                ret[i] = 0.0
    sd = math.sqrt(var[0] + eps)
    for i in range(n):
        out[i] = _clip(rewards[i] / sd, clip)
    return count
