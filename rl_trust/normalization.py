"""Running statistics for observation normalisation and reward scaling.

Both keep float64 state (numpy arrays; Python floats for scalar statistics), expose ``state_dict`` /
``load_state_dict`` so a checkpoint carries them, and can be frozen for evaluation.
"""

from __future__ import annotations

import math

import numpy as np


class RunningMeanStd:
    """Mean and variance of a stream of batches (parallel algorithm of Chan et al., 1979)."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        self.mean = np.zeros(shape, np.float64) if shape else 0.0
        self.var = np.ones(shape, np.float64) if shape else 1.0
        # A tiny prior count keeps the first update well defined (as in OpenAI baselines).
        self.count = epsilon

    def update(self, x: np.ndarray) -> None:
        """Merge the batch ``x`` [n, *shape] into the statistics."""
        x = np.asarray(x)
        n = x.shape[0]
        if n == 0:
            return
        if x.ndim == 1:  # scalar statistics (reward scaling, every env step): the moments as Python floats
            batch_mean = float(np.add.reduce(x, dtype=np.float64)) / n
            dev = x - batch_mean
            batch_var = float(np.dot(dev, dev)) / n
        else:
            batch_mean = np.add.reduce(x, axis=0, dtype=np.float64) / n
            dev = np.subtract(x, batch_mean, dtype=np.float64)
            batch_var = np.add.reduce(dev * dev, axis=0) / n
        self.merge(n, batch_mean, batch_var)

    def merge(self, n: float, batch_mean, batch_var) -> None:
        """Merge the moments of ``n`` more samples (their mean and population variance) into the statistics."""
        count, total = self.count, self.count + n
        delta = batch_mean - self.mean
        self.var = (self.var * count + batch_var * n + delta * delta * (count * n / total)) / total
        self.mean = self.mean + delta * (n / total)
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": np.copy(self.mean), "var": np.copy(self.var), "count": float(self.count)}

    def load_state_dict(self, state: dict) -> None:
        as_state = (lambda v: float(v)) if np.ndim(state["mean"]) == 0 else (lambda v: np.array(v, np.float64))
        self.mean, self.var = as_state(state["mean"]), as_state(state["var"])
        self.count = float(state["count"])


def env_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each env's mean and population variance over a segment ``x`` [T, n, *shape] (float64, [n, *shape]).

    Computed env by env on a contiguous copy, so an env's figures are the same bits whichever envs
    share ``x`` with it (a process stepping envs 0-7 and one stepping 0-15 agree on env 3)."""
    means, variances = [], []
    for j in range(x.shape[1]):
        xj = np.ascontiguousarray(x[:, j], dtype=np.float64)
        mean = np.add.reduce(xj, axis=0) / len(xj)
        dev = xj - mean
        means.append(mean)
        variances.append(np.add.reduce(dev * dev, axis=0) / len(xj))
    return np.stack(means), np.stack(variances)


def pooled_moments(means: np.ndarray, variances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population variance of the union of equal-sized samples given each one's (rows of ``means``
    and ``variances``): the parallel combination of Chan et al. for equal counts."""
    mean = np.add.reduce(means, axis=0) / len(means)
    dev = means - mean
    return mean, (np.add.reduce(variances, axis=0) + np.add.reduce(dev * dev, axis=0)) / len(means)


class ObsNormalizer:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` with running statistics.

    ``enabled=False`` makes it the identity (float32 cast only); ``frozen=True`` stops updates.
    """

    def __init__(self, shape: tuple[int, ...], *, enabled: bool = True, clip: float = 10.0, eps: float = 1e-8):
        self.rms = RunningMeanStd(shape)
        self.enabled, self.clip, self.eps = enabled, clip, eps
        self.frozen = False

    def update(self, obs: np.ndarray) -> None:
        if self.enabled and not self.frozen:
            self.rms.update(obs)

    def update_envs(self, steps: int, means: np.ndarray, variances: np.ndarray) -> None:
        """Update with a rollout given as each env's moments over its ``steps`` observations
        (:func:`env_moments`, rows in global env order)."""
        if self.enabled and not self.frozen:
            self.rms.merge(steps * len(means), *pooled_moments(means, variances))

    def normalize(self, obs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The normalised ``obs`` as float32, written into ``out`` when given."""
        if not self.enabled:
            if out is None:
                return np.asarray(obs, np.float32)
            out[...] = obs
            return out
        z = np.subtract(obs, self.rms.mean, dtype=np.float64)
        z /= np.sqrt(self.rms.var + self.eps)
        np.maximum(z, -self.clip, out=z)  # np.clip (NaN passes through) without its Python wrapper
        np.minimum(z, self.clip, out=z)
        if out is None:
            return z.astype(np.float32)
        out[...] = z
        return out

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Update with ``obs`` (unless frozen) and return it normalised."""
        self.update(obs)
        return self.normalize(obs)

    def state_dict(self) -> dict:
        return {"rms": self.rms.state_dict(), "enabled": self.enabled, "clip": self.clip}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state["rms"])
        self.enabled, self.clip = bool(state["enabled"]), float(state["clip"])


class RewardScaler:
    """Divide rewards by the running std of the discounted return (no mean subtraction).

    The "reward scaling" of Engstrom et al. 2020 (arXiv 2005.12729, sec. 3) and SB3's
    VecNormalize: the return accumulator is reset where an episode ends (terminated or truncated).
    """

    def __init__(self, num_envs: int, gamma: float, *, enabled: bool = True, clip: float = 10.0, eps: float = 1e-8):
        self.rms = RunningMeanStd(())
        self.ret = np.zeros(num_envs, np.float64)
        self.gamma, self.enabled, self.clip, self.eps = gamma, enabled, clip, eps
        self.frozen = False

    def __call__(self, rewards: np.ndarray, dones: np.ndarray, out: np.ndarray | None = None,
                 envs: slice = slice(None)) -> np.ndarray:
        """The scaled ``rewards`` (float32, into ``out`` when given) of envs ``envs`` (all by default);
        the return statistics take this step in unless frozen, and the return accumulator restarts
        where ``dones``."""
        ret = self.ret[envs]
        if out is None:
            out = np.empty(len(ret), np.float32)
        if not self.enabled:
            out[...] = rewards
            return out
        if not self.frozen:
            ret *= self.gamma
            ret += rewards
            self.rms.update(ret)
            ret[dones] = 0.0
        scaled = np.divide(rewards, math.sqrt(self.rms.var + self.eps), dtype=np.float64)
        np.maximum(scaled, -self.clip, out=scaled)
        return np.minimum(scaled, self.clip, out=out)  # np.clip without its Python wrapper

    def state_dict(self) -> dict:
        return {"rms": self.rms.state_dict(), "ret": self.ret.copy(), "enabled": self.enabled}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state["rms"])
        if state["ret"].shape == self.ret.shape:
            self.ret = np.array(state["ret"], np.float64)
        self.enabled = bool(state["enabled"])
