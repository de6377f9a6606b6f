"""The learner's own work per env step of a rollout, with envs that cost nothing.

    python scripts/bench_learner_step.py [--num-envs 16] [--groups 2] [--obs-dim 17] [--act-dim 6] [--repeats 7]

``Collector.collect()`` over envs that return preset arrays (HalfCheetah-sized by default): what is left
is what the learner does per step whatever the simulator costs: observation statistics and
normalisation, reward scaling, the numpy policy query and sampling, recording into the batch. Prints
the median and spread of µs per step (one step = every env group stepped once) over ``--repeats``
collects of 1000 steps, one torch thread and one BLAS thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from rl_trust.config import PolicyConfig
from rl_trust.normalization import ObsNormalizer, RewardScaler
from rl_trust.policies import Actor
from rl_trust.rollout import Collector
from rl_trust.workers import StepResult, group_bounds


class FreeEnvs:
    """The ``Envs`` protocol over preset arrays: a time-limit truncation every 1000 steps per env."""

    def __init__(self, num_envs: int, groups: int, obs_dim: int, act_dim: int):
        self.num_envs, self.groups = num_envs, group_bounds(num_envs, groups)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float64)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
        self.obs = np.random.default_rng(0).standard_normal((num_envs, obs_dim))
        self.steps = 0

    def reset(self, seed: int | None) -> np.ndarray:
        return self.obs.copy()

    def step_async(self, actions: np.ndarray, group: int | None = None) -> None:
        pass

    def step_wait(self, idle=None, group: int | None = None) -> StepResult:
        lo, hi = self.groups[group]
        self.steps += group == 0
        n = hi - lo
        truncated = np.full(n, self.steps % 1000 == 0)
        return StepResult(self.obs[lo:hi].copy(), self.obs[lo:hi].copy(), np.ones(n), np.zeros(n, bool), truncated)

    def close(self) -> None:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--obs-dim", type=int, default=17)
    p.add_argument("--act-dim", type=int, default=6)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    for key in ("num_envs", "groups", "obs_dim", "act_dim", "repeats"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')}={getattr(args, key)} must be >= 1")
    if args.groups > args.num_envs:
        p.error(f"--groups={args.groups} must be at most --num-envs={args.num_envs}")
    torch.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")
    envs = FreeEnvs(args.num_envs, args.groups, args.obs_dim, args.act_dim)
    actor = Actor(args.obs_dim, envs.single_action_space, PolicyConfig(hidden=[64, 64], activation="tanh"))
    collector = Collector(envs, actor, ObsNormalizer((args.obs_dim,)), RewardScaler(args.num_envs, 0.99), 1000, seed=0)
    collector.collect()  # warm-up
    per_step = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        collector.collect()
        per_step.append((time.perf_counter() - start) / 1000 * 1e6)
    print(f"learner per step, {args.num_envs} envs in {args.groups} group(s), obs {args.obs_dim}, act {args.act_dim}: "
          f"median {statistics.median(per_step):.1f} us (min {min(per_step):.1f}, max {max(per_step):.1f}, "
          f"{args.repeats} collects of 1000 steps)")


if __name__ == "__main__":
    main()
