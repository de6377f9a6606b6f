"""Multiruns: what a trial returns to the sweeper, how many cores a trial may use, checks before a sweep,
and the table of its runs after it.

``-m hparams_search=<algo>_optuna`` tunes with Hydra's Optuna sweeper (``pip install -e '.[sweep]'``);
``hydra/launcher=joblib|ray|submitit_local|submitit_slurm`` run trials in parallel or on a cluster
(``.[cluster]`` for Ray and submitit). ``scripts/train.py`` checks an Optuna sweep's settings
(:func:`check_optuna`) before Hydra starts it; :class:`SweepCallback` (``hydra.callbacks`` in
configs/config.yaml) seeds the sampler (from ``seed`` and the trials a stored study holds) and writes
``sweep.yaml`` at the start, and ``trials.csv`` into the sweep directory at the end of every multirun.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from rl_trust.config import RESULT_KEYS, schema_keys, typed, unknown_key, validate
from rl_trust.errors import ConfigError

INSTALL = "pip install -e '.[sweep]'"
FAILURE = "failure.txt"  # in a run directory of a multirun: the one line that ended the run


def is_optuna(hydra_cfg: DictConfig) -> bool:
    return "optuna" in str(OmegaConf.select(hydra_cfg, "sweeper._target_", default=""))


def directions(hydra_cfg: DictConfig) -> list[str]:
    """The Optuna sweeper's direction(s) as names (``maximize``/``minimize``)."""
    value = OmegaConf.select(hydra_cfg, "sweeper.direction")
    values = list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else [value]
    return [str(getattr(v, "name", v)).split(".")[-1].lower() for v in values]


def trial_value(value: float, hydra_cfg: DictConfig) -> float:
    """What a finished trial returns: its metric, or the failed value when that is NaN (no episode ended:
    Optuna 2.10 would store NaN as a complete trial)."""
    return failed_value(hydra_cfg) if math.isnan(value) else value


def failed_value(hydra_cfg: DictConfig) -> float:
    """What a failed or diverged trial returns to the Optuna sweeper: the worst value for its direction, so
    the study records it as the worst trial and goes on (an exception would end the whole sweep)."""
    return -math.inf if directions(hydra_cfg)[0] == "maximize" else math.inf


