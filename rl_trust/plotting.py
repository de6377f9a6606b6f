"""Results across seeds: runs grouped by label, aggregated the way rliable recommends (Agarwal et al. 2021,
arXiv 2108.13264): the interquartile mean (IQM) with stratified-bootstrap confidence intervals, for learning
curves (per point) and final returns (each run's final deterministic evaluation, ``metrics.json``).

Needs the ``[plot]`` extra (rliable). ``scripts/plot.py`` is the command line.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rl_trust.errors import ConfigError

INSTALL = "pip install -e '.[plot]'"
FINAL = "eval/mean_return"


def _rliable():
    try:
        from rliable import library, metrics
    except ImportError as e:
        raise ConfigError(f"aggregating across seeds needs rliable ({e.name} is missing): {INSTALL}") from None
    return library, metrics


@dataclass
class Run:
    path: Path
    env_id: str | None  # from the run's .hydra/config.yaml, if it has one
    final: float | None  # metrics.json's eval/mean_return: None for a run that did not finish


def run_dirs(path: Path) -> list[Path]:
    """``path`` if it holds a run (a TensorBoard events file), else every directory under it that does, through
    symbolic links too (a folder of links to runs is a group); a run reached twice is listed once, by its
    shallowest path (breadth first), and a cycle of links ends."""
    if any(path.glob("events.out.tfevents.*")):
        return [path]
    found, seen, queue = [], set(), collections.deque([path])
    while queue:
        d = queue.popleft()
        real = os.path.realpath(d)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        if any(e.name.startswith("events.out.tfevents.") and e.is_file() for e in entries):
            found.append(d)
        queue.extend(Path(e.path) for e in entries if e.is_dir())  # is_dir follows links
    return sorted(found)


def expand(label: str, pattern: str) -> list[Path]:
    """The runs a group's path or glob names (``runs/*trpo*``, ``bench_runs/ppo``, ``multirun/**``), sorted;
    :class:`ConfigError` when it names nothing or no run."""
    if glob.has_magic(pattern):
        matches = [Path(p) for p in glob.glob(pattern, recursive=True)]
        if not matches:
            raise ConfigError(f"{label}: {pattern} matches nothing")
    else:
        matches = [Path(pattern)]
        if not matches[0].is_dir():
            raise ConfigError(f"{label}: {pattern} is not a directory")
    runs, reals = [], set()
    for run in sorted({run for m in matches if m.is_dir() for run in run_dirs(m)}):
        if os.path.realpath(run) not in reals:  # a run matched directly and through a folder of links counts once
            reals.add(os.path.realpath(run))
            runs.append(run)
    if not runs:
        raise ConfigError(f"{label}: {pattern} holds no run (no TensorBoard events file in it or below it)")
    return runs


def parse_group(text: str) -> tuple[str, str]:
    """``LABEL=PATTERN`` of ``--group``."""
    label, sep, pattern = text.partition("=")
    if not sep or not label.strip() or not pattern.strip():
        raise ConfigError(f"--group {text!r} is invalid: write LABEL=PATH_OR_GLOB, e.g. trpo='runs/*trpo*'")
    return label.strip(), pattern.strip()


def read_run(path: Path) -> Run:
    env_id = None
    config = path / ".hydra" / "config.yaml"
    if config.exists():
        from omegaconf import OmegaConf

        env_id = OmegaConf.select(OmegaConf.load(config), "env.id", default=None)
    final = None
    metrics = path / "metrics.json"
    if metrics.exists():
        try:
            final = float(json.loads(metrics.read_text())[FINAL])
        except (ValueError, KeyError, TypeError):
            final = None
    return Run(path, env_id, final)


def unreadable(run: Path) -> list[Path]:
    """Events files in ``run`` with no readable record (every file TensorBoard writes starts with one)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    bad = []
    for path in run.glob("events.out.tfevents.*"):
        try:
            if next(iter(EventFileLoader(str(path)).Load()), None) is None:
                bad.append(path)
        except Exception:  # noqa: BLE001 - any failure to read is what is asked
            bad.append(path)
    return bad


