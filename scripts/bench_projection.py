"""The projection updater's cost per update against PPO-clip's, side by side in one run.

    python scripts/bench_projection.py [--obs-dim 17] [--act-dim 6] [--batch 2048] [--rounds 5]

The same batch (HalfCheetah's shapes by default: 17-dim observations, 6-dim actions, 2048 samples,
64x64 tanh actor) and the updaters' defaults (10 epochs of 64-sample minibatches, Adam); one torch
thread. The updaters take turns round by round; printed: the median seconds per update and the
ratio to PPO-clip's.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--act-dim", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    import gymnasium as gym
    import torch
    from threadpoolctl import threadpool_limits

    from rl_trust.batch import RolloutBatch
    from rl_trust.cli import one_torch_thread
    from rl_trust.config import PolicyConfig, PPOConfig, ProjectionConfig
    from rl_trust.policies import Actor
    from rl_trust.updaters.ppo import PPO
    from rl_trust.updaters.projection import PROJECTIONS, Projection

    one_torch_thread()
    threadpool_limits(limits=1, user_api="blas")
    space = gym.spaces.Box(-1, 1, (args.act_dim,))
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(args.batch, 1, args.obs_dim, generator=g)
    zeros = torch.zeros(args.batch, 1)

    def make(name: str):
        torch.manual_seed(0)
        actor = Actor(args.obs_dim, space, PolicyConfig())
        updater = (PPO(actor, PPOConfig(), total_updates=100) if name == "ppo" else
                   Projection(actor, ProjectionConfig(projection=name), total_updates=100))
        with torch.no_grad():
            actions = actor(obs)[0] + torch.randn(args.batch, 1, args.act_dim, generator=g)
        batch = RolloutBatch(obs=obs, next_obs=obs, actions=actions, rewards=zeros, terminated=zeros.bool(),
                             truncated=zeros.bool()).replace(advantages=torch.randn(args.batch, 1, generator=g),
                                                              returns=zeros)
        return updater, batch

    runs = {name: make(name) for name in ("ppo", *PROJECTIONS)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for updater, batch in runs.values():
        updater.update(batch)  # warm-up
    for _ in range(args.rounds):
        for name, (updater, batch) in runs.items():
            start = time.perf_counter()
            updater.update(batch)
            times[name].append(time.perf_counter() - start)
    ppo = statistics.median(times["ppo"])
    print(f"batch {args.batch}, obs {args.obs_dim}, actions {args.act_dim}, 10 epochs x 64-sample minibatches")
    for name, values in times.items():
        median = statistics.median(values)
        label = "PPO-clip" if name == "ppo" else f"projection ({name})"
        print(f"  {label:<24} {median:.3f} s per update   x{median / ppo:.2f} PPO-clip's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