def cores_per_trial(hydra_cfg: DictConfig) -> int | None:
    """The cores one trial may use when the launcher runs trials side by side (joblib: the cores over the
    trials it runs at once, which the sweeper's batch also bounds; Ray's ``num_cpus`` per task; submitit's
    ``cpus_per_task``); None when a trial has the machine to itself."""
    launcher = OmegaConf.select(hydra_cfg, "launcher", default=None)
    target = str(OmegaConf.select(hydra_cfg, "launcher._target_", default=""))
    cores = available_cores()
    if "joblib" in target:
        n_jobs = int(OmegaConf.select(launcher, "n_jobs", default=None) or -1)
        n_jobs = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 is every core, -2 all but one
        batch = OmegaConf.select(hydra_cfg, "sweeper.n_jobs" if is_optuna(hydra_cfg) else "sweeper.max_batch_size",
                                 default=None)
        at_once = min(n_jobs, int(batch)) if batch else n_jobs
        return max(1, cores // max(1, at_once))
    if "ray" in target.lower():
        num_cpus = OmegaConf.select(launcher, "ray.remote.num_cpus", default=None)
        return max(1, int(math.floor(num_cpus))) if num_cpus else 1  # a Ray task reserves one CPU by default
    if "submitit" in target:
        cpus = OmegaConf.select(launcher, "cpus_per_task", default=None)
        return int(cpus) if cpus else None
    return None


def available_cores() -> int:
    """The cores this process may run on (its affinity: a cluster's allocation), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def search_space(config: DictConfig) -> dict[str, str]:
    """What the Optuna sweeper searches, as ``key -> override text``: ``hydra.sweeper.params`` with the
    command line's sweep overrides added (or replacing), less the keys the command line fixes to a value."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    space = {str(k): str(v) for k, v in params.items()}
    for override in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
        key = override.get_key_element().lstrip("+~")
        if override.is_sweep_override():
            space[key] = override.input_line.partition("=")[2]
        else:
            space.pop(key, None)
    return space


def check_optuna(cfg: DictConfig) -> None:
    """An Optuna sweep's settings, before any trial runs: every search-space key a config key, every range
    low <= high (above 0 on a log scale, steps > 0), the shared values and each end of each range valid,
    n_trials and n_jobs >= 1, the storage reachable. Raises :class:`ConfigError` naming it."""
    hydra_cfg = cfg.hydra
    sweeper = hydra_cfg.sweeper
    for key in ("n_trials", "n_jobs"):
        value = sweeper[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"hydra.sweeper.{key}={value} is invalid: must be an integer >= 1")
    if not 0.0 <= float(sweeper.max_failure_rate) <= 1.0:
        raise ConfigError(f"hydra.sweeper.max_failure_rate={sweeper.max_failure_rate} is invalid: must lie in [0, 1]")
    for direction in directions(hydra_cfg):
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={direction} is invalid: allowed: maximize, minimize")
    if OmegaConf.select(cfg, "optimized_metric") not in RESULT_KEYS:
        raise ConfigError(f"optimized_metric={cfg.optimized_metric!r} is invalid: allowed: {', '.join(RESULT_KEYS)}")
    parser = OverridesParser.create()
    space = search_space(cfg)
    values = {}
    for key, text in space.items():
        where = f"the search space's {key}"
        if OmegaConf.select(cfg, key, default="\0missing") == "\0missing" and not key.startswith("hydra."):
            parent = key.rpartition(".")[0]
            keys = schema_keys(parent)
            raise ConfigError(f"{where}: " + (str(unknown_key(key, keys)) if keys else f"{key} is not a config key"))
        value = values[key] = _parsed(parser, key, text)
        low = getattr(value, "start", None)
        high = getattr(value, "end", getattr(value, "stop", None))
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{where}={text} is invalid: its low end {low} is above its high end {high}")
        if "log" in getattr(value, "tags", ()) and low is not None and low <= 0:
            raise ConfigError(f"{where}={text} is invalid: a log scale needs a low end above 0, not {low}")
        step = getattr(value, "step", None)
        if step is not None and step <= 0:
            raise ConfigError(f"{where}={text} is invalid: a range's step must be > 0, not {step}")
        if hasattr(value, "list") and not value.list:
            raise ConfigError(f"{where}={text} is invalid: a choice needs at least one option")
    base = job_config(cfg)  # what every trial shares, each searched key at its first value
    for key, value in values.items():
        _set(base, key, _extremes(value)[0], f"the search space's {key}={space[key]}")
    try:
        validate(base)
    except ConfigError as e:
        raise ConfigError(f"{e} (every trial of the sweep would fail)") from None
    for key, value in values.items():  # each end of each range, the other keys at their first values
        for extreme in _extremes(value):
            _check_value(base, key, extreme, f"the search space's {key}={space[key]}")
    storage = OmegaConf.select(hydra_cfg, "sweeper.storage", default=None)
    if storage is not None:
        check_storage(str(storage))


def _extremes(value) -> list:
    if hasattr(value, "list"):
        return list(value.list)
    ends = [getattr(value, "start", None), getattr(value, "end", getattr(value, "stop", None))]
    return [e for e in ends if e is not None]


def job_config(cfg: DictConfig) -> DictConfig:
    """The run's own config (no ``hydra`` node) as the schemas type it: what :func:`validate` checks."""
    def plain(value):
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    return typed({key: plain(cfg[key]) for key in cfg if key != "hydra"})


def _parsed(parser, key: str, text: str):
    try:
        return parser.parse_override(f"{key}={text}").value()
    except Exception as e:  # noqa: BLE001 - Hydra's grammar errors have many types
        raise ConfigError(f"the search space's {key}={text} cannot be parsed: {' '.join(str(e).split())}") from None


def _set(cfg: DictConfig, key: str, value, where: str) -> None:
    """``key`` of ``cfg`` set as a trial's ``key=value`` override would set it."""
    with open_dict(cfg):
        try:
            if isinstance(value, str):  # the trial's override is key=value, which Hydra parses ("[64,64]": a list)
                value = OverridesParser.create().parse_override(f"{key}={value}").value()
            OmegaConf.update(cfg, key, value, merge=False)
        except Exception as e:  # noqa: BLE001 - OmegaConf's type errors have many types
            raise ConfigError(f"{where}: {value!r} is not a value {key} can take ({' '.join(str(e).split())[:200]})"
                              ) from None


def _check_value(base: DictConfig, key: str, value, where: str) -> None:
    """``validate`` with ``key`` set to one of the values a trial may draw."""
    trial = base.copy()
    _set(trial, key, value, where)
    try:
        validate(trial)
    except ConfigError as e:
        raise ConfigError(f"{where}: a trial with {key}={value} would fail: {e}") from None


def check_storage(url: str) -> None:
    """Raise :class:`ConfigError` unless Optuna can open the storage at ``url`` (creating an sqlite file is
    opening it; a directory that does not exist is not)."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"hydra.sweeper.storage needs optuna: {INSTALL}") from None
    try:
        optuna.storages.RDBStorage(url)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's and the drivers' errors have many types
        cause = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
        raise ConfigError(f"hydra.sweeper.storage={url} cannot be opened: {type(e).__name__}: {cause}") from None


def trial_rows(sweep_dir: Path, metric: str) -> list[dict[str, Any]]:
    """One row per run of a multirun directory: its number, its overrides, the metric and its state."""
    rows = []
    for run_dir in sorted((p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").exists()),
                          key=_job_number):
        overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
        row: dict[str, Any] = {"run": run_dir.name}
        for item in overrides:
            key, _, value = str(item).partition("=")
            row[key.lstrip("+~")] = value
        metrics = run_dir / "metrics.json"
        result = json.loads(metrics.read_text()) if metrics.exists() else {}
        row[metric] = result.get(metric, "")
        row["state"] = "complete" if result else "failed"
        failure = run_dir / FAILURE
        row["error"] = failure.read_text().strip() if failure.exists() else ""
        rows.append(row)
    return rows


def _job_number(run_dir: Path) -> tuple[int, str]:
    """A multirun's run in launch order (trial_10 after trial_9): Hydra's job number, leading its name."""
    head = run_dir.name.removeprefix("trial_").split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 62, run_dir.name)


def write_trials_csv(sweep_dir: Path, metric: str) -> Path | None:
    rows = trial_rows(sweep_dir, metric)
    if not rows:
        return None
    fields = list(dict.fromkeys(k for row in rows for k in row))
    path = sweep_dir / "trials.csv"
    tmp = path.with_name(f".trials.csv.{os.getpid()}.tmp")  # trials of a parallel launcher end at once
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def seed_sampler(config: DictConfig) -> int | None:
    """Seed a sampler that takes a seed and was given none (``hydra.sweeper.sampler.seed``) with the run's
    ``seed`` plus the trials a stored study already holds: a continued study must not draw the same first
    (random) points again. Returns the seed set, if any."""
    sampler = config.hydra.sweeper.sampler
    if "seed" not in sampler or sampler.seed is not None:
        return None
    done = 0
    storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
    if storage is not None:
        import optuna

        names = {s.study_name: s.n_trials for s in optuna.study.get_all_study_summaries(str(storage))}
        done = names.get(str(config.hydra.sweeper.study_name), 0)
    with open_dict(config), read_write(config):
        sampler.seed = int(config.seed) + done
    return int(sampler.seed)


def write_sweep_yaml(config: DictConfig) -> Path:
    """``sweep.yaml`` in the sweep directory: the study's settings, resolved (scripts/sweep_report.py reads
    them; the Optuna sweeper writes no multirun.yaml)."""
    sweeper = config.hydra.sweeper
    params = search_space(config)
    storage = sweeper.storage
    if storage is not None and str(storage).startswith("sqlite:///") and not str(storage).startswith("sqlite:////"):
        storage = f"sqlite:///{Path(str(storage)[len('sqlite:///'):]).resolve()}"  # the report may run elsewhere
    study = {"study_name": sweeper.study_name, "storage": storage, "direction": directions(config.hydra),
             "n_trials": sweeper.n_trials, "sampler": OmegaConf.to_container(sweeper.sampler, resolve=True),
             "params": params, "optimized_metric": config.optimized_metric}
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(study), sweep_dir / "sweep.yaml")
    return sweep_dir / "sweep.yaml"


class SweepCallback(Callback):
    """Hydra callback: the sampler's seed and ``sweep.yaml`` before an Optuna sweep, ``trials.csv``
    after every multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_optuna(config.hydra):  # checked already (scripts/train.py): Hydra only warns of a callback's error
            seed_sampler(config)
            write_sweep_yaml(config)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """After each run of a multirun: the table so far (a multirun that fails or is stopped keeps it)."""
        if OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            if sweep_dir.is_dir():
                write_trials_csv(sweep_dir, str(OmegaConf.select(config, "optimized_metric")))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            path = write_trials_csv(sweep_dir, str(OmegaConf.select(config, "optimized_metric")))
            if path is not None:
                print(f"sweep: {path}", flush=True)
