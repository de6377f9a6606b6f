"""Vectorised Gymnasium environments.

Every vector env uses ``AutoresetMode.SAME_STEP``: the step that ends an episode returns the
reset observation and puts the true final observation in ``infos["final_obs"]``, so no step of
a rollout is a fake transition across a reset (docs/architecture.md, "SAME_STEP autoreset").
Normalisation lives in :mod:`rl_trust.normalization`, applied by the collector, so its
statistics belong to the run's state rather than to a wrapper buried in the env stack.
"""

from __future__ import annotations

import difflib
import importlib
import pickle
import zlib

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle
from gymnasium.vector import AutoresetMode

from rl_trust.errors import CheckpointError, ConfigError


def check_env_id(env_id: str) -> None:
    """Raise ``ConfigError`` naming ``env.id`` when Gymnasium does not know the id (``module:Id`` imports
    ``module`` first, which registers its envs, as ``gym.make`` does)."""
    if ":" in env_id:
        module, _, env_id = env_id.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"env.id={module}:{env_id}: cannot import {module!r} ({e})") from None
    if env_id in gym.envs.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.envs.registry.keys()), n=5, cutoff=0.6)
    hint = f"; did you mean one of: {', '.join(close)}" if close else ""
    raise ConfigError(f"env.id={env_id!r} is not a registered Gymnasium environment{hint}")