def load_curve(run: Path, tag: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The scalar ``tag`` of ``run`` as (steps, values), or None if the run never logged it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # a resumed run's purge is expected, not news
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        return None
    events = acc.Scalars(tag)
    return np.array([e.step for e in events]), np.array([e.value for e in events])


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (the first points average what precedes them)."""
    if window <= 1 or len(y) < window:
        return y
    kernel = np.ones(window) / window
    return np.convolve(np.pad(y, (window - 1, 0), mode="edge"), kernel, mode="valid")


def resample(curves: list[tuple[np.ndarray, np.ndarray]], points: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Every curve (smoothed) on one grid of ``points`` steps that every run covers (from the latest first
    step to the earliest last one): (grid, [runs, points])."""
    grid = np.linspace(max(s[0] for s, _ in curves), min(s[-1] for s, _ in curves), points)
    return grid, np.stack([np.interp(grid, s, smooth(v, window)) for s, v in curves])


def iqm(scores: np.ndarray) -> np.ndarray:
    """IQM over runs and tasks (every axis but the last) for each point of the last axis: the fast form of
    ``rliable.metrics.aggregate_iqm(scores[..., j])`` for each ``j``, one trimmed mean per bootstrap sample
    rather than one per point (``tests/test_plotting.py`` checks they agree)."""
    from scipy.stats import trim_mean

    return trim_mean(scores.reshape(-1, scores.shape[-1]), proportiontocut=0.25, axis=0)


@contextlib.contextmanager
def seeded(seed: int):
    """numpy's global generator seeded for a while, then as it was: rliable draws its bootstrap indices from it
    (its ``random_state`` argument reaches arch's base class but not rliable's own index sampling)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def interval(scores: np.ndarray, func, *, reps: int, ci: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """rliable's point estimate and stratified-bootstrap ``ci`` interval of ``func(scores)``
    (``scores`` [runs, tasks, ...])."""
    library, _ = _rliable()
    with seeded(seed):
        point, bounds = library.get_interval_estimates({"_": scores}, func, reps=reps, confidence_interval_size=ci)
    return point["_"], bounds["_"]


def final_row(label: str, runs: list[Run], *, reps: int, ci: float, seed: int) -> dict:
    """The table's row for a group: mean, std, IQM with its CI, median and each seed's final return."""
    _, metrics = _rliable()
    finals = np.array([r.final for r in runs if r.final is not None])
    env = sorted({r.env_id for r in runs if r.env_id}) or ["?"]
    row = {"group": label, "env": "/".join(env), "runs": len(finals)}
    if not len(finals):
        return row | {k: float("nan") for k in ("mean", "std", "iqm", "iqm_low", "iqm_high", "median")} | {"seeds": ""}
    point, bounds = interval(finals[:, None], lambda s: np.array([metrics.aggregate_iqm(s)]), reps=reps, ci=ci,
                             seed=seed)
    return row | {"mean": float(finals.mean()), "std": float(finals.std()), "iqm": float(point[0]),
                  "iqm_low": float(bounds[0, 0]), "iqm_high": float(bounds[1, 0]), "median": float(np.median(finals)),
                  "seeds": " ".join(f"{v:.1f}" for v in finals)}


def markdown(rows: list[dict], ci: float) -> str:
    pct = f"{100 * ci:g}%"
    lines = [f"| group | env | runs | mean ± std | IQM [{pct} CI] | median | per seed |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['env']} | {r['runs']} | {r['mean']:.1f} ± {r['std']:.1f} | "
                     f"{r['iqm']:.1f} [{r['iqm_low']:.1f}, {r['iqm_high']:.1f}] | {r['median']:.1f} | {r['seeds']} |")
    return "\n".join(lines) + "\n"


def csv(rows: list[dict]) -> str:
    import csv as csv_module
    import io

    out = io.StringIO()
    writer = csv_module.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
