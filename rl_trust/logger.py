"""TensorBoard events plus a progress bar (or plain lines when not attached to a terminal)."""

from __future__ import annotations

import math
import sys
import time

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


class Logger:
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

    def log(self, metrics: dict[str, float], step: int, recent_return: float | None = None) -> None:
        """Write ``metrics`` at ``step``; the progress display shows ``recent_return`` (mean of recent episodes)."""
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        recent = recent_return
        sps = metrics.get("time/sps", float("nan"))
        if self.bar is not None:
            self.bar.update(step - self.step)
            postfix = {"sps": f"{sps:.0f}"}
            if recent is not None:
                postfix["return"] = f"{recent:.1f}"
            self.bar.set_postfix(postfix, refresh=False)
        elif self.progress and (time.monotonic() - self.last_line >= self.line_interval_s or step >= self.total_steps):
            self.last_line = time.monotonic()
            ret = "n/a" if recent is None else f"{recent:.1f}"
            print(f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%)  sps {sps:.0f}  "
                  f"return {ret}", flush=True)
        self.step = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.writer.close()
