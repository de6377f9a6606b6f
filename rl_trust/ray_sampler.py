"""Rollouts on Ray (``rollout.backend=ray``): actors that each run a whole segment of every rollout.

The learner sends the policy's weights once per rollout (``ray.put``) with the observation statistics,
each actor steps its contiguous slice of the envs for ``steps_per_env`` steps with its own
:class:`~rl_trust.rollout.Collector` (in numpy, statistics frozen) and returns the segment in one
object; the learner joins the segments in env order and finishes them as one (the statistics take
each env's moments in, rewards are scaled step by step: :func:`~rl_trust.rollout.finish`). A per-step
remote call would cost far more than a simulator step, hence segments. Envs are seeded and their
action noise drawn by global env index, so the batches are those of the local backend with the same
seed, whatever the actor count (tests/test_ray_sampler.py).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable

import numpy as np
import torch

from rl_trust.batch import RolloutBatch
from rl_trust.config import PolicyConfig
from rl_trust.errors import ConfigError, WorkerError
from rl_trust.normalization import ObsNormalizer, RewardScaler
from rl_trust.policies import Actor
from rl_trust.rollout import Collector, EpisodeStats, Segment, concat_segments, finish
from rl_trust.workers import InProcessEnvs, group_bounds

_START_S = 120.0  # an actor imports torch and the simulator and makes its envs: minutes on a loaded machine


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("rollout.backend=ray needs Ray: pip install -e .[cluster]") from None
    return ray


class RolloutActor:
    """One Ray actor's part of the run: envs ``first_env .. first_env + num_envs - 1`` and a collector.

    A plain class, made remote by :class:`RaySampler`; after a restart (``ray.max_restarts``) Ray runs
    ``__init__`` again and the envs start fresh episodes from fresh seeds."""

    def __init__(self, env_id: str, env_kwargs: dict, first_env: int, num_envs: int, steps_per_env: int,
                 seed: int | None, policy: PolicyConfig, normalize_obs: bool, obs_clip: float):
        import ray
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(1)
        self._blas = threadpool_limits(limits=1, user_api="blas")  # the per-step products are small
        self.fresh = True  # until its first segment: the learner counts restarts by it
        if ray.get_runtime_context().was_current_actor_reconstructed:
            seed = None  # not the first incarnation's episodes again
        envs = InProcessEnvs(env_id, num_envs, env_kwargs, first_env=first_env)
        obs_shape = envs.single_observation_space.shape
        self.actor = Actor(obs_shape[0], envs.single_action_space, policy)
        self.obs_norm = ObsNormalizer(obs_shape, enabled=normalize_obs, clip=obs_clip)
        # Rewards are scaled by the learner (over every env, step by step); this one is never applied.
        self.collector = Collector(envs, self.actor, self.obs_norm, RewardScaler(num_envs, 1.0, enabled=False),
                                   steps_per_env, seed, first_env=first_env)

    def start(self) -> tuple[str, np.ndarray]:
        """The node this actor runs on and its envs' reset observations (raw)."""
        import ray

        return ray.util.get_node_ip_address(), self.collector.raw_obs

    def segment(self, weights: dict[str, np.ndarray], obs_stats: dict) -> tuple[Segment, bool]:
        """One segment with ``weights`` (the actor's state dict as numpy) and the statistics ``obs_stats``,
        and whether this incarnation of the actor is new (its first segment)."""
        self.actor.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
        self.obs_norm.load_state_dict(obs_stats)
        fresh, self.fresh = self.fresh, False
        return self.collector.segment(), fresh

    def get_state(self) -> dict:
        return self.collector.env_state_dict()

    def set_state(self, state: dict) -> str | None:
        return self.collector.load_env_state_dict(state)

    def close(self) -> None:
        self.collector.envs.close()


