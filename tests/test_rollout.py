import gymnasium as gym
import numpy as np
import pytest
import torch

from rl_trust.config import PolicyConfig
from rl_trust.envs import EnvGroup, make_vec_env
from rl_trust.errors import ConfigError
from rl_trust.normalization import ObsNormalizer, RewardScaler
from rl_trust.policies import Actor
from rl_trust.rollout import Collector, env_generators
from rl_trust.workers import InProcessEnvs, ParallelEnvs, StepResult, group_bounds, resolve_learner_envs, split_envs


class CounterEnv(gym.Env):
    """obs = [steps taken in this episode, 100 * episodes started]; terminates on action 1 after step 2."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.t, self.episode = 0, -1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, self.episode + 1
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = bool(action == 1 and self.t >= 3)
        return self._obs(), float(self.t), terminated, False, {}

    def _obs(self):
        return np.array([self.t, 100 * self.episode], np.float32)


gym.register("rl_trust_test/Counter-v0", entry_point=CounterEnv, max_episode_steps=5)


def test_no_fake_transition_across_resets_and_final_obs_kept():
    torch.manual_seed(0)
    envs = InProcessEnvs("rl_trust_test/Counter-v0", 3)
    actor = Actor(2, envs.single_action_space, PolicyConfig(hidden=[8], activation="tanh"))
    worker = Collector(envs, actor, ObsNormalizer((2,), enabled=False), RewardScaler(3, 0.99, enabled=False),
                           steps_per_env=40, seed=0)
    batch, stats = worker.collect()
    obs, nxt = batch.obs.numpy(), batch.next_obs.numpy()
    term, trunc = batch.terminated.numpy(), batch.truncated.numpy()
    assert term.any() and trunc.any()
    done = term | trunc
    # Every transition stays inside one episode and advances its counter by exactly one.
    np.testing.assert_array_equal(nxt[..., 1], obs[..., 1])
    np.testing.assert_array_equal(nxt[..., 0], obs[..., 0] + 1)
    # The reward of every step is the counter it reached: no reward belongs to a reset.
    np.testing.assert_array_equal(batch.rewards.numpy(), nxt[..., 0])
    # Time-limit truncations happen at the limit, and after any end the next step starts a new episode.
    assert np.all(nxt[..., 0][trunc] == 5)
    t_idx, n_idx = np.nonzero(done[:-1])
    np.testing.assert_array_equal(obs[t_idx + 1, n_idx, 0], 0)
    np.testing.assert_array_equal(obs[t_idx + 1, n_idx, 1], obs[t_idx, n_idx, 1] + 100)
    # Episode statistics are raw returns of completed episodes.
    assert len(stats.returns) == int(done.sum())
    assert all(r == length * (length + 1) / 2 for r, length in zip(stats.returns, stats.lengths, strict=True))


def test_box_actions_stored_unclipped():
    torch.manual_seed(0)
    envs = InProcessEnvs("Pendulum-v1", 2)
    # std e^2 > the bound of 2
    actor = Actor(3, envs.single_action_space, PolicyConfig(hidden=[8], activation="tanh", log_std_init=2.0))
    worker = Collector(envs, actor, ObsNormalizer((3,)), RewardScaler(2, 0.99), steps_per_env=50, seed=0)
    batch, _ = worker.collect()
    assert batch.actions.abs().max() > 2.0  # the sample the policy drew, not the env's clipped action


def test_unknown_env_id_is_named():
    with pytest.raises(ConfigError, match="env.id='HalfCheeta-v5'.*HalfCheetah-v5"):
        make_vec_env("HalfCheeta-v5", 1)


def test_unsupported_action_space_is_rejected():
    class TupleEnv(CounterEnv):
        action_space = gym.spaces.MultiBinary(3)

    gym.register("rl_trust_test/Tuple-v0", entry_point=TupleEnv, max_episode_steps=5)
    with pytest.raises(ConfigError, match="action space"):
        make_vec_env("rl_trust_test/Tuple-v0", 1)


def _collect(envs, seed=0, obs_stats="rollout"):
    torch.manual_seed(seed)
    actor = Actor(17, envs.single_action_space, PolicyConfig(hidden=[16], activation="tanh"))
    worker = Collector(envs, actor, ObsNormalizer((17,)), RewardScaler(envs.num_envs, 0.99), steps_per_env=40,
                       seed=seed, obs_stats=obs_stats)
    try:
        return [worker.collect()[0] for _ in range(2)]
    finally:
        envs.close()


@pytest.mark.parametrize("groups, workers, learner_envs", [(1, 2, None), (2, 1, 0), (2, 2, None), (3, 2, 1), (2, 1, 3),
                                                           (5, 1, 0)])
def test_worker_processes_give_the_same_batches_as_in_process(groups, workers, learner_envs):
    # HalfCheetah with a 30-step limit: episodes end inside the rollout, on every slice; groups that
    # straddle the learner's and the workers' slices, and workers with no env in some group.
    kwargs = {"max_episode_steps": 30}
    ref = _collect(InProcessEnvs("HalfCheetah-v5", 5, env_kwargs=kwargs, groups=groups), seed=3)
    par = _collect(ParallelEnvs("HalfCheetah-v5", 5, workers=workers, env_kwargs=kwargs, learner_envs=learner_envs,
                                groups=groups), seed=3)
    assert ref[0].truncated.any()
    for a, b in zip(ref, par, strict=True):
        for name, x in a.flat().items():
            assert torch.equal(x, b.flat()[name]), name


def test_batches_do_not_depend_on_env_groups():
    """rollout.obs_stats=rollout: statistics frozen for the rollout and rewards scaled over every env, so
    env_groups (a speed setting) changes nothing; with per-step statistics it does."""
    kwargs = {"max_episode_steps": 30}
    ref = _collect(InProcessEnvs("HalfCheetah-v5", 5, env_kwargs=kwargs, groups=1), seed=3)
    for groups, workers in [(2, 0), (3, 0), (2, 2)]:
        envs = (InProcessEnvs("HalfCheetah-v5", 5, env_kwargs=kwargs, groups=groups) if workers == 0 else
                ParallelEnvs("HalfCheetah-v5", 5, workers=workers, env_kwargs=kwargs, groups=groups))
        for a, b in zip(ref, _collect(envs, seed=3), strict=True):
            for name, x in a.flat().items():
                assert torch.equal(x, b.flat()[name]), (groups, workers, name)
    one, two = (_collect(InProcessEnvs("HalfCheetah-v5", 5, env_kwargs=kwargs, groups=g), seed=3, obs_stats="step")
                for g in (1, 2))
    assert not torch.equal(one[1].obs, two[1].obs)


@pytest.mark.parametrize("num_envs, groups, workers, learner_envs", [
    (16, 2, 1, 6), (16, 1, 1, 8), (5, 3, 2, 1), (7, 2, 3, 0), (4, 2, 2, 2), (9, 4, 2, 5), (3, 3, 2, 1)])
def test_split_envs_covers_every_env_once_and_shares_fairly(num_envs, groups, workers, learner_envs):
    bounds = group_bounds(num_envs, groups)
    learner, per_worker = split_envs(num_envs, bounds, workers, learner_envs)
    owner = np.full(num_envs, -2)
    for g, (lo, hi) in enumerate(bounds):
        parts = [learner[g]] + [per_worker[w][g] for w in range(workers)]
        assert parts[0][0] == lo and parts[-1][1] == hi  # contiguous, in order, inside the group
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
        for who, (a, b) in enumerate(parts):
            assert (owner[a:b] == -2).all()
            owner[a:b] = who - 1
    assert (owner >= -1).all()
    assert (owner == -1).sum() == learner_envs
    counts = np.bincount(owner[owner >= 0], minlength=workers)
    assert counts.min() >= 1 and counts.max() - counts.min() <= 1
    shares = [hi - lo for lo, hi in learner]  # proportional to the group sizes, within one env
    exact = [learner_envs * (hi - lo) / num_envs for lo, hi in bounds]
    assert all(abs(s - e) < 1 for s, e in zip(shares, exact, strict=True))


def test_learner_envs_auto():
    assert resolve_learner_envs("auto", 16, 1, 2, overlap_critic=True) == 0
    assert resolve_learner_envs("auto", 16, 1, 2, overlap_critic=False) == 6
    assert resolve_learner_envs("auto", 16, 3, 1, overlap_critic=False) == 3
    assert resolve_learner_envs("auto", 2, 1, 2, overlap_critic=False) == 0
    assert resolve_learner_envs(5, 16, 0, 2, overlap_critic=False) == 16  # in process: all of them


def test_dead_worker_is_reported_and_close_leaves_no_process():
    envs = ParallelEnvs("Pendulum-v1", 4, workers=2)
    procs = list(envs.procs)
    envs.reset(seed=0)
    procs[1].kill()
    procs[1].join()
    with pytest.raises(RuntimeError, match="rollout worker 1 .* (died|was killed|exited)"):
        envs.step(np.zeros((4, 1), np.float32))
    envs.close()
    assert not any(p.is_alive() for p in procs)


@pytest.mark.parametrize("env_id, kwargs", [("CartPole-v1", {}), ("rl_trust_test/Counter-v0", {}),
                                            ("HalfCheetah-v5", {"max_episode_steps": 30})])
def test_env_group_steps_exactly_like_gymnasium_same_step_sync_vector_env(env_id, kwargs):
    """EnvGroup (the rollout's lean loop) against gymnasium's SAME_STEP SyncVectorEnv: every array equal,
    through terminations, time-limit truncations and the resets that follow."""
    n = 4
    ref = make_vec_env(env_id, n, **kwargs)
    group = EnvGroup(env_id, n, **kwargs)
    np.testing.assert_array_equal(group.reset(seed=7), ref.reset(seed=7)[0])
    rng = np.random.default_rng(0)
    space = group.single_action_space
    obs, final = (np.zeros((n, *group.single_observation_space.shape), group.single_observation_space.dtype)
                  for _ in range(2))
    rewards, terminated, truncated = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
    ends = 0
    for _ in range(120):
        if isinstance(space, gym.spaces.Discrete):
            actions = rng.integers(0, space.n, n)
        else:
            actions = rng.uniform(space.low, space.high, (n, *space.shape)).astype(space.dtype)
        group.step(actions, obs, final, rewards, terminated, truncated)
        r_obs, r_rew, r_term, r_trunc, infos = ref.step(actions)
        np.testing.assert_array_equal(obs, r_obs)
        np.testing.assert_array_equal(rewards, r_rew)
        np.testing.assert_array_equal(terminated, r_term)
        np.testing.assert_array_equal(truncated, r_trunc)
        done = r_term | r_trunc
        ends += int(done.sum())
        for i in range(n):
            np.testing.assert_array_equal(final[i], infos["final_obs"][i] if done[i] else r_obs[i])
    assert ends > 0, "no episode ended: the reset path went untested"
    group.close()
    ref.close()


def _reference_collect(envs, actor, obs_norm, reward_scaler, raw, rngs, T, ep_return, groups):
    """The rollout written plainly: per step, each env group in turn: act (each env's noise from its own
    generator, one step at a time), step, record (no pipelining); then the observation statistics take the
    rollout's observations in and rewards are scaled, step by step over every env."""
    policy = actor.numpy_policy()
    out = {k: [] for k in ("obs", "next_obs", "actions", "rewards", "terminated", "truncated")}
    returns, reached = [], []
    space = envs.single_action_space
    for _ in range(T):
        obs = obs_norm.normalize(raw)
        row = {k: [] for k in out}
        raw = raw.copy()
        for sl in groups:
            noise = np.stack([policy.noise(rngs[i], ()) for i in range(*sl.indices(envs.num_envs))])
            action = policy.sample(obs[sl], noise)
            actions = np.zeros((envs.num_envs, *action.shape[1:]), action.dtype)
            actions[sl] = action
            # Every env steps (the reference env set is whole); only this group's results are used,
            # so the other group's envs are stepped from a copy that is thrown away.
            res = envs.step_group(np.clip(actions, space.low, space.high) if isinstance(space, gym.spaces.Box)
                                  else actions, sl)
            done = res.terminated | res.truncated
            ep_return[sl] += res.rewards
            returns += ep_return[sl][done].tolist()
            ep_return[sl][done] = 0
            row["obs"].append(obs[sl].copy())
            row["next_obs"].append(obs_norm.normalize(res.final_obs))
            row["actions"].append(action)
            row["rewards"].append(res.rewards)
            row["terminated"].append(res.terminated)
            row["truncated"].append(res.truncated)
            raw[sl] = res.obs
        reached.append(raw)
        for k, v in row.items():
            out[k].append(np.concatenate(v))
    out = {k: np.stack(v) for k, v in out.items()}
    reached = np.stack(reached)  # [T, N, D]
    per_env = [np.ascontiguousarray(reached[:, j]) for j in range(envs.num_envs)]
    obs_norm.update_envs(T, np.stack([x.mean(0) for x in per_env]), np.stack([x.var(0) for x in per_env]))
    done = out["terminated"] | out["truncated"]
    out["rewards"] = np.stack([reward_scaler(r, d) for r, d in zip(out["rewards"], done, strict=True)])
    return out, returns, raw


class _PlainEnvs:
    """The envs of one group stepped directly, one Gymnasium env at a time: the reference's stepping."""

    def __init__(self, env_id, num_envs, kwargs):
        self.envs = [gym.make(env_id, **kwargs) for _ in range(num_envs)]
        self.num_envs, self.single_action_space = num_envs, self.envs[0].action_space

    def reset(self, seed):
        return np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)])

    def step_group(self, actions, sl):
        rows = []
        for i in range(*sl.indices(self.num_envs)):
            o, r, term, trunc, _ = self.envs[i].step(actions[i])
            final = o
            if term or trunc:
                o, _ = self.envs[i].reset()
            rows.append((o, final, r, term, trunc))
        obs, final, r, term, trunc = (np.array(x) for x in zip(*rows, strict=True))
        return StepResult(obs, final, r, term, trunc)

    def close(self):
        for env in self.envs:
            env.close()


