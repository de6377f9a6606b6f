"""Where the learner's time goes in a sampling-only rollout, per split of the envs between it and one worker.

    python scripts/sampling_splits.py [--env HalfCheetah-v5] [--num-envs 16] [--splits 8:1 6:2 7:2] [--rounds 2]

Each split ``L:G`` (the learner steps L envs, G env groups) runs in its own process (one torch thread, one BLAS
thread): one warm-up collect of 256 steps per env, then 5 timed ones. Printed per env step: the wall time, the
learner's time waiting for the worker, stepping its own envs, and the rest (statistics, policy, recording and the
exchange with the worker). A learner that hardly waits bounds the rate; one that waits long leaves the worker
bounding it. The first line is the in-process baseline (one group).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def child(env_id: str, num_envs: int, learner_envs: int, groups: int) -> str:
    import torch
    from threadpoolctl import threadpool_limits

    from rl_trust.config import PolicyConfig
    from rl_trust.envs import EnvGroup
    from rl_trust.normalization import ObsNormalizer, RewardScaler
    from rl_trust.policies import Actor
    from rl_trust.rollout import Collector
    from rl_trust.workers import ParallelEnvs, make_envs

    torch.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")
    spent = {"wait": 0.0, "local": 0.0}
    wait, step = ParallelEnvs._wait_group, EnvGroup.step

    def timed_wait(self, *args):
        start = time.perf_counter()
        wait(self, *args)
        spent["wait"] += time.perf_counter() - start

    def timed_step(self, *args, **kwargs):
        start = time.perf_counter()
        step(self, *args, **kwargs)
        spent["local"] += time.perf_counter() - start

    ParallelEnvs._wait_group, EnvGroup.step = timed_wait, timed_step
    workers = 0 if learner_envs == num_envs else 1
    envs = make_envs(env_id, num_envs, workers, learner_envs=learner_envs if workers else None, groups=groups)
    actor = Actor(envs.single_observation_space.shape[0], envs.single_action_space,
                  PolicyConfig(hidden=[64, 64], activation="tanh"))
    rollout = Collector(envs, actor, ObsNormalizer(envs.single_observation_space.shape),
                        RewardScaler(num_envs, 0.99), 256, seed=0)
    rollout.collect()
    spent.update(wait=0.0, local=0.0)
    start = time.perf_counter()
    for _ in range(5):
        rollout.collect()
    total, steps = time.perf_counter() - start, 5 * 256
    envs.close()
    us = {k: v / steps * 1e6 for k, v in spent.items()}
    name = "in-process" if not workers else f"learner {learner_envs} envs, {groups} group(s)"
    return (f"{name:32s} {total / steps * 1e6:7.0f} us/step  wait {us['wait']:4.0f}  own envs {us['local']:4.0f}  "
            f"rest {total / steps * 1e6 - us['wait'] - us['local']:4.0f}  {num_envs * steps / total:7.0f} steps/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--splits", nargs="+", default=["8:1", "6:2", "7:2", "8:2"])
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    if args.child:
        print(child(*json.loads(args.child)))
        return
    if args.num_envs < 2 or args.rounds < 1:
        p.error(f"--num-envs={args.num_envs} must be >= 2 and --rounds={args.rounds} >= 1")
    from rl_trust.envs import check_env_id
    from rl_trust.errors import ConfigError

    try:
        check_env_id(args.env)
    except ConfigError as e:
        p.error(f"--env: {e}")
    specs = [(args.env, args.num_envs, args.num_envs, 1)]
    for split in args.splits:
        try:
            learner, groups = (int(x) for x in split.split(":"))
        except ValueError:
            p.error(f"--splits {split!r}: expected LEARNER_ENVS:GROUPS, e.g. 6:2")
        if not (0 <= learner < args.num_envs and 1 <= groups <= args.num_envs):
            p.error(f"--splits {split!r}: learner envs in [0, {args.num_envs - 1}], groups in [1, {args.num_envs}]")
        specs.append((args.env, args.num_envs, learner, groups))
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}")
        for spec in specs:
            cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{spec} failed:\n{out.stderr[-2000:]}")
            print("  " + out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