class RaySampler:
    """The :class:`~rl_trust.rollout.Collector` interface (``collect``, ``obs_norm``, ``state_dict``,
    ``metrics``, ``close``) over ``actors`` Ray actors (see the module docstring).

    ``address``: None starts a local Ray instance for the run (stopped by :meth:`close`); ``auto`` or an
    address joins an existing cluster. A Ray already initialised in this process (a Ray sweep's trial)
    is used as it is. ``timeout_s``: an actor that has not returned its segment for this long ends the run.
    """

    def __init__(self, env_id: str, env_kwargs: dict, num_envs: int, actors: int | str, steps_per_env: int,
                 seed: int | None, actor: Actor, policy: PolicyConfig, obs_norm: ObsNormalizer,
                 reward_scaler: RewardScaler, *, address: str | None = None, num_cpus_per_actor: float = 1.0,
                 max_restarts: int = 0, timeout_s: float = 60.0):
        ray = self.ray = import_ray()
        self.actor, self.obs_norm, self.reward_scaler = actor, obs_norm, reward_scaler
        self.timeout_s, self.max_restarts = timeout_s, max_restarts
        self.num_envs, self.restarts = num_envs, 0
        self._own_ray = False
        self.handles: list = []
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kwargs = {"logging_level": logging.ERROR, "log_to_driver": False}
            if address is None:  # enough CPUs for every actor, if need be more than the machine has
                asked = 0 if actors == "auto" else math.ceil(actors * num_cpus_per_actor)
                cpus = max(os.cpu_count() or 1, asked)
                kwargs |= {"num_cpus": cpus, "include_dashboard": False}
            if address not in (None, "auto"):
                _check_reachable(address)
            try:
                ray.init(address=address, **kwargs)
            except Exception as e:  # ConnectionError, ValueError: no cluster there
                raise ConfigError(f"ray.address={address}: Ray cannot start or connect "
                                  f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
            self._own_ray = True
        try:
            if actors == "auto":  # one per CPU free now (other runs may share the cluster), less the learner's
                cpus = ray.available_resources().get("CPU", 1) - (1 if self._own_ray else 0)
                actors = max(1, min(num_envs, int(cpus // num_cpus_per_actor)))
            self._start(env_id, env_kwargs, actors, steps_per_env, seed, policy, num_cpus_per_actor)
        except BaseException:
            self.close()
            raise

    def _start(self, env_id, env_kwargs, actors, steps_per_env, seed, policy, num_cpus_per_actor) -> None:
        ray = self.ray
        remote = ray.remote(num_cpus=num_cpus_per_actor, max_restarts=self.max_restarts)(RolloutActor)
        self.bounds = group_bounds(self.num_envs, actors)
        self.handles = [remote.remote(env_id, env_kwargs, lo, hi - lo, steps_per_env, seed, policy,
                                      self.obs_norm.enabled, self.obs_norm.clip) for lo, hi in self.bounds]
        refs = [h.start.remote() for h in self.handles]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=max(self.timeout_s, _START_S))
        if len(ready) < len(refs):
            k = next(k for k, r in enumerate(refs) if r not in ready)
            cpus = ray.cluster_resources().get("CPU", 0)
            raise WorkerError(f"rollout actor {k} did not start within {max(self.timeout_s, _START_S):.0f} s "
                              f"({actors} actors x ray.num_cpus_per_actor={num_cpus_per_actor} CPUs asked of a "
                              f"cluster with {cpus:g})")
        self.nodes, reset = [], []
        for k, ref in enumerate(refs):
            node, raw = self._get(k, ref)
            self.nodes.append(node)
            reset.append(raw)
        self.obs_norm.update(np.concatenate(reset))  # the reset observations, as one process takes them
        self._started = [False] * len(self.handles)  # which actors have returned a segment

    def _where(self, k: int) -> str:
        lo, hi = self.bounds[k]
        node = self.nodes[k] if k < len(getattr(self, "nodes", [])) else "unknown"
        return f"rollout actor {k} (envs {lo}-{hi - 1}, node {node})"

    def _get(self, k: int, ref):
        """``ray.get(ref)`` for actor ``k``, its failure as one WorkerError line."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            raise self._error(k, e) from None

    def _error(self, k: int, e: BaseException) -> WorkerError:
        if isinstance(e, self.ray.exceptions.RayActorError):
            return WorkerError(f"{self._where(k)} died: {_first_line(e)}", str(e))
        if isinstance(e, self.ray.exceptions.RayTaskError):
            cause = e.cause if getattr(e, "cause", None) is not None else e
            return WorkerError(f"{self._where(k)} failed: {type(cause).__name__}: {_first_line(cause)}", str(e))
        return WorkerError(f"{self._where(k)}: Ray failed ({type(e).__name__}: {_first_line(e)})", str(e))

    def collect(self, idle: Callable[[], bool] | None = None) -> tuple[RolloutBatch, EpisodeStats]:
        """One rollout over every actor; ``idle`` (see :meth:`Collector.collect`) runs while they step."""
        ray = self.ray
        try:
            weights = ray.put({k: v.detach().cpu().numpy() for k, v in self.actor.state_dict().items()})
        except ray.exceptions.RayError as e:  # the object store full, the local raylet gone
            raise WorkerError(f"Ray cannot take the policy's weights ({type(e).__name__}: {_first_line(e)})",
                              str(e)) from None
        stats = self.obs_norm.state_dict()
        pending = {self.handles[k].segment.remote(weights, stats): k for k in range(len(self.handles))}
        segments: list[Segment | None] = [None] * len(self.handles)
        waited = {k: time.perf_counter() for k in pending.values()}
        limit = dict.fromkeys(pending.values(), self.timeout_s)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0 if idle is not None else 1.0)
            if not ready:
                if idle is not None and not idle():
                    idle = None
                for k in pending.values():
                    self._check_time(k, waited[k], limit[k])
                continue
            k = pending.pop(ready[0])
            try:
                segments[k], fresh = ray.get(ready[0])
            except ray.exceptions.RayActorError as e:
                if self.max_restarts == 0:
                    raise self._error(k, e) from None
                # Ray restarts it (up to ray.max_restarts) or has given up; ask again until the timeout, which
                # now also covers the new incarnation's start. Counted when a fresh incarnation answers.
                self._check_time(k, waited[k], limit[k], e)
                limit[k] = max(self.timeout_s, _START_S) + self.timeout_s
                time.sleep(0.1)
                pending[self.handles[k].segment.remote(weights, stats)] = k
                continue
            except ray.exceptions.RayError as e:
                raise self._error(k, e) from None
            if fresh and self._started[k]:  # a restarted actor (died in a call or between calls)
                self.restarts += 1
                lo, hi = self.bounds[k]
                self.reward_scaler.ret[lo:hi] = 0.0  # its episodes started afresh
            self._started[k] = True
        return finish(concat_segments(segments), self.obs_norm, self.reward_scaler)

    def _check_time(self, k: int, since: float, limit: float, error: BaseException | None = None) -> None:
        if time.perf_counter() - since > limit:
            if error is not None:
                raise self._error(k, error)
            raise WorkerError(f"{self._where(k)} has not returned its segment for {limit:g} s "
                              "(rollout.worker_timeout_s bounds a whole segment on Ray)")

    def metrics(self) -> dict[str, float]:
        return {"rollout/actor_restarts": float(self.restarts)}

    def state_dict(self) -> dict:
        """:meth:`Collector.state_dict` for the whole run (the actors' per-env parts joined in env order),
        so a checkpoint taken here resumes on any backend."""
        parts = [self._get(k, h.get_state.remote()) for k, h in enumerate(self.handles)]
        joined = {key: (sum((p[key] for p in parts), []) if isinstance(parts[0][key], list)
                        else np.concatenate([p[key] for p in parts])) for key in parts[0]}
        return {"obs_norm": self.obs_norm.state_dict(), "reward_scaler": self.reward_scaler.state_dict(),
                "actor_restarts": self.restarts, **joined}

    def load_state_dict(self, state: dict) -> str | None:
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.restarts = int(state.get("actor_restarts", 0))
        refs = [h.set_state.remote({key: value[lo:hi] for key, value in state.items()
                                    if key not in ("obs_norm", "reward_scaler", "actor_restarts")})
                for h, (lo, hi) in zip(self.handles, self.bounds, strict=True)]
        lost = next((r for r in (self._get(k, ref) for k, ref in enumerate(refs)) if r is not None), None)
        if lost is not None:
            self.reward_scaler.ret[:] = 0.0
        return lost

    def close(self) -> None:
        ray = self.ray
        for h in self.handles:
            try:
                ray.kill(h, no_restart=True)
            except Exception:  # already gone
                pass
        self.handles = []
        if self._own_ray and ray.is_initialized():
            ray.shutdown()
        self._own_ray = False


def _check_reachable(address: str) -> None:
    """A one-line error at once for a cluster address where nothing answers (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")  # the form is checked by rl_trust.config
    try:
        socket.create_connection((host, int(port)), timeout=5.0).close()
    except OSError as e:
        raise ConfigError(f"ray.address={address}: nothing answers there ({e.strerror or type(e).__name__}); "
                          "start the cluster's head first (ray start --head) or use null for a local Ray") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return " ".join(text.splitlines()[0].split())[:300] if text else type(e).__name__
