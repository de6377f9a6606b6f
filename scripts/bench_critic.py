"""Value-fit benchmark: critic optimizers on a fixed set of rollouts, equal steps, held-out error.

    python scripts/bench_critic.py CHECKPOINT [--steps 2000] [--optims arturo adam]

The checkpoint's policy (deterministic env seeds, stochastic actions) collects ``--episodes``
episodes; the regression target of each state is its discounted reward-to-go (rewards scaled by
the run's saved reward statistics, as the critic sees them in training). Only the first
``--horizon`` steps of each episode are used, so the ignored tail beyond the time limit weighs at
most gamma^(T - horizon). Episodes are split into train and held-out sets; every optimizer trains
the same initial network on the same minibatch sequence.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from rl_trust import checkpoint
from rl_trust.config import CriticConfig
from rl_trust.critic import PRESETS, explained_variance, make_optimizer
from rl_trust.envs import make_vec_env
from rl_trust.evaluate import load_policy
from rl_trust.nets import MLP


def collect(path: str, episodes: int, horizon: int, gamma: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    actor, obs_norm, state = load_policy(path)
    cfg = state["config"]
    reward_var = state["collector"]["reward_scaler"]["rms"]["var"]
    scale = 1.0 / np.sqrt(reward_var + 1e-8) if cfg["env"]["normalize_reward"] else 1.0
    envs = make_vec_env(cfg["env"]["id"], episodes, seed=seed)
    torch.manual_seed(seed)
    obs, _ = envs.reset(seed=seed)
    all_obs, rewards = [], []
    with torch.no_grad():
        for _ in range(envs.spec.max_episode_steps if envs.spec else 1000):
            o = obs_norm.normalize(obs)
            action = actor.dist.sample(actor(torch.from_numpy(o))).numpy()
            obs, r, term, trunc, _ = envs.step(np.clip(action, envs.single_action_space.low,
                                                       envs.single_action_space.high))
            all_obs.append(o)
            rewards.append(r * scale)
            if (term | trunc).any():
                break
    envs.close()
    obs_arr, rew = np.stack(all_obs), np.stack(rewards)  # [T, E, D], [T, E]
    ret = np.zeros_like(rew)
    running = np.zeros(rew.shape[1])
    for t in range(len(rew) - 1, -1, -1):
        running = rew[t] + gamma * running
        ret[t] = running
    h = min(horizon, len(rew))
    return torch.tensor(obs_arr[:h], dtype=torch.float32), torch.tensor(ret[:h], dtype=torch.float32)


def fit(name: str, kwargs: dict, net: MLP, data, steps: int, batch: int, seed: int) -> dict:
    (xtr, ytr), (xte, yte) = data
    net = copy.deepcopy(net)
    opt = make_optimizer(CriticConfig(optim=name, optim_kwargs=kwargs), list(net.parameters()))
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(xtr), (batch,), generator=g)

        def closure(idx=idx):
            opt.zero_grad(set_to_none=True)
            loss = 0.5 * (net(xtr[idx]).squeeze(-1) - ytr[idx]).pow(2).mean()
            loss.backward()
            return loss

        opt.step(closure)
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        pred = net(xte).squeeze(-1)
    return {"optim": name, **kwargs, "test_mse": float((pred - yte).pow(2).mean()),
            "test_explained_variance": explained_variance(pred, yte), "time_s": elapsed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--horizon", type=int, default=500)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optims", nargs="+", default=["arturo", "adam"], help=f"presets: {sorted(PRESETS)}")
    p.add_argument("--grid", type=str, default=None,
                   help='JSON list of {"optim": NAME, **kwargs} entries instead of --optims')
    args = p.parse_args()
    for key in ("episodes", "horizon", "steps", "batch"):
        if getattr(args, key) < 1:
            p.error(f"--{key}={getattr(args, key)} must be >= 1")
    if args.episodes < 2:
        p.error("--episodes must be >= 2 (train and held-out episodes)")
    torch.set_num_threads(1)
    gamma = checkpoint.load(args.checkpoint)["config"]["gamma"]
    obs, ret = collect(args.checkpoint, args.episodes, args.horizon, gamma, args.seed)
    split = args.episodes * 3 // 4
    flat = lambda o, r: (o.reshape(-1, o.shape[-1]), r.reshape(-1))
    data = flat(obs[:, :split], ret[:, :split]), flat(obs[:, split:], ret[:, split:])
    cfg = checkpoint.load(args.checkpoint)["config"]["critic"]
    torch.manual_seed(args.seed)
    net = MLP([obs.shape[-1], *cfg["hidden"], 1], cfg["activation"])
    runs = json.loads(args.grid) if args.grid else [{"optim": o} for o in args.optims]
    for run in runs:
        name = run.pop("optim")
        print(json.dumps(fit(name, run, net, data, args.steps, args.batch, args.seed)), flush=True)


if __name__ == "__main__":
    main()
