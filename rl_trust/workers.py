"""Environment stepping in-process or across worker processes, behind one small interface.

``ParallelEnvs`` splits ``num_envs`` environments between the learner and ``workers`` processes:
the learner steps ``learner_envs`` of them itself while each worker process steps a share of the
rest, many envs per process (not one process per env: on MuJoCo an inter-process message costs
more than a simulator step); every env group (below) is split that way (:func:`split_envs`).
With ``learner_envs=0`` the workers step every env and the learner spends the wait on background
work, such as the critic's update of the previous batch (``step_wait(idle=...)``); a step can be
split into ``step_async`` (actions out) and ``step_wait`` so the learner works meanwhile.
Actions, observations, rewards and flags travel through one shared-memory block, and so does the
per-step signal: the learner bumps a group's shared request counter, each worker copies it to its
own acknowledgement slot for that group when its part has stepped, both sides polling with
``sched_yield`` (a pipe round trip costs a scheduler wake-up, about as long as stepping a slice of
MuJoCo envs). A worker idle for more than 2 ms (while the learner updates) backs off to sleeping on
its pipe, which carries resets, errors and shutdown. ``reset(seed)`` seeds env ``i`` with ``seed +
i`` in either mode, so a run gives the same batches whatever ``rollout.workers`` is.

Envs are stepped in ``env_groups`` contiguous groups, each with its own ``step_async(actions, group)``
/ ``step_wait(group)``: with two groups the workers step one while the learner reads the other's
results and chooses its next actions (double buffering), so neither side waits for the other's
per-step work. The rollout steps its groups in the same order in process, so batches do not depend
on the worker count.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import astuple, dataclass
from multiprocessing.connection import Connection
from typing import Protocol

import gymnasium as gym
import numpy as np

from rl_trust.envs import EnvGroup
from rl_trust.errors import WorkerError

_RESET, _CLOSE, _GET_STATE, _SET_STATE = b"r", b"c", b"g", b"s"
_SPIN_S = 0.002  # a worker spins this long for the next step before backing off to 0.2 ms sleeps
_START_S = 120.0  # a new worker imports the simulator and makes its envs: minutes on a loaded machine
_CHECK_S = 0.05  # the learner looks for worker errors at most this often while stepping (and while waiting)


@dataclass
class StepResult:
    obs: np.ndarray  # [N, ...] the observation to act on next (reset observation where an episode ended)
    final_obs: np.ndarray  # [N, ...] the observation each step reached (equal to obs where none ended)
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


class Envs(Protocol):
    """What the collector steps: ``num_envs`` envs in contiguous ``groups``, each group's step split into
    ``step_async`` (actions out) and ``step_wait`` (results in; ``idle`` is called meanwhile for
    background work where the envs step elsewhere)."""

    num_envs: int
    groups: list[tuple[int, int]]
    single_observation_space: gym.Space
    single_action_space: gym.Space

    def reset(self, seed: int | None) -> np.ndarray: ...

    def step_async(self, actions: np.ndarray, group: int | None = None) -> None: ...

    def step_wait(self, idle: Callable[[], bool] | None = None, group: int | None = None) -> StepResult: ...

    def close(self) -> None: ...

    def get_state(self) -> list[bytes | str]: ...

    def set_state(self, states: list[bytes]) -> None: ...


def group_bounds(num_envs: int, groups: int) -> list[tuple[int, int]]:
    """``groups`` contiguous, near-equal env ranges ``(lo, hi)`` covering ``range(num_envs)``."""
    edges = np.linspace(0, num_envs, groups + 1).round().astype(int)
    return [(int(edges[g]), int(edges[g + 1])) for g in range(groups)]


def split_envs(num_envs: int, groups: list[tuple[int, int]], workers: int,
               learner_envs: int) -> tuple[list[tuple[int, int]], list[list[tuple[int, int]]]]:
    """Who steps which env: per group, the learner's range and each worker's (all contiguous).

    Every group is split between the learner and the workers, so that within each group's step the
    learner steps its part while the workers step theirs (the double buffering of the module docstring
    then keeps both sides busy). ``learner_envs`` is spread over the groups in proportion to their sizes
    (largest remainders); each group's rest goes to the workers in near-equal shares, the odd envs to
    the workers with the fewest so far, so every worker has at least one env. Returns ``(learner,
    per_worker)``: ``learner[g]`` and ``per_worker[w][g]`` are ``(lo, hi)`` global env ranges, empty
    where ``lo == hi``.
    """
    if not 0 <= learner_envs <= num_envs - workers:
        raise ValueError(f"learner_envs={learner_envs!r} must lie in [0, num_envs - workers = {num_envs - workers}]")
    sizes = np.array([hi - lo for lo, hi in groups])
    exact = learner_envs * sizes / num_envs
    share = np.floor(exact).astype(int)
    for g in np.argsort(-(exact - share), kind="stable")[: learner_envs - int(share.sum())]:
        share[g] += 1
    learner, per_worker, totals = [], [[] for _ in range(workers)], np.zeros(workers, int)
    for (lo, hi), own in zip(groups, share, strict=True):
        learner.append((lo, lo + int(own)))
        rest = hi - lo - int(own)
        counts = np.full(workers, rest // workers)
        counts[np.argsort(totals, kind="stable")[: rest % workers]] += 1
        totals += counts
        start = lo + int(own)
        for w in range(workers):
            per_worker[w].append((start, start + int(counts[w])))
            start += int(counts[w])
    return learner, per_worker


def _step_arrays(num_envs: int, obs_space: gym.Space) -> tuple[np.ndarray, ...]:
    """obs, final_obs, rewards, terminated, truncated for ``num_envs`` envs."""
    return (np.zeros((num_envs, *obs_space.shape), obs_space.dtype), np.zeros((num_envs, *obs_space.shape),
            obs_space.dtype), np.zeros(num_envs, np.float64), np.zeros(num_envs, bool), np.zeros(num_envs, bool))


class InProcessEnvs:
    """An :class:`~rl_trust.envs.EnvGroup` (SAME_STEP autoreset) behind the :class:`StepResult` interface;
    ``first_env``: the global index of its first env (a Ray actor's slice), which seeds by global index."""

    def __init__(self, env_id: str, num_envs: int, env_kwargs: dict | None = None, groups: int = 1,
                 first_env: int = 0):
        self.groups = group_bounds(num_envs, groups)
        self.first_env = first_env
        self.envs = EnvGroup(env_id, num_envs, **(env_kwargs or {}))
        self.num_envs = num_envs
        self.single_observation_space = self.envs.single_observation_space
        self.single_action_space = self.envs.single_action_space
        self._out = _step_arrays(num_envs, self.single_observation_space)
        self._pending: list[np.ndarray | None] = [None] * len(self.groups)

    def reset(self, seed: int | None) -> np.ndarray:
        return self.envs.reset(seed=seed, ids=range(self.first_env, self.first_env + self.num_envs))

    def step(self, actions: np.ndarray) -> StepResult:
        """Step every env."""
        self.envs.step(actions, *self._out)
        return StepResult(*(a.copy() for a in self._out))

    def step_async(self, actions: np.ndarray, group: int | None = None) -> None:
        """Hand over the actions of ``group`` (every env if None); :meth:`step_wait` steps (in process
        there is nothing to overlap)."""
        if group is None:
            for g, (lo, hi) in enumerate(self.groups):
                self._pending[g] = actions[lo:hi]
        else:
            self._pending[group] = actions

    def step_wait(self, idle: Callable[[], bool] | None = None, group: int | None = None) -> StepResult:
        """The results of ``group``'s step (every group's if None)."""
        if group is None:
            parts = [self.step_wait(group=g) for g in range(len(self.groups))]
            return StepResult(*(np.concatenate(a) for a in zip(*(astuple(p) for p in parts), strict=True)))
        (lo, hi), actions = self.groups[group], self._pending[group]
        self._pending[group] = None
        out = tuple(a[lo:hi] for a in self._out)
        self.envs.step(actions, *out, start=lo, stop=hi)
        return StepResult(*(a.copy() for a in out))

    def get_state(self) -> list[bytes | str]:
        """Every env's saved state, by global index (see :meth:`EnvGroup.get_state`)."""
        return self.envs.get_state()

    def set_state(self, states: list[bytes]) -> None:
        self.envs.set_state(states)

    def close(self) -> None:
        self.envs.close()


class _Shared:
    """Numpy views of one shared block: actions, obs, final_obs, rewards, terminated, truncated."""

    def __init__(self, buffer, num_envs: int, obs_space: gym.Space, act_space: gym.Space):
        act_shape = act_space.shape if isinstance(act_space, gym.spaces.Box) else ()
        act_dtype = np.float32 if isinstance(act_space, gym.spaces.Box) else np.int64
        specs = [("actions", act_shape, act_dtype), ("obs", obs_space.shape, obs_space.dtype),
                 ("final_obs", obs_space.shape, obs_space.dtype), ("rewards", (), np.float64),
                 ("terminated", (), np.bool_), ("truncated", (), np.bool_)]
        offset = 0
        for name, shape, dtype in specs:
            dtype = np.dtype(dtype)
            count = num_envs * int(np.prod(shape, dtype=np.int64))
            offset = -(-offset // 8) * 8  # 8-byte alignment
            setattr(self, name, np.frombuffer(buffer, dtype, count, offset).reshape(num_envs, *shape))
            offset += count * dtype.itemsize

    @staticmethod
    def nbytes(num_envs: int, obs_space: gym.Space, act_space: gym.Space) -> int:
        act = int(np.prod(act_space.shape)) * 4 if isinstance(act_space, gym.spaces.Box) else 8
        obs = int(np.prod(obs_space.shape)) * np.dtype(obs_space.dtype).itemsize
        return num_envs * (act + 2 * obs + 8 + 2) + 6 * 8


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when the learner dies, however it dies (kill -9 included)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the learner died before the line above took effect
        os._exit(1)


def _worker(conn: Connection, buffer, ctrl_buffer, w: int, env_id: str, env_kwargs: dict, num_envs: int,
            parts: list[tuple[int, int]], parent_pid: int) -> None:
    """A worker process: steps its part ``parts[g]`` (a global env range) of group ``g`` each time that
    group's request counter moves."""
    _die_with_parent(parent_pid)
    try:
        ids = np.concatenate([np.arange(lo, hi) for lo, hi in parts])  # its envs, by global index
        envs = EnvGroup(env_id, len(ids), **env_kwargs)
        sh = _Shared(buffer, num_envs, envs.single_observation_space, envs.single_action_space)
        ctrl = np.frombuffer(ctrl_buffer, np.int64)
        num_groups = len(parts)
        requests, acks = ctrl[:num_groups], ctrl[num_groups:].reshape(-1, num_groups)[w]
        # Per group: (start, stop) in its own envs, the actions to read and the rows to write.
        steps, start = [], 0
        for a, b in parts:
            steps.append(None if a >= b else (start, start + b - a, sh.actions[a:b],
                                              (sh.obs[a:b], sh.final_obs[a:b], sh.rewards[a:b],
                                               sh.terminated[a:b], sh.truncated[a:b])))
            start += b - a
        conn.send_bytes(b"ok")
        done = [int(r) for r in requests]
        idle_since = time.perf_counter()
        while True:
            stepped = False
            for g in range(num_groups):  # in order: with every group requested, group 0 goes first
                if requests[g] != done[g]:  # the learner wrote the actions, then bumped the counter
                    done[g] = int(requests[g])
                    part = steps[g]
                    if part is not None:
                        envs.step(part[2], *part[3], start=part[0], stop=part[1])
                    acks[g] = done[g]
                    stepped = True
            if stepped:
                idle_since = time.perf_counter()
                continue
            if time.perf_counter() - idle_since < _SPIN_S:
                os.sched_yield()
                continue
            if not conn.poll(0.0002):  # idle (the learner is updating): poll the pipe, mostly asleep
                continue
            cmd = conn.recv_bytes()
            if cmd[:1] == _RESET:
                seed = int(cmd[1:]) if len(cmd) > 1 else None
                sh.obs[ids] = envs.reset(seed=seed, ids=ids)
            elif cmd == _GET_STATE:
                conn.send_bytes(b"S" + pickle.dumps(envs.get_state()))
                idle_since = time.perf_counter()
                continue
            elif cmd[:1] == _SET_STATE:
                envs.set_state(pickle.loads(cmd[1:]))
            elif cmd == _CLOSE:
                envs.close()
                conn.send_bytes(b"bye")
                return
            conn.send_bytes(b"d")
            idle_since = time.perf_counter()
    except (KeyboardInterrupt, EOFError):
        return
    except BaseException:  # report to the learner, which raises with this text
        try:
            conn.send_bytes(b"E" + traceback.format_exc().encode())
        except (BrokenPipeError, OSError):
            pass


class ParallelEnvs:
    """``num_envs`` envs over the learner plus ``workers`` processes (see the module docstring)."""

    def __init__(self, env_id: str, num_envs: int, workers: int, env_kwargs: dict | None = None,
                 learner_envs: int | None = None, groups: int = 1, timeout_s: float = 60.0):
        self.groups = group_bounds(num_envs, groups)
        self.timeout_s = timeout_s  # a worker silent this long is taken for stopped or deadlocked
        env_kwargs = dict(env_kwargs or {})
        if learner_envs is None:  # an equal share for the learner and each worker
            learner_envs = round(num_envs / (workers + 1))
        self.local_parts, worker_parts = split_envs(num_envs, self.groups, workers, learner_envs)
        self._worker_ids = [np.concatenate([np.arange(lo, hi) for lo, hi in parts]) for parts in worker_parts]
        self.local_ids = np.concatenate([np.arange(lo, hi) for lo, hi in self.local_parts])
        # The learner's envs (stepped in step_async), or one unstepped env for the spaces when it has none.
        probe = EnvGroup(env_id, max(learner_envs, 1), **env_kwargs)
        self.local = probe if learner_envs > 0 else None
        self.num_envs = num_envs
        self.single_observation_space = probe.single_observation_space
        self.single_action_space = probe.single_action_space
        if self.local is None:
            probe.close()
        ctx = mp.get_context("spawn")
        self._buffer = ctx.RawArray("b", _Shared.nbytes(num_envs, self.single_observation_space,
                                                        self.single_action_space))
        self.sh = _Shared(self._buffer, num_envs, self.single_observation_space, self.single_action_space)
        # int64 counters: one step request per group, then per worker one acknowledgement per group.
        num_groups = len(self.groups)
        self._ctrl_buffer = ctx.RawArray("b", 8 * num_groups * (1 + workers))
        self.ctrl = np.frombuffer(self._ctrl_buffer, np.int64)
        self._requests = self.ctrl[:num_groups]
        self._acks = self.ctrl[num_groups:].reshape(workers, num_groups)
        # Per group: the workers with envs in it (the ones to wait for); where the learner's part of it
        # starts among its own envs.
        self._waiting = [[w for w in range(workers) if worker_parts[w][g][0] < worker_parts[w][g][1]]
                         for g in range(num_groups)]
        sizes = [hi - lo for lo, hi in self.local_parts]
        self._local_start = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        self._last_check = 0.0  # when the workers were last checked for errors (perf_counter)
        self._stuck: set[int] = set()  # workers that stopped answering: close kills them at once
        self.procs, self.conns = [], []
        try:
            for w in range(workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, args=(child, self._buffer, self._ctrl_buffer, w, env_id,
                                                         env_kwargs, num_envs, worker_parts[w], os.getpid()),
                                   daemon=True, name=f"rl_trust-rollout-{w}")
                proc.start()
                child.close()
                self.procs.append(proc)
                self.conns.append(parent)
            for w in range(workers):
                self._wait(w, expect=b"ok", timeout_s=max(self.timeout_s, _START_S))
        except BaseException:
            self.close()
            raise

    def _died(self, w: int) -> WorkerError:
        proc = self.procs[w]
        proc.join(1.0)
        code = proc.exitcode
        if code is not None and code < 0:
            try:
                how = f"was killed by signal {-code} ({signal.Signals(-code).name})"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return WorkerError(f"rollout worker {w} (pid {proc.pid}) {how}")

    def _failed(self, w: int, msg: bytes) -> WorkerError:
        details = msg[1:].decode(errors="replace")
        last = details.strip().splitlines()[-1] if details.strip() else "no traceback"
        return WorkerError(f"rollout worker {w} (pid {self.procs[w].pid}) failed: {last}", details)

    def _silent(self, w: int, timeout_s: float | None = None) -> WorkerError:
        self._stuck.add(w)
        return WorkerError(f"rollout worker {w} (pid {self.procs[w].pid}) has not answered for "
                           f"{timeout_s or self.timeout_s:g} s (rollout.worker_timeout_s): it is stopped, or its env "
                           "is stuck in a step")

    def _reply(self, w: int, expect: bytes = b"d", timeout_s: float | None = None) -> bytes:
        """Worker ``w``'s answer on its pipe (starting with ``expect``), within ``timeout_s`` (default: the
        envs' ``timeout_s``)."""
        conn, proc = self.conns[w], self.procs[w]
        timeout_s = timeout_s or self.timeout_s
        deadline = time.monotonic() + timeout_s
        try:
            while not conn.poll(0.1):
                if not proc.is_alive():
                    raise self._died(w)
                if time.monotonic() > deadline:
                    raise self._silent(w, timeout_s)
            msg = conn.recv_bytes()
        except (EOFError, OSError):  # its end of the pipe closed or reset: it is gone
            raise self._died(w) from None
        if msg[:1] == b"E":
            raise self._failed(w, msg)
        if not msg.startswith(expect):
            raise WorkerError(f"rollout worker {w} sent {msg[:20]!r}, expected {expect!r}")
        return msg

    def _wait(self, w: int, expect: bytes = b"d", timeout_s: float | None = None) -> None:
        self._reply(w, expect, timeout_s)

    def _broadcast(self, msg: bytes) -> None:
        for w, conn in enumerate(self.conns):
            try:
                conn.send_bytes(msg)
            except OSError:  # BrokenPipeError and friends: the worker is gone
                raise self._died(w) from None

    def _check_alive(self) -> None:
        for w, (conn, proc) in enumerate(zip(self.conns, self.procs, strict=True)):
            try:
                msg = conn.recv_bytes() if conn.poll() else b""
            except (EOFError, OSError):  # the worker's end of the pipe closed or reset: it is gone
                msg = b""
            if msg[:1] == b"E":
                raise self._failed(w, msg)
            if not proc.is_alive():
                raise self._died(w)

    def reset(self, seed: int | None) -> np.ndarray:
        self._broadcast(_RESET + (b"" if seed is None else str(seed).encode()))
        if self.local is not None:
            self.sh.obs[self.local_ids] = self.local.reset(seed=seed, ids=self.local_ids)
        for w in range(len(self.conns)):
            self._wait(w)
        return self.sh.obs.copy()

    def step(self, actions: np.ndarray, idle: Callable[[], bool] | None = None) -> StepResult:
        """Step every env: :meth:`step_async` then :meth:`step_wait`."""
        self.step_async(actions)
        return self.step_wait(idle)

    def step_async(self, actions: np.ndarray, group: int | None = None) -> None:
        """Start a step of ``group`` (every group if None; ``actions`` are that group's): the workers
        begin at once; the learner steps its own part, if any, now."""
        if group is None:
            for g, (lo, hi) in enumerate(self.groups):
                self.step_async(actions[lo:hi], g)
            return
        now = time.perf_counter()
        if now - self._last_check > _CHECK_S:  # polling every pipe is not free: not on every step
            self._last_check = now
            self._check_alive()
        sh = self.sh
        g_lo, g_hi = self.groups[group]
        sh.actions[g_lo:g_hi] = actions
        self._requests[group] += 1  # one aligned 8-byte store, after the actions
        lo, hi = self.local_parts[group]
        if lo < hi:
            start = self._local_start[group]
            self.local.step(actions[: hi - lo], sh.obs[lo:hi], sh.final_obs[lo:hi], sh.rewards[lo:hi],
                            sh.terminated[lo:hi], sh.truncated[lo:hi], start=start, stop=start + hi - lo)

    def step_wait(self, idle: Callable[[], bool] | None = None, group: int | None = None) -> StepResult:
        """Wait for the workers' parts of ``group``'s step (every group's if None) begun by
        :meth:`step_async`. ``idle``: called repeatedly meanwhile, one short unit of background work
        per call, until it returns False (no work left); it must not touch the envs."""
        if group is None:
            for g in range(len(self.groups)):
                self._wait_group(g, idle)
            lo, hi = 0, self.num_envs
        else:
            self._wait_group(group, idle)
            lo, hi = self.groups[group]
        sh = self.sh
        return StepResult(sh.obs[lo:hi].copy(), sh.final_obs[lo:hi].copy(), sh.rewards[lo:hi].copy(),
                          sh.terminated[lo:hi].copy(), sh.truncated[lo:hi].copy())

    def _wait_group(self, group: int, idle: Callable[[], bool] | None) -> None:
        target, acks = self._requests[group], self._acks[:, group]
        start = last_check = time.perf_counter()
        for w in self._waiting[group]:
            while acks[w] != target:
                if idle is not None:
                    if not idle():
                        idle = None
                    continue
                os.sched_yield()
                now = time.perf_counter()
                if now - last_check > _CHECK_S:
                    last_check = now
                    self._check_alive()
                    if now - start > self.timeout_s:
                        raise self._silent(w)

    def get_state(self) -> list[bytes | str]:
        """Every env's saved state, by global index (see :meth:`EnvGroup.get_state`), asked of each
        worker between steps."""
        states: list[bytes | str | None] = [None] * self.num_envs
        self._broadcast(_GET_STATE)
        if self.local is not None:
            for i, st in zip(self.local_ids, self.local.get_state(), strict=True):
                states[i] = st
        for w, ids in enumerate(self._worker_ids):
            for i, st in zip(ids, pickle.loads(self._reply(w, b"S")[1:]), strict=True):
                states[i] = st
        return states

    def set_state(self, states: list[bytes]) -> None:
        for w, ids in enumerate(self._worker_ids):
            try:
                self.conns[w].send_bytes(_SET_STATE + pickle.dumps([states[i] for i in ids]))
            except OSError:
                raise self._died(w) from None
        if self.local is not None:
            self.local.set_state([states[i] for i in self.local_ids])
        for w in range(len(self.conns)):  # rebuilding envs takes as long as making them
            self._wait(w, timeout_s=max(self.timeout_s, _START_S))

    def close(self) -> None:
        for w, (conn, proc) in enumerate(zip(self.conns, self.procs, strict=True)):
            if proc.is_alive() and w not in self._stuck:
                try:
                    conn.send_bytes(_CLOSE)
                    if conn.poll(5.0):
                        conn.recv_bytes()
                except (BrokenPipeError, EOFError, OSError):
                    pass
                proc.join(5.0)
            if proc.is_alive():  # SIGKILL: a stopped process does not act on SIGTERM until continued
                proc.kill()
                proc.join(1.0)
            conn.close()
        self.procs, self.conns = [], []
        if self.local is not None:
            self.local.close()


def resolve_workers(workers: int | str, num_envs: int, cores: int | None = None) -> int:
    """``auto``: one worker per spare core (of ``cores``, default the machine's), at most ``num_envs - 1``;
    0 when that leaves none."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(0, min(cores - 1, num_envs - 1)) if workers == "auto" else workers


def make_envs(env_id: str, num_envs: int, workers: int, env_kwargs: dict | None = None,
              learner_envs: int | None = None, groups: int = 1, timeout_s: float = 60.0) -> Envs:
    """In-process envs (``workers=0``) or :class:`ParallelEnvs` (``learner_envs``, ``timeout_s``: see
    there), stepped in ``groups`` groups (see the module docstring)."""
    if workers == 0:
        return InProcessEnvs(env_id, num_envs, env_kwargs, groups)
    return ParallelEnvs(env_id, num_envs, workers, env_kwargs, learner_envs, groups, timeout_s)


def resolve_env_groups(groups: int | str, num_envs: int) -> int:
    """``auto``: two groups (double buffering) where there are at least two envs, else one."""
    return min(2, num_envs) if groups == "auto" else groups


def resolve_learner_envs(learner_envs: int | str, num_envs: int, workers: int, groups: int,
                         overlap_critic: bool) -> int:
    """How many envs the learner steps beside ``workers`` worker processes (``rollout.learner_envs``).

    ``auto``: 0 when the critic overlaps the rollout (the learner's waits are its time), else an equal
    share less one env per group: the learner also carries every group's statistics, policy query and
    recording, so an equal share would leave the workers waiting for it (docs/benchmarks.md, sampling splits).
    """
    if workers == 0:
        return num_envs
    if learner_envs == "auto":
        return 0 if overlap_critic else max(0, round(num_envs / (workers + 1)) - groups)
    return learner_envs