@pytest.mark.parametrize("env_id, obs_dim, groups", [("CartPole-v1", 4, 1), ("Pendulum-v1", 3, 1),
                                                     ("CartPole-v1", 4, 2), ("Pendulum-v1", 3, 3)])
def test_pipelined_collect_equals_the_plain_loop(env_id, obs_dim, groups):
    """collect() sends the next actions before recording a step, double-buffering the env groups; the
    batch is the plain loop's, bit for bit."""
    torch.manual_seed(0)
    kwargs = {"max_episode_steps": 25} if env_id == "Pendulum-v1" else {}
    envs = InProcessEnvs(env_id, 3, env_kwargs=kwargs, groups=groups)
    ref_envs = _PlainEnvs(env_id, 3, kwargs)
    actor = Actor(obs_dim, envs.single_action_space, PolicyConfig(hidden=[8], activation="tanh"))
    worker = Collector(envs, actor, ObsNormalizer((obs_dim,)), RewardScaler(3, 0.99), steps_per_env=60, seed=0)
    ref_norm, ref_scaler = ObsNormalizer((obs_dim,)), RewardScaler(3, 0.99)
    ref_obs = ref_envs.reset(seed=0).astype(np.float64)
    ref_norm.update(ref_obs)
    rngs, ep_return = env_generators(0, range(3)), np.zeros(3)
    slices = [slice(lo, hi) for lo, hi in envs.groups]
    assert len(slices) == groups
    for _ in range(2):
        batch, stats = worker.collect()
        ref, ref_returns, ref_obs = _reference_collect(ref_envs, actor, ref_norm, ref_scaler, ref_obs, rngs, 60,
                                                       ep_return, slices)
        assert batch.terminated.any() or batch.truncated.any()
        for key, value in ref.items():
            np.testing.assert_array_equal(getattr(batch, key).numpy(), value, err_msg=key)
        assert stats.returns == ref_returns
        np.testing.assert_array_equal(worker.raw_obs, ref_obs)
    envs.close()
    ref_envs.close()
