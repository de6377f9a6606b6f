"""rollout.backend=ray: actors running whole segments give the local backend's batches, whatever their
count, and checkpoints move between the backends (tests/test_ray_training.py: whole runs)."""

import logging
import os
import subprocess

import numpy as np
import pytest
import ray
import torch

from rl_trust.config import PolicyConfig
from rl_trust.normalization import ObsNormalizer, RewardScaler
from rl_trust.policies import Actor
from rl_trust.ray_sampler import RaySampler
from rl_trust.rollout import Collector
from rl_trust.workers import InProcessEnvs

FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated", "truncated")


def ray_processes() -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in ps if "raylet" in line or "gcs_server" in line]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the sampler-level tests (a RaySampler uses a Ray that is already up, and leaves it up)."""
    assert not ray_processes(), "a Ray instance is already running"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=3, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()
    assert not ray_processes()


def _samplers(env_id, num_envs, actors, seed=3, steps=40):
    """A local Collector (two env groups) and a RaySampler with ``actors`` actors on the same actor and seed."""
    kwargs = {"max_episode_steps": 30}  # episodes end inside the rollout, on every actor
    local_envs = InProcessEnvs(env_id, num_envs, kwargs, groups=2)
    space, shape = local_envs.single_action_space, local_envs.single_observation_space.shape
    torch.manual_seed(0)
    policy = PolicyConfig(hidden=[8])
    actor = Actor(shape[0], space, policy)
    local = Collector(local_envs, actor, ObsNormalizer(shape), RewardScaler(num_envs, 0.99), steps, seed=seed)
    remote = RaySampler(env_id, kwargs, num_envs, actors, steps, seed, actor, policy, ObsNormalizer(shape),
                        RewardScaler(num_envs, 0.99))
    return actor, local, remote


def _assert_same(a, b):
    (batch_a, ep_a), (batch_b, ep_b) = a, b
    for name in FIELDS:
        assert torch.equal(getattr(batch_a, name), getattr(batch_b, name)), name
    assert ep_a.returns == ep_b.returns and ep_a.lengths == ep_b.lengths


def _nudge(actor):
    with torch.no_grad():  # a policy update between rollouts: the actors must act with the new weights
        for p in actor.parameters():
            p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("env_id, num_envs, actors", [("Pendulum-v1", 5, 1), ("Pendulum-v1", 5, 2),
                                                      ("Pendulum-v1", 5, 3), ("CartPole-v1", 4, 2)])
def test_ray_batches_equal_the_local_backends(local_ray, env_id, num_envs, actors):
    actor, local, remote = _samplers(env_id, num_envs, actors)
    try:
        for _ in range(3):
            a, b = local.collect(), remote.collect()
            assert a[0].truncated.any()
            _assert_same(a, b)
            _nudge(actor)
        for key in ("mean", "var", "count"):  # the statistics merged from the actors' moments: the same bits
            np.testing.assert_array_equal(local.obs_norm.rms.state_dict()[key], remote.obs_norm.rms.state_dict()[key])
        np.testing.assert_array_equal(local.reward_scaler.ret, remote.reward_scaler.ret)
        ls, rs = local.state_dict(), remote.state_dict()
        for key in ("obs", "ep_return", "ep_length"):
            np.testing.assert_array_equal(ls[key], rs[key])
        assert ls["rngs"] == rs["rngs"]
        assert remote.metrics() == {"rollout/actor_restarts": 0.0}
    finally:
        local.close()
        remote.close()


def test_one_and_two_actors_give_identical_batches(local_ray):
    actor1, _, one = _samplers("Pendulum-v1", 6, 1)
    actor2, _, two = _samplers("Pendulum-v1", 6, 2)
    try:
        for _ in range(3):
            _assert_same(one.collect(), two.collect())
            _nudge(actor1)
            actor2.load_state_dict(actor1.state_dict())
    finally:
        one.close()
        two.close()


def test_checkpoints_move_between_backends(local_ray):
    """A Ray sampler's state continues in a local collector exactly, and a local one's on Ray."""
    actor, local, remote = _samplers("Pendulum-v1", 5, 2)
    try:
        remote.collect()
        local.load_state_dict(remote.state_dict())
        _assert_same(local.collect(), remote.collect())
        local.collect()
        assert remote.load_state_dict(local.state_dict()) is None
        _assert_same(local.collect(), remote.collect())
    finally:
        local.close()
        remote.close()
