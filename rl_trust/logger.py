"""TensorBoard events plus a progress bar (or plain lines when not attached to a terminal)."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from tqdm import tqdm


class Logger:
    """Writes each iteration's metrics at its global step; ``time/sps`` counts every env step collected
    so far (with the critic overlapping the next rollout, an iteration is logged after that rollout).

    A resumed run passes the checkpoint's ``state`` and ``start_step``: the event stream continues in
    the same directory, TensorBoard dropping whatever the interrupted run wrote after ``start_step``
    (``purge_step``); the progress bar, the step and time counts and the recent returns carry on.
    A non-finite value is written as it is (TensorBoard shows NaN) and counted in ``logger/nonfinite``;
    the first one of each tag is also reported on stderr.
    """

    def __init__(self, log_dir: str, total_steps: int, config_yaml: str, *, progress: bool = True,
                 line_interval_s: float = 10.0, start_step: int = 0, state: dict | None = None):
        if state is not None:
            _after_existing_events(log_dir)
        self.writer = SummaryWriter(log_dir, purge_step=start_step + 1 if state is not None else None)
        if state is None:
            self.writer.add_text("config", "```yaml\n" + config_yaml + "\n```", 0)
        self.total_steps = total_steps
        self.interactive = progress and sys.stderr.isatty()
        self.bar = (tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
                    if self.interactive else None)
        self.line_interval_s, self.last_line = line_interval_s, -math.inf
        self.progress = progress
        self.step = start_step
        state = state or {}
        self.steps_collected = int(state.get("steps_collected", 0))
        self.returns: deque[float] = deque(state.get("returns", ()), maxlen=20)  # the display's recent episodes
        self.nonfinite = int(state.get("nonfinite", 0))
        self._reported: set[str] = set(state.get("reported", ()))
        self.start = time.perf_counter() - float(state.get("elapsed", 0.0))  # active time only, not downtime

    def state_dict(self) -> dict:
        return {"steps_collected": self.steps_collected, "returns": list(self.returns), "elapsed": self.elapsed(),
                "nonfinite": self.nonfinite, "reported": sorted(self._reported)}

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def collected(self, batch, episodes) -> None:
        """Count a rollout's env steps and finished episodes."""
        self.steps_collected += len(batch)
        self.returns.extend(episodes.returns)

    def recent_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Write ``metrics`` (and ``time/sps``) at ``step``; update the progress display."""
        sps = self.steps_collected / self.elapsed()
        for key, value in (metrics | {"time/sps": sps}).items():
            if not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                self.nonfinite += 1
                if key not in self._reported:
                    self._reported.add(key)
                    print(f"note: {key} is {value} at step {step} (logged as it is; count in logger/nonfinite)",
                          file=sys.stderr, flush=True)
            self.writer.add_scalar(key, value, step)
        if self.nonfinite:
            self.writer.add_scalar("logger/nonfinite", self.nonfinite, step)
        recent = self.recent_return()
        if self.bar is not None:
            self.bar.update(step - self.step)
            self.bar.set_postfix({"sps": f"{sps:.0f}", "return": f"{recent:.1f}"}, refresh=False)
        elif self.progress and (time.monotonic() - self.last_line >= self.line_interval_s or step >= self.total_steps):
            self.last_line = time.monotonic()
            print(f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%)  sps {sps:.0f}  "
                  f"return {recent:.1f}", flush=True)
        self.step = step

    def hparams(self, hyperparameters: dict, metrics: dict[str, float], step: int) -> None:
        """The run's hyperparameters and final ``metrics`` for TensorBoard's HParams dashboard, in this
        run's own event stream (``SummaryWriter.add_hparams`` would open a sub-directory); the metrics are
        also scalars at ``step``."""
        for summary in hparams(hyperparameters, metrics):
            self.writer.file_writer.add_summary(summary, step)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.writer.close()


def _after_existing_events(log_dir: str) -> None:
    """Wait, if need be, until a new events file's name (``events.out.tfevents.<unix seconds>...``) sorts
    after the existing ones': TensorBoard reads files in name order, and the purge a resumed run asks for
    applies to the events read before it."""
    stamps = []
    for path in Path(log_dir).glob("events.out.tfevents.*"):
        with contextlib.suppress(IndexError, ValueError):
            stamps.append(int(path.name.split(".")[3]))
    while stamps and int(time.time()) <= max(stamps):
        time.sleep(0.05)
