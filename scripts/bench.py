"""Throughput: rl_trust against Stable-Baselines3 with identical settings, side by side in one run.

    python scripts/bench.py [--env HalfCheetah-v5] [--num-envs 8] [--steps-per-env 256] [--updates 10]
                            [--rounds 2] [--only trpo ppo sim sampling]

Every measurement runs in its own process (one torch thread, one BLAS thread), the frameworks alternating round by
round so that machine noise hits both; the table gives the median steps/s over rounds, the ratio
rl_trust / SB3 and each process's peak RSS. SB3 rows need `pip install -e .[bench]`
(stable-baselines3 and sb3-contrib); without them only the rl_trust rows are printed.

Identical settings: env and count, steps per env, 64x64 tanh actor and critic, GAE(0.99, 0.95),
observation and reward normalisation on, Adam critic. TRPO: max_kl 0.01, 15 CG iterations, damping
0.1, 10 line-search steps of 0.8, critic 10 epochs of 128-sample minibatches at lr 1e-3. PPO: 10
epochs of 64-sample minibatches, lr 3e-4, clip 0.2 (SB3 updates actor and critic in one loss; rl_trust
runs the same number of actor and critic steps). Also: the raw simulator rate (random actions,
SyncVectorEnv, no policy) and rl_trust's sampling rate (collect() alone) with and without workers (in process: one
env group; with workers: the defaults of training without the critic overlap, two env groups, the learner stepping
an equal share less one env per group).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(spec: dict) -> dict:
    """One measurement, in this process: returns steps/s."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")  # numpy's BLAS too, on both sides (train.run does the same)
    kind, env_id, n, t, updates = spec["kind"], spec["env"], spec["num_envs"], spec["steps_per_env"], spec["updates"]
    total = n * t * updates
    if kind == "sim":
        import gymnasium as gym
        from gymnasium.vector import AutoresetMode

        envs = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync",
                            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
        envs.reset(seed=0)
        envs.action_space.seed(0)
        actions = [envs.action_space.sample() for _ in range(64)]
        start = time.perf_counter()
        for i in range(t * updates):
            envs.step(actions[i % 64])
        return {"sps": total / (time.perf_counter() - start)}
    if kind == "sampling":
        from rl_trust.config import PolicyConfig
        from rl_trust.normalization import ObsNormalizer, RewardScaler
        from rl_trust.policies import Actor
        from rl_trust.rollout import Collector
        from rl_trust.workers import make_envs, resolve_env_groups, resolve_learner_envs

        # In process: one group, the fastest single-process loop. With workers: what training with
        # rollout.overlap_critic=false runs by default (env_groups and learner_envs auto).
        groups = resolve_env_groups("auto", n) if spec["workers"] else 1
        learner_envs = resolve_learner_envs("auto", n, spec["workers"], groups, overlap_critic=False)
        envs = make_envs(env_id, n, spec["workers"], learner_envs=learner_envs, groups=groups)
        actor = Actor(envs.single_observation_space.shape[0], envs.single_action_space,
                      PolicyConfig(hidden=[64, 64], activation="tanh"))
        collector = Collector(envs, actor, ObsNormalizer(envs.single_observation_space.shape),
                              RewardScaler(n, 0.99), t, seed=0)
        collector.collect()  # warm-up
        start = time.perf_counter()
        for _ in range(updates):
            collector.collect()
        sps = total / (time.perf_counter() - start)
        envs.close()
        return {"sps": sps}
    if kind.startswith("rl_trust"):
        from hydra import compose, initialize_config_dir

        from rl_trust.config import register_configs
        from rl_trust.train import run

        register_configs()
        algo = spec["algo"]
        common = [f"algo={algo}", f"env.id={env_id}", f"env.num_envs={n}", f"rollout.steps_per_env={t}",
                  f"total_steps={total}", f"rollout.workers={spec['workers']}", "eval_episodes=1",
                  "checkpoint.every_steps=0", "progress=false", "critic.optim=adam", "critic.lr_anneal=false",
                  "policy.hidden=[64,64]", "critic.hidden=[64,64]", "gamma=0.99", "gae_lambda=0.95",
                  "env.normalize_obs=true", "env.normalize_reward=true"]
        if algo == "trpo":
            common += ["algo.max_kl=0.01", "algo.cg_iters=15", "algo.cg_damping=0.1", "algo.backtrack_coeff=0.8",
                       "algo.max_backtracks=10", "critic.epochs=10", "critic.minibatch_size=128", "critic.lr=1e-3",
                       "critic.max_grad_norm=null"]  # sb3-contrib TRPO does not clip the critic
        else:
            common += ["algo.lr=3e-4", "algo.epochs=10", "algo.minibatch_size=64", "algo.clip_range=0.2",
                       "algo.lr_anneal=false", "critic.epochs=10", "critic.minibatch_size=64", "critic.lr=3e-4",
                       "critic.max_grad_norm=0.5"]
        if env_id != "HalfCheetah-v5":
            common.append("~tuned")  # the default env group's tuned file is HalfCheetah's
        with initialize_config_dir(config_dir=os.path.join(ROOT, "configs"), version_base="1.3"):
            cfg = compose("config", overrides=common)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            result = run(cfg, tmp)
        return {"sps": result["train/sps"]}
    if kind == "sb3":
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecNormalize

        env = VecNormalize(make_vec_env(env_id, n_envs=n, seed=0), gamma=0.99)
        kwargs = dict(n_steps=t, gamma=0.99, gae_lambda=0.95, seed=0, device="cpu", verbose=0,
                      policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64])))
        if spec["algo"] == "trpo":
            from sb3_contrib import TRPO

            model = TRPO("MlpPolicy", env, learning_rate=1e-3, batch_size=128, n_critic_updates=10, cg_max_steps=15,
                         cg_damping=0.1, line_search_shrinking_factor=0.8, line_search_max_iter=10,
                         target_kl=0.01, **kwargs)
        else:
            from stable_baselines3 import PPO

            model = PPO("MlpPolicy", env, learning_rate=3e-4, batch_size=64, n_epochs=10, clip_range=0.2, **kwargs)
        start = time.perf_counter()
        model.learn(total_timesteps=total)
        return {"sps": total / (time.perf_counter() - start)}
    raise ValueError(f"unknown measurement {kind!r}")


