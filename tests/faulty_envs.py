"""Envs that misbehave on purpose, for the fault tests (``gym.make("faulty_envs:Failing-v0")``)."""

import os
import signal
import threading

import gymnasium as gym
from gymnasium.envs.classic_control.pendulum import PendulumEnv


class FailingPendulum(PendulumEnv):
    """Pendulum that raises after ``fail_after`` steps (a crashing simulator)."""

    def __init__(self, fail_after: int = 50, **kwargs):
        super().__init__(**kwargs)
        self.fail_after, self.steps = fail_after, 0

    def step(self, action):
        self.steps += 1
        if self.steps > self.fail_after:
            raise RuntimeError("simulated simulator failure")
        return super().step(action)


class UnpicklablePendulum(PendulumEnv):
    """Pendulum holding a lock, as envs holding sockets, files or simulator handles do: it cannot be pickled."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lock = threading.Lock()


gym.register("Failing-v0", entry_point=FailingPendulum, max_episode_steps=200)
gym.register("Unpicklable-v0", entry_point=UnpicklablePendulum, max_episode_steps=200)


class DyingPendulum(PendulumEnv):
    """Pendulum whose process dies (SIGKILL) at step ``die_after``: a node lost, an out-of-memory kill. With
    ``marker`` one env of all dies, once: the one that creates the file."""

    def __init__(self, die_after: int = 50, marker: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.die_after, self.marker, self.steps = die_after, marker, 0

    def step(self, action):
        self.steps += 1
        if self.steps == self.die_after and (self.marker is None or self._first()):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().step(action)

    def _first(self) -> bool:
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))  # atomic: one env of all the processes wins
        except FileExistsError:
            return False
        return True


gym.register("Dying-v0", entry_point=DyingPendulum, max_episode_steps=200)
