"""What an Optuna sweep found: its best trial, the optimisation history and the parameter importances.

    python scripts/sweep_report.py multirun/<date>_trpo_Hopper-v5 [--out DIR]

Reads the sweep directory (its ``sweep.yaml`` and ``trials.csv``; the study itself from
``hydra.sweeper.storage`` when the sweep had one) and writes ``optimization_history.png`` and
``param_importances.png`` (Optuna's random-forest importance evaluator) into ``--out`` (default: the
sweep directory), then prints the best trial and the importances as JSON. Trials that failed (they returned the worst
value, or never finished) are counted but left out of the figures. Needs ``pip install -e '.[sweep]'``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from rl_trust.cli import Parser  # noqa: E402
from rl_trust.errors import ConfigError  # noqa: E402
from rl_trust.sweep import INSTALL  # noqa: E402


def _typed(value: str, distribution):
    """A trials.csv cell as the value ``distribution`` holds."""
    import optuna

    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return next((c for c in distribution.choices if str(c) == value), value)
    if isinstance(distribution, (optuna.distributions.IntUniformDistribution,
                                 optuna.distributions.IntLogUniformDistribution)):
        return int(float(value))
    return float(value)


def load_study(sweep_dir: Path):
    """The sweep's study: from its storage, or rebuilt in memory from trials.csv and the search space."""
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    sweeper = OmegaConf.load(sweep_dir / "sweep.yaml")
    metric, direction = str(sweeper.optimized_metric), str(sweeper.direction[0])
    if sweeper.get("storage"):
        return optuna.load_study(study_name=str(sweeper.study_name), storage=str(sweeper.storage)), metric
    table = sweep_dir / "trials.csv"
    if not table.exists():
        raise ConfigError(f"{sweep_dir} has no trials.csv (written after each run of a sweep) and no storage")
    parser = OverridesParser.create()
    space = {str(k): create_optuna_distribution_from_override(parser.parse_override(f"{k}={v}"))
             for k, v in (sweeper.params or {}).items()}
    study = optuna.create_study(direction=direction, study_name=str(sweeper.study_name))
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            params = {k: _typed(row[k], d) for k, d in space.items() if row.get(k, "") != ""}
            done = row["state"] == "complete" and row[metric] != ""
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: space[k] for k in params},
                value=float(row[metric]) if done else None,
                state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.FAIL))
    return study, metric


def finished(study):
    """The study's complete trials with a finite value (a failed trial returns the worst, infinite value)."""
    import optuna

    good = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and math.isfinite(t.value)]
    copy = optuna.create_study(direction=study.direction, study_name=study.study_name)
    copy.add_trials(good)
    return copy


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__)
    p.add_argument("sweep", type=Path, help="the sweep directory (hydra.sweep.dir)")
    p.add_argument("--out", type=Path, default=None, help="where the figures go (default: the sweep directory)")
    args = p.parse_args(argv)
    if not (args.sweep / "sweep.yaml").exists():
        p.error(f"{args.sweep} is not an Optuna sweep directory (no sweep.yaml)")
    out = args.out or args.sweep
    if out.exists() and not out.is_dir():
        p.error(f"--out {out} is a file, not a directory")
    try:
        import optuna
    except ImportError:
        print(f"error: the sweep report needs optuna: {INSTALL}", file=sys.stderr)
        return 2
    try:
        study, metric = load_study(args.sweep)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a storage that cannot be read, a damaged table
        print(f"error: {args.sweep}: cannot read the study: {type(e).__name__}: {' '.join(str(e).split())}",
              file=sys.stderr)
        return 2
    good = finished(study)
    if not good.trials:
        print(f"error: {args.sweep}: no trial finished with a finite {metric}", file=sys.stderr)
        return 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    report = {"study": study.study_name, "metric": metric, "trials": len(study.trials),
              "finished": len(good.trials), "best_value": good.best_value, "best_params": good.best_params}
    importances = None
    if len(good.trials) >= 2 and good.best_params:  # computed before anything is written: a failure writes nothing
        # Optuna 2.10's fANOVA reads scikit-learn trees in a layout scikit-learn 1.4 changed; the random
        # forest's impurity decrease works with both (and its own plots with today's matplotlib do not)
        evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks the evaluator experimental
            try:
                importances = optuna.importance.get_param_importances(good, evaluator=evaluator)
            except ImportError:
                print(f"error: parameter importances need scikit-learn: {INSTALL}", file=sys.stderr)
                return 2
        report["importances"] = importances
    out.mkdir(parents=True, exist_ok=True)
    values = [t.value for t in good.trials]
    best = (max if good.direction == optuna.study.StudyDirection.MAXIMIZE else min)
    running = [best(values[: i + 1]) for i in range(len(values))]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([t.number for t in good.trials], values, "o", alpha=0.6, label="trial")
    ax.plot([t.number for t in good.trials], running, "-", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"{study.study_name}: {len(good.trials)} finished trials of {len(study.trials)}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "optimization_history.png", dpi=110)
    written = [out / "optimization_history.png"]
    if importances is not None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        ax.set_xlabel(f"importance for {metric} (random forest, mean decrease in impurity)")
        ax.set_title(f"{study.study_name}: parameter importances")
        fig.tight_layout()
        fig.savefig(out / "param_importances.png", dpi=110)
        written.append(out / "param_importances.png")
    print(json.dumps(report, indent=2, default=str))
    print("wrote " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
