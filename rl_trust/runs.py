"""Run directories: what marks one as holding a run, and the config a resumed run continues with."""

from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from rl_trust import checkpoint
from rl_trust.config import typed
from rl_trust.errors import ConfigError

# Overrides a resume may change: none of them changes what is computed (batches do not depend on the
# worker split, the backend or the critic's overlap, docs/benchmarks.md; checkpoints are taken at iteration boundaries;
# videos only watch the policy).
RESUME_KEYS = ("total_steps", "progress", "checkpoint.every_steps", "checkpoint.keep", "rollout.workers",
               "rollout.learner_envs", "rollout.overlap_critic", "rollout.worker_timeout_s", "rollout.backend",
               "ray.address", "ray.num_cpus_per_actor", "ray.max_restarts", "video.every_steps",
               "video.length", "video.width", "video.height", "video.tensorboard", "optimized_metric")
GROUPS = ("algo", "env", "tuned", "hparams_search")  # config groups: a resume continues with the run's own choices


def holds_run(path: str | Path) -> bool:
    """Whether ``path`` already holds (part of) a training run: its events, checkpoints or metrics."""
    path = Path(path)
    if not path.is_dir():
        return False
    ours = ("metrics.json", "machine.json", checkpoint.FINAL, checkpoint.SUBDIR)
    return (checkpoint.locked(path) or any((path / name).exists() for name in ours)
            or any(path.glob("events.out.tfevents.*")))


def resume_config(saved: DictConfig, composed: DictConfig, overrides: list[str]) -> DictConfig:
    """The config a resumed run continues with: the run's own (``saved``, from its checkpoint) with the
    command line's ``overrides`` (as ``composed`` holds them) of :data:`RESUME_KEYS`. Any other override
    that changes a value is a :class:`ConfigError` naming it; ``total_steps`` may only grow."""
    cfg = typed(OmegaConf.to_container(saved))
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == "resume":
            continue
        new = OmegaConf.select(composed, key, default=None)
        new = OmegaConf.to_container(new, resolve=True) if isinstance(new, DictConfig) else new
        old = OmegaConf.select(cfg, key, default=None)
        old = OmegaConf.to_container(old) if isinstance(old, DictConfig) else old
        if key in RESUME_KEYS and not (override.is_delete() or override.is_add()):
            if key == "total_steps" and new < old:
                raise ConfigError(f"total_steps={new} is invalid on resume: the run was set to {old} steps, and "
                                  "a resumed run may only be extended")
            OmegaConf.update(cfg, key, new, merge=False)
        elif key.split(".")[0] in GROUPS and "." not in key:
            raise ConfigError(f"{override.input_line} cannot be given on resume: the run continues with its own "
                              "config (its algo, env and tuned choices included)")
        elif new != old or override.is_delete() or override.is_add():
            raise ConfigError(f"{override.input_line} cannot be changed on resume (the run has {key}={old!r}): "
                              f"only {', '.join(RESUME_KEYS)} may")
    cfg.resume = None
    return cfg