def measure(spec: dict) -> dict:
    """Run ``child(spec)`` in a fresh process; add its peak RSS (MiB)."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    # Children of the child (rollout workers) are not in ru_maxrss; workers are small next to the learner.
    return result | {"peak_rss_mib": usage.ru_maxrss / 1024}


def have_sb3() -> bool:
    try:
        import sb3_contrib  # noqa: F401
        import stable_baselines3  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--steps-per-env", type=int, default=256)
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sampling-envs", type=int, default=16)
    p.add_argument("--sampling-repeats", type=int, default=3,
                   help="sampling measurements per round, in-process and with workers alternating (each ~2 s: "
                        "more pairs make the ratio less sensitive to the machine's bursts)")
    p.add_argument("--only", nargs="+", default=["sim", "sampling", "trpo", "ppo"],
                   choices=["sim", "sampling", "trpo", "ppo"])
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    for key in ("num_envs", "steps_per_env", "updates", "rounds", "sampling_envs", "sampling_repeats"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')}={getattr(args, key)} must be >= 1")
    base = dict(env=args.env, num_envs=args.num_envs, steps_per_env=args.steps_per_env, updates=args.updates)
    workers = max(1, min((os.cpu_count() or 2) - 1, args.num_envs - 1))
    rows: dict[str, dict] = {}
    if "sim" in args.only:
        rows["raw simulator (SyncVectorEnv)"] = base | {"kind": "sim"}
    if "sampling" in args.only:
        sbase = base | {"num_envs": args.sampling_envs, "kind": "sampling"}
        rows[f"sampling, {args.sampling_envs} envs, in-process"] = sbase | {"workers": 0}
        rows[f"sampling, {args.sampling_envs} envs, {workers} worker(s)"] = sbase | {"workers": workers}
    sb3 = have_sb3()
    if not sb3:
        print("stable-baselines3 / sb3-contrib not installed: rl_trust rows only (pip install -e .[bench])")
    for algo in ("trpo", "ppo"):
        if algo not in args.only:
            continue
        rows[f"{algo} rl_trust (in-process)"] = base | {"kind": "rl_trust", "algo": algo, "workers": 0}
        rows[f"{algo} rl_trust ({workers} worker(s))"] = base | {"kind": "rl_trust", "algo": algo, "workers": workers}
        if sb3:
            rows[f"{algo} SB3"] = base | {"kind": "sb3", "algo": algo}
    results: dict[str, list[dict]] = {k: [] for k in rows}
    sampling = [name for name in rows if name.startswith("sampling")]
    for r in range(args.rounds):
        for name in rows:
            if name in sampling[1:]:
                continue  # measured with the first sampling row: in-process, workers, in-process, ...
            together, repeats = (sampling, args.sampling_repeats) if name in sampling else ([name], 1)
            for _ in range(repeats):
                for each in together:
                    results[each].append(measure(rows[each]))
                    print(f"round {r + 1}/{args.rounds}  {each}: {results[each][-1]['sps']:.0f} steps/s",
                          file=sys.stderr)
    print(f"\n{args.env}, {args.num_envs} envs x {args.steps_per_env} steps, {args.updates} updates, "
          f"median of {args.rounds} rounds ({args.rounds * args.sampling_repeats} measurements for the sampling "
          f"rows), 1 torch thread, {os.cpu_count()} CPUs")
    print(f"{'measurement':45s} {'steps/s':>9s} {'peak RSS MiB':>13s}")
    med = {}
    for name, res in results.items():
        med[name] = statistics.median(x["sps"] for x in res)
        rss = max(x["peak_rss_mib"] for x in res)
        print(f"{name:45s} {med[name]:9.0f} {rss:13.0f}")
    print()
    for algo in ("trpo", "ppo"):
        if f"{algo} SB3" in med:
            for mode in ("in-process", f"{workers} worker(s)"):
                print(f"{algo}: rl_trust ({mode}) / SB3 = {med[f'{algo} rl_trust ({mode})'] / med[f'{algo} SB3']:.2f}x")
    sim = med.get("raw simulator (SyncVectorEnv)")
    if sim:
        for name in med:
            if name.startswith("trpo rl_trust"):
                print(f"{name} / raw simulator = {med[name] / sim:.2f}")
    keys = [k for k in med if k.startswith("sampling")]
    if len(keys) == 2:
        pairs = [b["sps"] / a["sps"] for a, b in zip(results[keys[0]], results[keys[1]], strict=True)]
        print(f"sampling: {keys[1].split(', ')[-1]} / in-process = {med[keys[1]] / med[keys[0]]:.2f}x "
              f"(per pair: {', '.join(f'{x:.2f}' for x in pairs)})")


if __name__ == "__main__":
    main()
