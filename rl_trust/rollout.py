"""The collector: steps the envs with the current policy and fills a RolloutBatch."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from rl_trust.batch import RolloutBatch
from rl_trust.config import OBS_STATS
from rl_trust.normalization import ObsNormalizer, RewardScaler, env_moments
from rl_trust.policies import Actor
from rl_trust.workers import Envs


@dataclass
class EpisodeStats:
    """Raw (unnormalised) returns and lengths of the episodes finished during one collect."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


def env_generators(seed: int | None, ids) -> list[np.random.Generator]:
    """Each env's action-noise generator, keyed by its global index: the noise an env gets does not depend
    on which process steps it."""
    return [np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(int(i),)))) for i in ids]


@dataclass
class Segment:
    """One :meth:`Collector.segment` of ``n`` envs, before the run-wide normalisers finish it (:func:`finish`):
    what a Ray rollout actor sends back. Arrays are ``[T, n, ...]``; ``rewards`` raw, ``obs_means`` /
    ``obs_vars`` each env's moments of the observations reached (:func:`~rl_trust.normalization.env_moments`;
    None where the statistics took them per step); ``episode_returns`` / ``episode_lengths`` are read
    where ``terminated | truncated``. A collector's segment is valid until its next one."""

    obs: np.ndarray
    next_obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray
    obs_means: np.ndarray | None
    obs_vars: np.ndarray | None


def concat_segments(segments: list[Segment]) -> Segment:
    """The segments of consecutive env slices as one, envs in order."""
    first = segments[0]
    joined = {f.name: (None if getattr(first, f.name) is None else
                       np.concatenate([getattr(s, f.name) for s in segments], axis=1 if f.name[:4] != "obs_" else 0))
              for f in dataclasses.fields(Segment)}
    return Segment(**joined)


def finish(segment: Segment, obs_norm: ObsNormalizer, reward_scaler: RewardScaler) -> tuple[RolloutBatch, EpisodeStats]:
    """A whole rollout's segment as the RolloutBatch: the observation statistics take its observations in
    (one pooled update) and rewards are scaled step by step over every env, so neither depends on how the
    envs were split between processes or groups."""
    if segment.obs_means is not None:
        obs_norm.update_envs(len(segment.rewards), segment.obs_means, segment.obs_vars)
    done = segment.terminated | segment.truncated
    rewards = np.empty(segment.rewards.shape, np.float32)
    for t in range(len(rewards)):
        reward_scaler(segment.rewards[t], done[t], out=rewards[t])
    batch = RolloutBatch(
        obs=torch.tensor(segment.obs),
        next_obs=torch.tensor(segment.next_obs),
        actions=torch.tensor(segment.actions),
        rewards=torch.from_numpy(rewards),
        terminated=torch.tensor(segment.terminated),
        truncated=torch.tensor(segment.truncated),
    )
    return batch, EpisodeStats(segment.episode_returns[done].tolist(), segment.episode_lengths[done].tolist())


