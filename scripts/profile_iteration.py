"""Where one training iteration's time goes, per phase (cProfile cumulative times, averaged).

    python scripts/profile_iteration.py --algo trpo [--num-envs 8] [--steps-per-env 256] [--iterations 5]

Runs ``--iterations`` updates (after one warm-up update) of the bench settings used by
scripts/bench.py, in-process (rollout.workers=0), one torch thread, and prints milliseconds per
iteration for: env stepping, policy forward + sampling, observation/reward normalisation, GAE,
critic evaluate, the policy update (for TRPO split into surrogate gradient, CG with Fisher-vector
products, line search) and the critic update.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import os
import pstats
import tempfile

import torch
from hydra import compose, initialize_config_dir

from rl_trust.config import register_configs
from rl_trust.train import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def phases() -> list[tuple[str, object]]:
    from rl_trust import advantages, critic, envs, nets, normalization, policies, rollout, train
    from rl_trust.updaters import ppo, trpo, trust_region

    return [
        ("rollout: total collect()", rollout.Collector.collect),
        ("rollout: env step", envs.EnvGroup.step),
        ("rollout: policy query (numpy)", policies.NumpyPolicy.sample),
        ("policy forward, torch (update and final evaluation)", policies.Actor.forward),
        ("rollout: obs statistics update", normalization.ObsNormalizer.update),
        ("rollout: obs normalise", normalization.ObsNormalizer.normalize),
        ("rollout: reward scaling", normalization.RewardScaler.__call__),
        ("critic evaluate (V(obs), V(next_obs))", critic.Critic.evaluate),
        ("GAE", advantages.gae),
        ("policy update: total", trpo.TRPO.update),
        ("policy update: total", ppo.PPO.update),
        ("  TRPO: conjugate gradient (incl. FVPs)", trust_region.cg_solve),
        ("  TRPO: forward-mode products in the FVPs", nets.MLP.jvp),
        ("  TRPO: line search", trust_region.backtracking_line_search),
        ("critic update", critic.CriticUpdate.finish),
        ("whole run (incl. the final evaluation)", train.run),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", choices=["trpo", "ppo"], default="trpo")
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--steps-per-env", type=int, default=256)
    p.add_argument("--iterations", type=int, default=5)
    args = p.parse_args()
    if min(args.num_envs, args.steps_per_env, args.iterations) < 1:
        p.error("counts must be >= 1")
    torch.set_num_threads(1)
    register_configs()
    n, t = args.num_envs, args.steps_per_env
    iters = args.iterations + 1
    overrides = [f"algo={args.algo}", f"env.id={args.env}", f"env.num_envs={n}", f"rollout.steps_per_env={t}",
                 f"total_steps={n * t * iters}", "rollout.workers=0", "eval_episodes=1", "checkpoint.every_steps=0",
                 "progress=false", "critic.optim=adam", "critic.epochs=10"]
    if args.algo == "trpo":
        overrides += ["algo.cg_iters=15", "critic.minibatch_size=128", "critic.max_grad_norm=null"]
    else:
        overrides += ["algo.epochs=10", "algo.minibatch_size=64", "critic.minibatch_size=64", "critic.lr=3e-4"]
    if args.env != "HalfCheetah-v5":
        overrides.append("~tuned")  # the default env group's tuned file is HalfCheetah's
    with initialize_config_dir(config_dir=os.path.join(ROOT, "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    prof = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        prof.runcall(run, cfg, tmp)
    stats = pstats.Stats(prof).stats
    print(f"{args.algo}, {args.env}, {n} envs x {t} steps ({n * t} samples/iteration), "
          f"ms per iteration over {iters} iterations (first one included; cProfile adds overhead)")
    for label, fn in phases():
        code = inspect.unwrap(fn).__code__  # the function itself, not a decorator's shared wrapper
        key = (code.co_filename, code.co_firstlineno, code.co_name)
        if key in stats:
            print(f"  {label:42s} {1000 * stats[key][3] / iters:8.1f}")


if __name__ == "__main__":
    main()
