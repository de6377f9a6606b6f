"""Train an agent: ``python scripts/train.py algo=trpo env=HalfCheetah [key=value ...]``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rl_trust.config import register_configs
from rl_trust.errors import ConfigError
from rl_trust.train import run

register_configs()


def _remove_run_dir(out_dir: Path) -> None:
    """Nothing was trained: remove what Hydra wrote, and the directory if that leaves it empty."""
    shutil.rmtree(out_dir / ".hydra", ignore_errors=True)
    for log in out_dir.glob("*.log"):
        log.unlink(missing_ok=True)
    try:
        out_dir.rmdir()
    except OSError:
        pass  # it holds files that are not ours: leave them


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> float:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = run(cfg, out_dir)
    except ConfigError as e:
        _remove_run_dir(out_dir)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:  # training diverged (e.g. TRPO's repeated non-finite updates)
        print(f"error: training stopped: {e} (events so far are in {out_dir}; no metrics.json)", file=sys.stderr)
        sys.exit(1)
    return metrics["eval/mean_return"]


if __name__ == "__main__":
    main()
