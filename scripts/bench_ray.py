"""Sampling on Ray against the shared-memory backend, and the cost model that predicts Ray's speed-up.

    python scripts/bench_ray.py [--env HalfCheetah-v5] [--num-envs 16] [--steps 128 512] [--actors 1 2]
                                [--rounds 3] [--out docs/bench_ray.json]

Sampling only (no updates): per batch shape (num_envs x steps per env) the local backend with one
shared-memory worker (rollout.workers=1, the training default on two cores) and Ray with each actor
count collect in turn, ``rounds`` times after a warm-up; printed: env steps per second (median).

The cost model, from parts measured here: a rollout on N actors (one per machine) takes

    t(N) = T * c_step(E / N) + c_call + c_put(w) + (c_get(b) + c_merge(b)) * E * T

with T steps per env, E envs, c_step(n) the time one process takes per step of n envs (simulator and
policy, measured in process), c_call an empty actor call's round trip, c_put(w) the weight broadcast (w
bytes put and fetched), c_get(b) and c_merge(b) per env step the learner's fetch of the segments (b
bytes per env step) and their join into a batch. The learner fetches segments one after another, so
that term does not shrink with N. The predicted speed-up over one actor is t(1) / t(N); Ray beats the
in-process rollout (time T * c_step(E)) once the per-rollout overhead is below what the actors save.
Checked against the measured local 1- and 2-actor runs (the machine has two cores: the second actor
shares them with the learner).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--steps", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    import ray
    import torch
    from threadpoolctl import threadpool_limits

    from rl_trust.cli import one_torch_thread
    from rl_trust.config import PolicyConfig
    from rl_trust.normalization import ObsNormalizer, RewardScaler
    from rl_trust.policies import Actor
    from rl_trust.ray_sampler import RaySampler
    from rl_trust.rollout import Collector, concat_segments, finish
    from rl_trust.workers import InProcessEnvs, make_envs

    one_torch_thread()
    threadpool_limits(limits=1, user_api="blas")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Logical CPUs for every sampler's actors at once (they take turns; the machine's cores are shared).
    ray.init(num_cpus=sum(args.actors) + 1, include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    E = args.num_envs
    probe = InProcessEnvs(args.env, 1)
    obs_shape, space = probe.single_observation_space.shape, probe.single_action_space
    probe.close()
    policy = PolicyConfig()
    torch.manual_seed(0)
    actor = Actor(obs_shape[0], space, policy)
    results: dict = {"env": args.env, "num_envs": E, "machine_cores": os.cpu_count(), "rates": {}, "model": {}}

    def rate(sampler, T: int) -> float:
        start = time.perf_counter()
        sampler.collect()
        return E * T / (time.perf_counter() - start)

    for T in args.steps:
        samplers = {"local, 1 shm worker": Collector(make_envs(args.env, E, 1), actor, ObsNormalizer(obs_shape),
                                                    RewardScaler(E, 0.99), T, seed=0)}
        for n in args.actors:
            samplers[f"ray, {n} actor{'s' if n > 1 else ''}"] = RaySampler(
                args.env, {}, E, n, T, 0, actor, policy, ObsNormalizer(obs_shape), RewardScaler(E, 0.99))
        figures = {name: [] for name in samplers}
        for s in samplers.values():
            s.collect()  # warm-up
        for _ in range(args.rounds):
            for name, s in samplers.items():
                figures[name].append(rate(s, T))
        for s in samplers.values():
            s.close()
        results["rates"][str(T)] = {name: statistics.median(v) for name, v in figures.items()}
        print(f"E={E} T={T}: " + "; ".join(f"{name} {statistics.median(v):,.0f} steps/s"
                                            for name, v in figures.items()), flush=True)

    # The model's parts.
    model = results["model"]
    T = max(args.steps)
    c_step = {}
    for n in sorted({max(1, E // k) for k in (1, 2, 4, 8, 16)} | {E}):
        local = Collector(InProcessEnvs(args.env, n), actor, ObsNormalizer(obs_shape), RewardScaler(n, 0.99), T, 0)
        local.collect()
        start = time.perf_counter()
        local.collect()
        c_step[n] = (time.perf_counter() - start) / T
        local.close()
    model["c_step_s"] = {str(n): v for n, v in c_step.items()}

    @ray.remote(num_cpus=1)
    class Echo:
        def call(self, x=None):
            return None

        def fetch(self, weights):
            return None

        def segment(self, nbytes: int):
            return np.zeros(nbytes, np.uint8)

    echo = Echo.remote()
    ray.get(echo.call.remote())

    def median_s(fn, reps: int = 30) -> float:
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    weights = {k: v.detach().numpy() for k, v in actor.state_dict().items()}
    model["weights_bytes"] = sum(v.nbytes for v in weights.values())
    model["c_call_s"] = median_s(lambda: ray.get(echo.call.remote()))
    model["c_put_s"] = median_s(lambda: ray.get(echo.fetch.remote(ray.put(weights)))) - model["c_call_s"]
    # A segment's bytes per env step: obs, next_obs (float32), actions, rewards (float64), flags, episode records.
    act = int(np.prod(space.shape)) if space.shape else 1
    per_step = 4 * 2 * obs_shape[0] + 4 * act + 8 + 2 + 16
    model["segment_bytes_per_env_step"] = per_step
    big = E * T * per_step
    model["c_get_s_per_env_step"] = max(0.0, median_s(lambda: ray.get(echo.segment.remote(big)), 10)
                                        - model["c_call_s"]) / (E * T)
    seg_actor = Collector(InProcessEnvs(args.env, E), actor, ObsNormalizer(obs_shape), RewardScaler(E, 0.99), T, 0)
    seg = seg_actor.segment()
    halves = [dataclass_slice(seg, 0, E // 2), dataclass_slice(seg, E // 2, E)]
    model["c_merge_s_per_env_step"] = median_s(
        lambda: finish(concat_segments(halves), ObsNormalizer(obs_shape), RewardScaler(E, 0.99)), 10) / (E * T)
    seg_actor.close()

    def predict(n: int, T: int) -> float:
        per_env_step = model["c_get_s_per_env_step"] + model["c_merge_s_per_env_step"]
        n_envs = max(1, E // n)
        step = c_step.get(n_envs) or np.interp(n_envs, sorted(c_step), [c_step[k] for k in sorted(c_step)])
        return T * step + model["c_call_s"] + model["c_put_s"] + per_env_step * E * T

    model["predicted_rate"] = {str(T): {str(n): E * T / predict(n, T) for n in (1, 2, 4, 8, 16) if n <= E}
                               for T in args.steps}
    overhead_per_rollout = model["c_call_s"] + model["c_put_s"]
    per_env_step = model["c_get_s_per_env_step"] + model["c_merge_s_per_env_step"]
    # With N machines the rollout saves T * (c_step(E) - c_step(E / N)); it costs the overheads above.
    model["pays_off_at_steps_per_env"] = {
        str(n): overhead_per_rollout / max(1e-12, c_step[E] - c_step.get(max(1, E // n), c_step[E]) - per_env_step * E)
        for n in (2, 4, 8, 16) if n <= E and max(1, E // n) in c_step}
    print(json.dumps(model, indent=2))
    ray.shutdown()
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def dataclass_slice(seg, lo: int, hi: int):
    """Envs ``lo:hi`` of a segment (as an actor holding them would return it)."""
    import dataclasses

    return dataclasses.replace(seg, **{f.name: (None if getattr(seg, f.name) is None else
                                                (getattr(seg, f.name)[lo:hi] if f.name.startswith("obs_")
                                                 else getattr(seg, f.name)[:, lo:hi]))
                                       for f in dataclasses.fields(seg)})


if __name__ == "__main__":
    raise SystemExit(main())