def make_env(env_id: str, **env_kwargs) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)``, a failure reported as a :class:`ConfigError` naming the option."""
    check_env_id(env_id)
    try:
        return gym.make(env_id, **env_kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError(f"env.id={env_id!r} needs a package that is not installed: {_one_line(e)}") from None
    except Exception as e:
        raise ConfigError(f"env.kwargs={env_kwargs!r} is invalid for {env_id}: {type(e).__name__}: {_one_line(e)}"
                          if env_kwargs else f"env.id={env_id!r} cannot be made: {type(e).__name__}: {_one_line(e)}"
                          ) from None


def check_env(env_id: str, env_kwargs: dict) -> tuple[gym.Space, gym.Space]:
    """Make, reset and step one ``env_id`` env in this process, so that a bad ``env.kwargs`` value (one the
    constructor accepts and the first step trips over) is one line here rather than a worker's traceback.
    Returns its observation and action spaces."""
    env = make_env(env_id, **env_kwargs)
    try:
        _check_spaces(env_id, env.observation_space, env.action_space, env.close)
        env.action_space.seed(0)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        return env.observation_space, env.action_space
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"env.kwargs={env_kwargs!r}: {env_id} fails on its first reset or step: "
                          f"{type(e).__name__}: {_one_line(e)}") from None
    finally:
        env.close()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _check_spaces(env_id: str, obs_space: gym.Space, act_space: gym.Space, close) -> None:
    if not isinstance(act_space, (gym.spaces.Box, gym.spaces.Discrete)):
        close()
        raise ConfigError(
            f"env.id={env_id!r} has action space {act_space}; rl_trust policies support Box (Gaussian) "
            "and Discrete (categorical)"
        )
    if not isinstance(obs_space, gym.spaces.Box):
        close()
        raise ConfigError(f"env.id={env_id!r} has observation space {obs_space}; only Box")


def make_vec_env(env_id: str, num_envs: int, *, seed: int | None = None, **env_kwargs) -> gym.vector.VectorEnv:
    """A ``SyncVectorEnv`` of ``num_envs`` copies of ``env_id`` (SAME_STEP autoreset), reset with ``seed``."""
    check_env_id(env_id)
    if num_envs < 1:
        raise ConfigError(f"env.num_envs={num_envs} must be >= 1")
    envs = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        **env_kwargs,
    )
    _check_spaces(env_id, envs.single_observation_space, envs.single_action_space, envs.close)
    envs.action_space.seed(seed)
    return envs


def env_state(env: gym.Env) -> bytes:
    """Everything that decides ``env``'s future transitions, as bytes for :func:`restore_env`.

    The wrapper stack pickles as it is (time-limit counters included). Gymnasium's MuJoCo envs pickle
    as their constructor arguments (``EzPickle``), so their whole ``MjData`` goes along (the integration
    state alone is not enough: Ant and Humanoid read positions the last step computed) with the env's
    random generator. Raises ``TypeError`` for an env whose state would be lost that way: any other
    ``EzPickle`` env (Box2D's, whose bodies cannot be copied), or one that does not pickle at all.
    """
    base = env.unwrapped
    extra = {"np_random": base.np_random.bit_generator.state}
    if isinstance(base, EzPickle):
        try:
            import mujoco
        except ImportError:  # pragma: no cover - gymnasium[mujoco] is a dependency
            mujoco = None
        if mujoco is None or not isinstance(getattr(base, "data", None), mujoco.MjData):
            raise TypeError(f"{type(base).__name__} pickles as its constructor arguments, not its state")
        extra["mjdata"] = zlib.compress(pickle.dumps(base.data), 1)
    try:
        return pickle.dumps((env, extra), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        raise TypeError(f"{type(base).__name__} cannot be pickled ({type(e).__name__}: {e})") from None


def restore_env(state: bytes) -> gym.Env:
    """The env :func:`env_state` saved, continuing exactly where it was."""
    env, extra = pickle.loads(state)
    base = env.unwrapped
    base.np_random.bit_generator.state = extra["np_random"]
    if "mjdata" in extra:
        base.data = pickle.loads(zlib.decompress(extra["mjdata"]))
        renderer = getattr(base, "mujoco_renderer", None)
        if renderer is not None:
            renderer.data = base.data
    return env


class EnvGroup:
    """``num_envs`` Gymnasium envs stepped in a plain loop into arrays the caller owns.

    The rollout's hot path. Same transitions as ``make_vec_env``'s SAME_STEP ``SyncVectorEnv``
    (env ``i`` reset with ``seed + i``; an env whose episode ends is reset, without a seed, in the
    same step, its true last observation going to ``final_obs``), without what that class does per
    step that the rollout never reads: merging every env's info dict into arrays, which on MuJoCo
    costs a large share of the simulator's own time (docs/benchmarks.md). ``tests/test_rollout.py``
    checks the equality.
    """

    def __init__(self, env_id: str, num_envs: int, **env_kwargs):
        check_env_id(env_id)
        if num_envs < 1:
            raise ConfigError(f"env.num_envs={num_envs} must be >= 1")
        self.envs: list[gym.Env] = []
        try:
            for _ in range(num_envs):
                self.envs.append(make_env(env_id, **env_kwargs))
        except BaseException:
            self.close()
            raise
        self.num_envs = num_envs
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        _check_spaces(env_id, self.single_observation_space, self.single_action_space, self.close)

    def reset(self, seed: int | None = None, ids=None) -> np.ndarray:
        """Reset every env, env ``i`` with ``seed + ids[i]`` (``ids`` default ``range(num_envs)``: a
        process holding envs 3, 4 and 9 of a run passes those, so seeds do not depend on the split);
        returns the stacked observations."""
        ids = range(self.num_envs) if ids is None else [int(i) for i in ids]
        return np.stack([env.reset(seed=None if seed is None else seed + i)[0]
                         for i, env in zip(ids, self.envs, strict=True)])

    def step(self, actions: np.ndarray, obs: np.ndarray, final_obs: np.ndarray, rewards: np.ndarray,
             terminated: np.ndarray, truncated: np.ndarray, start: int = 0, stop: int | None = None) -> None:
        """Step envs ``start:stop`` (default all), env ``start + j`` with ``actions[j]``, writing row
        ``j`` of each output array."""
        for j, env in enumerate(self.envs[start:stop]):
            o, rewards[j], term, trunc, _ = env.step(actions[j])
            terminated[j], truncated[j] = term, trunc
            final_obs[j] = o
            if term or trunc:
                o, _ = env.reset()
            obs[j] = o

    def get_state(self) -> list[bytes | str]:
        """Each env's :func:`env_state`, or for one that cannot be saved the reason (a str)."""
        out: list[bytes | str] = []
        for env in self.envs:
            try:
                out.append(env_state(env))
            except TypeError as e:
                out.append(str(e))
        return out

    def set_state(self, states: list[bytes]) -> None:
        """Replace every env by the one :meth:`get_state` saved."""
        try:
            restored = [restore_env(s) for s in states]
        except Exception as e:  # another gymnasium or simulator version, a module that is gone
            raise CheckpointError(f"the checkpoint's envs cannot be restored here ({type(e).__name__}: "
                                  f"{_one_line(e)})") from None
        for env in self.envs:
            env.close()
        self.envs = restored

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []
