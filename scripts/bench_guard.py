"""Time the non-finite-update guard (rl_trust/guard.py): snapshot before and check after one update.

    python scripts/bench_guard.py                # HalfCheetah-sized nets, the shipped optimizers

Prints milliseconds per iteration for the policy's guard (actor + updater state) and the critic's
(network + arTuRO state), with the optimizers' state populated by real steps.
"""

from __future__ import annotations

import time

import gymnasium as gym
import torch

from rl_trust.batch import RolloutBatch
from rl_trust.config import CriticConfig, PPOConfig, TRPOConfig
from rl_trust.critic import Critic
from rl_trust.guard import Guard
from rl_trust.policies import Actor, PolicyConfig
from rl_trust.updaters.ppo import PPO
from rl_trust.updaters.trpo import TRPO


def per_call_ms(guard: Guard, repeats: int = 500) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        guard.begin()
        guard.end({"losses/x": 0.0}, 0)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    torch.set_num_threads(1)
    obs_dim, space, n = 17, gym.spaces.Box(-1, 1, (6,)), 1024  # HalfCheetah-v5; the shipped TRPO batch
    actor = Actor(obs_dim, space, PolicyConfig())
    obs = torch.randn(n, 1, obs_dim)
    batch = RolloutBatch(obs=obs, next_obs=obs, actions=torch.randn(n, 1, 6), rewards=torch.randn(n, 1),
                         terminated=torch.zeros(n, 1, dtype=torch.bool), truncated=torch.zeros(n, 1, dtype=torch.bool),
                         values=torch.zeros(n, 1), next_values=torch.zeros(n, 1), advantages=torch.randn(n, 1),
                         returns=torch.randn(n, 1))
    critic = Critic(obs_dim, CriticConfig(), total_updates=10)
    critic.start_update(batch).finish()
    for name, updater in (("trpo", TRPO(actor, TRPOConfig())), ("ppo", PPO(actor, PPOConfig(), total_updates=10))):
        updater.update(batch)
        print(f"{name}: policy guard {per_call_ms(Guard('policy', [actor, updater], '', 10)):.3f} ms/iteration")
    print(f"critic (arturo) guard {per_call_ms(Guard('critic', [critic], '', 10)):.3f} ms/iteration")


if __name__ == "__main__":
    main()
