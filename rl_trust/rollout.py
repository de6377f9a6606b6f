"""The collector: steps the envs with the current policy and fills a RolloutBatch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from rl_trust.batch import RolloutBatch
from rl_trust.normalization import ObsNormalizer, RewardScaler
from rl_trust.policies import Actor
from rl_trust.workers import Envs


@dataclass
class EpisodeStats:
    """Raw (unnormalised) returns and lengths of the episodes finished during one collect."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


class Collector:
    """Steps ``envs`` for ``steps_per_env`` steps per :meth:`collect`, the policy queried in one batch.

    Buffers are preallocated once; the policy is queried in numpy (:class:`~rl_trust.policies.NumpyPolicy`).
    Box actions are stored unclipped (the policy's sample, whose log-probability the update uses) and
    clipped only for the env.
    """

    def __init__(self, envs: Envs, actor: Actor, obs_norm: ObsNormalizer,
                 reward_scaler: RewardScaler, steps_per_env: int, seed: int | None):
        self.envs, self.actor, self.obs_norm, self.reward_scaler = envs, actor, obs_norm, reward_scaler
        self.T, self.N = steps_per_env, envs.num_envs
        space = envs.single_action_space
        self.continuous = isinstance(space, gym.spaces.Box)
        if self.continuous:
            self.low, self.high = space.low, space.high
        obs_shape = envs.single_observation_space.shape
        act_shape, act_dtype = (space.shape, np.float32) if self.continuous else ((), np.int64)
        T, N = self.T, self.N
        self._obs = np.zeros((T, N, *obs_shape), np.float32)
        self._next_obs = np.zeros((T, N, *obs_shape), np.float32)
        self._actions = np.zeros((T, N, *act_shape), act_dtype)
        self._rewards = np.zeros((T, N), np.float32)
        self._terminated = np.zeros((T, N), bool)
        self._truncated = np.zeros((T, N), bool)
        self.groups = [slice(lo, hi) for lo, hi in envs.groups]  # stepped in turn (rl_trust.workers)
        self.obs = obs_norm(envs.reset(seed=seed))
        self.ep_return = np.zeros(N, np.float64)
        self.ep_length = np.zeros(N, np.int64)
        # Action noise: the rollout's own generator (the policy runs in numpy here, see NumpyPolicy).
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def collect(self, idle: Callable[[], bool] | None = None) -> tuple[RolloutBatch, EpisodeStats]:
        """Step ``steps_per_env`` times. ``idle``: one unit of background work per call, returning False
        when none is left (the critic's update of the previous batch, see ``rl_trust.train``), run while
        worker processes step the envs; it must not touch the actor or the envs. In-process envs never
        call it: the caller finishes whatever is left."""
        stats = EpisodeStats()
        policy = self.actor.numpy_policy()
        # Pipelined and double-buffered: the env groups step in turn; once a group's step t is in,
        # its next actions are chosen and sent first (the workers step them while the learner records
        # step t and handles the other group), then step t is recorded. In process it is the same
        # work in the same order, so the batch does not depend on the worker count.
        T, groups, envs, norm = self.T, self.groups, self.envs, self.obs_norm
        last_obs = np.empty_like(self.obs)
        self._obs[0] = self.obs
        for g, sl in enumerate(groups):
            self._send(policy, 0, g, sl)
        for t in range(T):
            next_row = self._obs[t + 1] if t + 1 < T else last_obs
            for g, sl in enumerate(groups):
                res = envs.step_wait(idle, g)
                norm.update(res.obs)
                next_obs = norm.normalize(res.obs, out=next_row[sl])  # what the policy acts on next
                if t + 1 < T:
                    self._send(policy, t + 1, g, sl)

                done = res.terminated | res.truncated
                self.ep_return[sl] += res.rewards
                self.ep_length[sl] += 1
                self.reward_scaler(res.rewards, done, out=self._rewards[t, sl], envs=sl)
                self._terminated[t, sl] = res.terminated
                self._truncated[t, sl] = res.truncated
                if done.any():
                    ep_return, ep_length = self.ep_return[sl], self.ep_length[sl]
                    stats.returns.extend(ep_return[done].tolist())
                    stats.lengths.extend(ep_length[done].tolist())
                    ep_return[done] = 0.0
                    ep_length[done] = 0
                    norm.normalize(res.final_obs, out=self._next_obs[t, sl])
                else:  # final_obs is obs where no episode ended
                    self._next_obs[t, sl] = next_obs
        self.obs = last_obs

        batch = RolloutBatch(
            obs=torch.tensor(self._obs),
            next_obs=torch.tensor(self._next_obs),
            actions=torch.tensor(self._actions),
            rewards=torch.tensor(self._rewards),
            terminated=torch.tensor(self._terminated),
            truncated=torch.tensor(self._truncated),
        )
        return batch, stats

    def _send(self, policy, t: int, g: int, sl: slice) -> None:
        """Sample actions for group ``g`` on ``self._obs[t, sl]``, record them as step t's, send them."""
        action = policy.sample(self._obs[t, sl], self.rng)
        self._actions[t, sl] = action
        self.envs.step_async(self._env_action(action), g)

    def _env_action(self, action: np.ndarray) -> np.ndarray:
        if not self.continuous:
            return action
        np.maximum(action, self.low, out=action)  # in place: the unclipped action is already in the batch
        return np.minimum(action, self.high, out=action)  # np.clip without its Python wrapper

    def state_dict(self) -> dict:
        """Everything the next :meth:`collect` depends on, taken between collects: the normalisers, the
        action noise's generator, the observation to act on, the episodes in flight and each env's own
        state (:meth:`Envs.get_state`: a str, the reason, for an env that cannot be saved)."""
        return {"obs_norm": self.obs_norm.state_dict(), "reward_scaler": self.reward_scaler.state_dict(),
                "rng": self.rng.bit_generator.state, "obs": self.obs.copy(), "ep_return": self.ep_return.copy(),
                "ep_length": self.ep_length.copy(), "envs": self.envs.get_state()}

    def load_state_dict(self, state: dict) -> str | None:
        """Continue from ``state``. Returns None when the envs continue exactly, else why they could not:
        then every env starts a fresh episode (reset with a seed drawn from the restored generator) and
        the normalisers keep their statistics."""
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.rng.bit_generator.state = state["rng"]
        lost = next((s for s in state["envs"] if isinstance(s, str)), None)
        if lost is None:
            self.envs.set_state(state["envs"])
            self.obs = np.array(state["obs"], np.float32)
            self.ep_return = np.array(state["ep_return"], np.float64)
            self.ep_length = np.array(state["ep_length"], np.int64)
            return None
        self.obs = self.obs_norm.normalize(self.envs.reset(seed=int(self.rng.integers(2**31))))
        self.ep_return[:] = 0.0
        self.ep_length[:] = 0
        self.reward_scaler.ret[:] = 0.0
        return lost