class Collector:
    """Steps ``envs`` for ``steps_per_env`` steps per :meth:`collect`, the policy queried in one batch.

    Buffers are preallocated once; the policy is queried in numpy (:class:`~rl_trust.policies.NumpyPolicy`)
    with each env's noise drawn from its own generator (:func:`env_generators`, global index ``first_env +
    i``). Box actions are stored unclipped (the policy's sample, whose log-probability the update uses) and
    clipped only for the env. ``obs_stats``: ``rollout`` freezes the observation statistics for the
    rollout and takes its observations in at the end, so a batch is the same whatever the split of the envs
    (worker processes, env groups, Ray actors); ``step`` updates them after every step, in this process.
    """

    def __init__(self, envs: Envs, actor: Actor, obs_norm: ObsNormalizer,
                 reward_scaler: RewardScaler, steps_per_env: int, seed: int | None, *,
                 obs_stats: str = "rollout", first_env: int = 0):
        if obs_stats not in OBS_STATS:
            raise ValueError(f"obs_stats={obs_stats!r}: one of {OBS_STATS}")
        self.envs, self.actor, self.obs_norm, self.reward_scaler = envs, actor, obs_norm, reward_scaler
        self.per_step = obs_stats == "step"
        self.T, self.N = steps_per_env, envs.num_envs
        space = envs.single_action_space
        self.continuous = isinstance(space, gym.spaces.Box)
        if self.continuous:
            self.low, self.high = space.low, space.high
        obs_space = envs.single_observation_space
        act_shape, act_dtype = (space.shape, np.float32) if self.continuous else ((), np.int64)
        T, N = self.T, self.N
        self._obs = np.zeros((T, N, *obs_space.shape), np.float32)
        self._next_obs = np.zeros((T, N, *obs_space.shape), np.float32)
        self._raw = np.zeros((T, N, *obs_space.shape), np.float64)  # the observations reached, unnormalised
        self._actions = np.zeros((T, N, *act_shape), act_dtype)
        self._rewards = np.zeros((T, N), np.float64)
        self._terminated = np.zeros((T, N), bool)
        self._truncated = np.zeros((T, N), bool)
        self._episode_returns = np.zeros((T, N), np.float64)
        self._episode_lengths = np.zeros((T, N), np.int64)
        self.groups = [slice(lo, hi) for lo, hi in envs.groups]  # stepped in turn (rl_trust.workers)
        self.raw_obs = np.array(envs.reset(seed=seed), np.float64)  # what the policy acts on next, unnormalised
        obs_norm.update(self.raw_obs)
        self.ep_return = np.zeros(N, np.float64)
        self.ep_length = np.zeros(N, np.int64)
        self.rngs = env_generators(seed, range(first_env, first_env + N))

    def collect(self, idle: Callable[[], bool] | None = None) -> tuple[RolloutBatch, EpisodeStats]:
        """Step ``steps_per_env`` times and :func:`finish` the segment. ``idle``: one unit of background work
        per call, returning False when none is left (the critic's update of the previous batch, see
        ``rl_trust.train``), run while worker processes step the envs; it must not touch the actor or the
        envs. In-process envs never call it: the caller finishes whatever is left."""
        return finish(self.segment(idle), self.obs_norm, self.reward_scaler)

    def segment(self, idle: Callable[[], bool] | None = None) -> Segment:
        """Step ``steps_per_env`` times with the current policy and observation statistics (``idle``: see
        :meth:`collect`)."""
        policy = self.actor.numpy_policy()
        T, groups, envs, norm = self.T, self.groups, self.envs, self.obs_norm
        self._noise = np.stack([policy.noise(rng, (T,)) for rng in self.rngs], axis=1)  # [T, N, ...]
        # Pipelined and double-buffered: the env groups step in turn; once a group's step t is in,
        # its next actions are chosen and sent first (the workers step them while the learner records
        # step t and handles the other group), then step t is recorded. In process it is the same
        # work in the same order, so the batch does not depend on the worker count.
        last_obs = np.empty_like(self._obs[0])
        norm.normalize(self.raw_obs, out=self._obs[0])
        for g, sl in enumerate(groups):
            self._send(policy, 0, g, sl)
        for t in range(T):
            next_row = self._obs[t + 1] if t + 1 < T else last_obs
            for g, sl in enumerate(groups):
                res = envs.step_wait(idle, g)
                self._raw[t, sl] = res.obs
                if self.per_step:
                    norm.update(res.obs)
                next_obs = norm.normalize(res.obs, out=next_row[sl])  # what the policy acts on next
                if t + 1 < T:
                    self._send(policy, t + 1, g, sl)

                done = res.terminated | res.truncated
                self.ep_return[sl] += res.rewards
                self.ep_length[sl] += 1
                self._rewards[t, sl] = res.rewards
                self._terminated[t, sl] = res.terminated
                self._truncated[t, sl] = res.truncated
                if done.any():
                    ep_return, ep_length = self.ep_return[sl], self.ep_length[sl]
                    self._episode_returns[t, sl] = ep_return
                    self._episode_lengths[t, sl] = ep_length
                    ep_return[done] = 0.0
                    ep_length[done] = 0
                    norm.normalize(res.final_obs, out=self._next_obs[t, sl])
                else:  # final_obs is obs where no episode ended
                    self._next_obs[t, sl] = next_obs
        self.raw_obs = self._raw[T - 1].copy()
        means, variances = (None, None) if self.per_step else env_moments(self._raw)
        return Segment(self._obs, self._next_obs, self._actions, self._rewards, self._terminated, self._truncated,
                       self._episode_returns, self._episode_lengths, means, variances)

    def close(self) -> None:
        self.envs.close()

    def metrics(self) -> dict[str, float]:
        """The sampler's own metrics (none here; a Ray sampler counts restarted actors)."""
        return {}

    def _send(self, policy, t: int, g: int, sl: slice) -> None:
        """Sample actions for group ``g`` on ``self._obs[t, sl]``, record them as step t's, send them."""
        action = policy.sample(self._obs[t, sl], self._noise[t, sl])
        self._actions[t, sl] = action
        self.envs.step_async(self._env_action(action), g)

    def _env_action(self, action: np.ndarray) -> np.ndarray:
        if not self.continuous:
            return action
        np.maximum(action, self.low, out=action)  # in place: the unclipped action is already in the batch
        return np.minimum(action, self.high, out=action)  # np.clip without its Python wrapper

    def state_dict(self) -> dict:
        """Everything the next :meth:`collect` depends on, taken between collects: the normalisers, the
        action noise's generators, the observation to act on, the episodes in flight and each env's own
        state (:meth:`Envs.get_state`: a str, the reason, for an env that cannot be saved)."""
        return {"obs_norm": self.obs_norm.state_dict(), "reward_scaler": self.reward_scaler.state_dict(),
                **self.env_state_dict()}

    def env_state_dict(self) -> dict:
        """The per-env part of :meth:`state_dict`, every entry indexed by env: the parts of consecutive env
        slices concatenate into the whole run's (rl_trust.ray_sampler)."""
        return {"rngs": [rng.bit_generator.state for rng in self.rngs], "obs": self.raw_obs.copy(),
                "ep_return": self.ep_return.copy(), "ep_length": self.ep_length.copy(), "envs": self.envs.get_state()}

    def load_state_dict(self, state: dict) -> str | None:
        """Continue from ``state``. Returns None when the envs continue exactly, else why they could not:
        then every env starts a fresh episode (reset with a seed drawn from the restored generator) and
        the normalisers keep their statistics."""
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        lost = self.load_env_state_dict(state)
        if lost is not None:
            self.reward_scaler.ret[:] = 0.0
        return lost

    def load_env_state_dict(self, state: dict) -> str | None:
        """Load :meth:`env_state_dict`'s part of ``state`` (see :meth:`load_state_dict`)."""
        for rng, rng_state in zip(self.rngs, state["rngs"], strict=True):
            rng.bit_generator.state = rng_state
        lost = next((s for s in state["envs"] if isinstance(s, str)), None)
        if lost is None:
            self.envs.set_state(state["envs"])
            self.raw_obs = np.array(state["obs"], np.float64)
            self.ep_return = np.array(state["ep_return"], np.float64)
            self.ep_length = np.array(state["ep_length"], np.int64)
            return None
        self.raw_obs = np.array(self.envs.reset(seed=int(self.rngs[0].integers(2**31))), np.float64)
        self.ep_return[:] = 0.0
        self.ep_length[:] = 0
        return lost
