"""TensorBoard events plus a progress bar (or plain lines when not attached to a terminal)."""

from __future__ import annotations

import math
import sys
import time
from collections import deque

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


class Logger:
    """Writes each iteration's metrics at its global step; ``time/sps`` counts every env step collected
    so far (with the critic overlapping the next rollout, an iteration is logged after that rollout)."""

    def __init__(self, log_dir: str, total_steps: int, config_yaml: str, *, progress: bool = True,
                 line_interval_s: float = 10.0):
        self.writer = SummaryWriter(log_dir)
        self.writer.add_text("config", "```yaml\n" + config_yaml + "\n```", 0)
        self.total_steps = total_steps
        self.interactive = progress and sys.stderr.isatty()
        self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True) if self.interactive else None
        self.line_interval_s, self.last_line = line_interval_s, -math.inf
        self.progress = progress
        self.step = 0
        self.steps_collected = 0
        self.returns: deque[float] = deque(maxlen=20)  # the progress display's recent episodes
        self.start = time.perf_counter()

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
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        recent = self.recent_return()
        if self.bar is not None:
            self.bar.update(step - self.step)
            self.bar.set_postfix({"sps": f"{sps:.0f}", "return": f"{recent:.1f}"}, refresh=False)
        elif self.progress and (time.monotonic() - self.last_line >= self.line_interval_s or step >= self.total_steps):
            self.last_line = time.monotonic()
            print(f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%)  sps {sps:.0f}  "
                  f"return {recent:.1f}", flush=True)
        self.step = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.writer.close()
