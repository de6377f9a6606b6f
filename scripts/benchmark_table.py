"""The MuJoCo benchmark table: per (task, updater) the final deterministic evaluations of its seeds (mean, IQM
with a stratified-bootstrap CI, each seed), the wall-clock time per 1M steps, and the best published
on-policy figures beside them; and one learning-curve figure per task with the updaters side by side.

    python scripts/benchmark_table.py bench_runs/table --figures docs/table --docs docs/benchmarks.md

ROOT holds runs anywhere below it (a run: a directory with a TensorBoard events file and .hydra/config.yaml);
they are grouped by their config's env.id and algo.name, so the layout the documented commands write
(``ROOT/<algo>_<Task>/s<seed>``) and a multirun's both work; the runs of a row must share their config but for
the seed (and what changes no result: RUN_ONLY). A run without metrics.json has not finished: it is counted as
running (a process holds its lock) or stopped, and left out of the figures. ``--docs FILE`` replaces the text
between the lines ``<!-- benchmark-table:begin -->`` and ``<!-- benchmark-table:end -->`` of FILE with the
table (the markers must be there); without it the table goes to stdout.

``--records DIR`` keeps the table's evidence where it can be versioned: each finished run of ROOT is copied to
``DIR/<algo>_<Task>/s<seed>`` as a record (its .hydra/config.yaml, metrics.json and machine.json and an events
file holding only the curve the figures draw, a few tens of KB), beside the records already there (a record whose config
and metrics are the run's is left byte for byte; another is replaced), and the table and figures are made from
DIR. A later call with no run left (``python scripts/benchmark_table.py DIR ...``) rebuilds them from the
records alone. The figures are drawn aside, the records staged and the docs written to a temporary file first,
so a failure leaves all three as they were. Each row names the machines its seeds ran on (each run's
machine.json: CPU model and library versions; the same seed gives another return on another CPU model), with
a legend under the table. Needs ``pip install -e '.[plot]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/plot.py draws the curves

import plot  # noqa: E402
import yaml  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402

from rl_trust import checkpoint, plotting  # noqa: E402
from rl_trust.cli import Parser  # noqa: E402
from rl_trust.errors import ConfigError  # noqa: E402
from rl_trust.train import MACHINE_FILE  # noqa: E402

BEGIN, END = "<!-- benchmark-table:begin -->", "<!-- benchmark-table:end -->"
# What may differ between the seeds of one row: the seed, and what changes no result (the tuned file's name is a
# label: its values are compared where they land).
RUN_ONLY = {"seed", "progress", "resume", "checkpoint", "video", "tuned", "optimized_metric"}
UPDATERS = {"trpo": "TRPO", "ppo": "PPO-clip", "kl_penalty": "KL-penalty"}
# The best published on-policy figures at 1M steps we know of (v3 tasks unless said). BP: the best point during
# training, which flatters; 1 agent: a single run. Sources: Tianshou's examples/mujoco README, rl-baselines3-zoo's
# benchmark.md, sb3-contrib's TRPO docs, CleanRL's openrlbenchmark pages.
PUBLISHED = {
    "HalfCheetah": {"trpo": "Tianshou 4471 (BP); sb3-contrib 1803", "ppo": "zoo 5819 (1 agent); Tianshou 5784 (BP)",
                    "target": 7000},
    "Hopper": {"trpo": "zoo 3618 (1 agent); sb3-contrib 3372", "ppo": "Tianshou 2609 (BP)", "target": 3600},
    "Walker2d": {"trpo": "zoo 4933 (1 agent); sb3-contrib 4502", "ppo": "Tianshou 3589 (BP)", "target": 4950},
    "Ant": {"trpo": "zoo 4982 (1 agent); sb3-contrib 3554", "ppo": "Tianshou 3258 (BP)", "target": 5000},
    "Humanoid": {"trpo": "Tianshou 810 (BP)", "ppo": "Tianshou 787 (BP); CleanRL 716 (v4)", "target": 1700},
}


@dataclass
class Cell:
    task: str
    algo: str
    env_id: str
    finals: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    seconds_per_million: list[float] = field(default_factory=list)
    unfinished: int = 0
    running: int = 0  # of the unfinished: those a process still trains (it holds the run's lock)
    paths: list[Path] = field(default_factory=list)  # the finished runs
    # and where each ran: per process that trained part of it, the machine (None: not recorded)
    machines: list[tuple[str | None, ...]] = field(default_factory=list)
    every: list[Path] = field(default_factory=list)  # and those not finished (left out of the figures)
    every_seed: list[int] = field(default_factory=list)
    settings: dict | None = None  # the config but for RUN_ONLY: equal across a cell's runs
    first: Path | None = None


def _first_difference(a, b, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
    return prefix.rstrip(".") or "?"


def _fail(message: str) -> int:
    print(f"error: benchmark_table.py: {message}", file=sys.stderr)
    return 1


def _load(config: Path):
    try:
        cfg = OmegaConf.load(config)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as e:
        raise ConfigError(f"{config} cannot be read ({type(e).__name__})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{config} is not a mapping: it was not written by scripts/train.py")
    return cfg


def collect(root: Path) -> dict[tuple[str, str], Cell]:
    """The runs under ``root`` by (task, updater): ConfigError for a run that cannot be read, a row whose runs
    differ in more than their seed, or a seed given twice."""
    cells: dict[tuple[str, str], Cell] = {}
    for run in plotting.run_dirs(root):
        config = run / ".hydra" / "config.yaml"
        if not config.is_file():
            raise ConfigError(f"{run} has no .hydra/config.yaml: it was not written by scripts/train.py")
        cfg = _load(config)
        env_id, algo, seed = (OmegaConf.select(cfg, k, default=None) for k in ("env.id", "algo.name", "seed"))
        if not env_id or not algo or not isinstance(seed, int):
            raise ConfigError(f"{config} names no env.id, algo.name or integer seed")
        task = re.sub(r"-v\d+$", "", str(env_id))
        cell = cells.setdefault((task, str(algo)), Cell(task, str(algo), str(env_id)))
        try:
            settings = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in RUN_ONLY}
        except OmegaConfBaseException as e:
            raise ConfigError(f"{config} cannot be read ({type(e).__name__})") from None
        if cell.settings is None:
            cell.settings, cell.first = settings, run
        elif settings != cell.settings:
            key = _first_difference(settings, cell.settings)
            raise ConfigError(f"{run} and {cell.first} ({algo} on {env_id}) differ in {key}, not only in seed: "
                              f"a row of the table is one config's seeds")
        if seed in cell.every_seed:
            raise ConfigError(f"{run} repeats seed {seed} of {algo} on {env_id} "
                              f"({cell.every[cell.every_seed.index(seed)]})")
        cell.every.append(run)
        cell.every_seed.append(seed)
        metrics = run / "metrics.json"
        if not metrics.exists():
            cell.unfinished += 1
            cell.running += checkpoint.locked(run)
            continue
        try:
            m = json.loads(metrics.read_text())
            final, seconds, steps = float(m[plotting.FINAL]), float(m["train/time_s"]), float(m["train/global_step"])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{metrics} cannot be read ({type(e).__name__}: {e})") from None
        if not (math.isfinite(final) and math.isfinite(seconds) and seconds >= 0 and steps > 0):
            raise ConfigError(f"{metrics} holds {plotting.FINAL}={final}, train/time_s={seconds}, "
                              f"train/global_step={steps}: a finished run has a finite return and steps > 0")
        cell.finals.append(final)
        cell.seeds.append(seed)
        cell.seconds_per_million.append(seconds * 1e6 / steps)
        cell.paths.append(run)
        cell.machines.append(_machine(run))
    return cells


def _machine(run: Path) -> tuple[str | None, ...]:
    """Where ``run`` was trained, from its machine.json: one description per process that trained part of it, None
    for steps whose machine was not recorded (all of a run from before runs recorded it)."""
    path = run / MACHINE_FILE
    if not path.exists():
        return (None,)
    try:
        described = []
        for e in json.loads(path.read_text()):
            if e["cpu"] is None:
                described.append(None)
                continue
            gpu = f", {e['gpu']}" if str(e.get("device", "cpu")).startswith("cuda") else ""
            described.append(f"{e['cpu']} ({e['cpus']} CPUs{gpu}), Python {e.get('python', '?')}, torch {e['torch']}, "
                             f"numpy {e.get('numpy', '?')}, gymnasium {e.get('gymnasium', '?')}, MuJoCo {e['mujoco']}")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    if not described:
        raise ConfigError(f"{path} lists no machine")
    return tuple(described)


RECORD_TAGS = ("charts/episodic_return",)  # the curve the figures draw (scripts/plot.py's default tag)
RECORD_EVENTS = "events.out.tfevents.record"


def _same_record(run: Path, rec: Path) -> bool:
    files = (Path(".hydra") / "config.yaml", Path("metrics.json"), Path(MACHINE_FILE))
    return (rec / RECORD_EVENTS).is_file() and all(
        (rec / f).is_file() == (run / f).is_file() and (not (rec / f).is_file() or
                                                        (rec / f).read_bytes() == (run / f).read_bytes())
        for f in files)


def _write_record(run: Path, rec: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    tags = [t for t in RECORD_TAGS if t in acc.Tags()["scalars"]]
    if not tags:
        raise ConfigError(f"{run} never logged {', '.join(RECORD_TAGS)}: a record keeps that curve for the figures")
    (rec / ".hydra").mkdir(parents=True)
    shutil.copyfile(run / ".hydra" / "config.yaml", rec / ".hydra" / "config.yaml")
    shutil.copyfile(run / "metrics.json", rec / "metrics.json")
    if (run / MACHINE_FILE).is_file():
        shutil.copyfile(run / MACHINE_FILE, rec / MACHINE_FILE)
    with SummaryWriter(str(rec)) as w:
        for tag in tags:
            for e in acc.Scalars(tag):
                w.add_scalar(tag, e.value, e.step, walltime=e.wall_time)
    (written,) = rec.glob("events.out.tfevents.*")
    written.rename(rec / RECORD_EVENTS)  # a name without host, pid and time


def record(cells: dict[tuple[str, str], Cell], dest: Path, staging: Path) -> tuple[int, int]:
    """Stage in ``staging`` the records of ``dest`` with those of the finished runs of ``cells`` merged in (a
    run's record replaces the one of its (updater, task, seed)); returns (runs recorded anew, records kept)."""
    if dest.is_dir():
        shutil.copytree(dest, staging, dirs_exist_ok=True)
    new = kept = 0
    for c in cells.values():
        for run, seed in zip(c.paths, c.seeds, strict=True):
            rec = staging / f"{c.algo}_{c.task}" / f"s{seed}"
            if rec.exists() and _same_record(run, rec):
                kept += 1
                continue
            shutil.rmtree(rec, ignore_errors=True)
            try:
                _write_record(run, rec)
            except (OSError, ValueError) as e:
                raise ConfigError(f"{run} cannot be recorded ({type(e).__name__}: {e})") from None
            new += 1
    return new, kept


def _order(cells: dict[tuple[str, str], Cell]) -> list[Cell]:
    tasks = [t for t in PUBLISHED if any(k[0] == t for k in cells)] + sorted({k[0] for k in cells} - set(PUBLISHED))
    algos = list(UPDATERS) + sorted({k[1] for k in cells} - set(UPDATERS))
    return [cells[(t, a)] for t in tasks for a in algos if (t, a) in cells]


def table(cells: dict[tuple[str, str], Cell], *, reps: int, seed: int) -> str:
    lines = ["| task | updater | seeds | mean ± std | IQM [95% CI] | per seed (seed: return) | min / 1M steps | "
             "machine | published at 1M | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = _order(cells)
    labels = {m: f"M{i + 1}" for i, m in
              enumerate(dict.fromkeys(m for c in order for run in c.machines for m in run if m))} | {None: "?"}
    for c in order:
        published = PUBLISHED.get(c.task, {})
        target = published.get("target")
        stopped = c.unfinished - c.running
        seeds = f"{len(c.finals)}" + "".join(f" (+{n} {what})" for n, what in ((c.running, "running"),
                                                                               (stopped, "stopped")) if n)
        if c.finals:
            row = plotting.final_row(c.algo, [plotting.Run(p, None, f) for p, f in zip(c.paths, c.finals, strict=True)],
                                     reps=reps, ci=0.95, seed=seed)
            per_seed = " ".join(f"{s}: {v:.0f}" for s, v in sorted(zip(c.seeds, c.finals, strict=True)))
            wall = f"{statistics.median(c.seconds_per_million) / 60:.1f}"
            stats = (f"{row['mean']:.0f} ± {row['std']:.0f} | "
                     f"{row['iqm']:.0f} [{row['iqm_low']:.0f}, {row['iqm_high']:.0f}]")
            met = "—" if target is None else ("yes" if row["mean"] >= target else "no")
            if len(c.finals) < 3 and target is not None:
                met += " (< 3 seeds)"
        else:
            per_seed, wall, stats, met = "", "", "— | —", "—"
        where = ", ".join(dict.fromkeys("→".join(labels[m] for m in run) for run in c.machines))  # a moved run: M1→M2
        lines.append(f"| {c.task} | {UPDATERS.get(c.algo, c.algo)} | {seeds} | {stats} | {per_seed} | {wall} | "
                     f"{where} | {published.get(c.algo, '—')} | {target if target is not None else '—'} | {met} |")
    legend = [f"{label}: {m}" for m, label in labels.items() if m]
    if any(None in run for c in order for run in c.machines):
        legend.append("?: not recorded (a run from before runs wrote machine.json)")
    if legend:
        lines += ["", "Machines: " + "; ".join(legend) + "."]
    return "\n".join(lines) + "\n"


def figures(cells: dict[tuple[str, str], Cell], out_dir: Path, *, reps: int, seed: int) -> list[Path]:
    """One learning-curve figure per task (IQM over the finished seeds, bootstrap CI; scripts/plot.py draws
    it), with its .md and .csv, in ``out_dir``; ConfigError with plot.py's message if one cannot be drawn."""
    written = []
    for task in dict.fromkeys(c.task for c in _order(cells)):
        row = [c for c in _order(cells) if c.task == task and c.paths]
        if not row:
            continue
        out = out_dir / f"{task.lower()}.png"
        steps = row[0].settings.get("total_steps", 0)
        args = plot.parser().parse_args(["--out", str(out), "--reps", str(reps), "--seed", str(seed), "--title",
                                         f"{row[0].env_id}, {steps / 1e6:g}M steps: IQM and 95% CI over seeds"])
        fig, ax = plot.plt.subplots(figsize=(7, 4.5))
        said, noise = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(said), contextlib.redirect_stdout(noise):
                code = plot.draw([(UPDATERS.get(c.algo, c.algo), c.paths, c.algo) for c in row], args, fig, ax)
        finally:
            plot.plt.close("all")
        if code != 0:
            message = re.sub(r"^error: (plot.py: )?", "", said.getvalue().strip().splitlines()[-1])
            raise ConfigError(f"the figure for {task}: {message}")
        written += [out, out.with_suffix(".md"), out.with_suffix(".csv")]
    return written


def splice(text: str, block: str, path: Path) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ConfigError(f"{path} must hold the lines {BEGIN} and {END} once each, in that order")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="a directory of runs (searched recursively)")
    p.add_argument("--figures", type=Path, default=None, help="a directory for one learning-curve PNG per task")
    p.add_argument("--docs", type=Path, default=None, help="a markdown file whose marked block takes the table")
    p.add_argument("--records", type=Path, default=None,
                   help="a directory that keeps a small record of each finished run; the table is made from it")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f"--reps={args.reps} must be >= 1")
    if not 0 <= args.seed < 2**32:
        p.error(f"--seed={args.seed} must lie in [0, 2**32)")
    if not args.root.is_dir():
        return _fail(f"{args.root} is not a directory")
    if args.figures is not None and args.figures.exists() and not args.figures.is_dir():
        return _fail(f"--figures {args.figures} exists and is not a directory")
    if args.docs is not None and not args.docs.is_file():
        return _fail(f"--docs {args.docs} is not a file")
    rec_dir = old = None  # where the records live (a link is followed), and the name the swap parks them under
    if args.records is not None:
        rec_dir, root = args.records.resolve(), args.root.resolve()
        if rec_dir.exists() and not rec_dir.is_dir():
            return _fail(f"--records {args.records} exists and is not a directory")
        if rec_dir != root and rec_dir.is_relative_to(root):
            return _fail(f"--records {args.records} lies inside ROOT {args.root}: its records would count twice; "
                         f"give a directory outside ROOT")
        if rec_dir != root and root.is_relative_to(rec_dir):
            return _fail(f"ROOT {args.root} lies inside --records {args.records}, which is rewritten: give ROOT "
                         f"outside it")
        if args.figures is not None and args.figures.resolve().is_relative_to(rec_dir):
            return _fail(f"--figures {args.figures} lies inside --records {args.records}, which is rewritten: "
                         f"give them apart")
        old = rec_dir.with_name(f".benchmark_table-old-{rec_dir.name}")
        if os.path.lexists(old) and not rec_dir.exists():
            return _fail(f"{old} holds the records of a call that was stopped: rename it to {rec_dir} first")
        if rec_dir == root:  # the records themselves: the table is made from them and nothing is rewritten
            rec_dir = None
    staging = records = None
    recorded = ""
    try:
        plotting._rliable()
        if args.docs is not None:
            splice(_read(args.docs), "", args.docs)  # the markers, before any run is read
        cells = collect(args.root)
        if not cells:
            return _fail(f"{args.root} holds no run (no TensorBoard events file in it or below it)")
        if rec_dir is not None:  # staged beside DIR; swapped in before the figures and the docs
            shutil.rmtree(old, ignore_errors=True)  # a finished swap's leftover (DIR exists: checked above)
            rec_dir.parent.mkdir(parents=True, exist_ok=True)
            records = Path(tempfile.mkdtemp(prefix=".benchmark_table-records-", dir=rec_dir.parent))
            new, kept = record(cells, rec_dir, records)
            try:
                merged = collect(records)
            except ConfigError as e:  # named as the records the user keeps, not their staging copy
                raise ConfigError(str(e).replace(str(records), str(args.records))) from None
            unfinished = 0
            for key, c in cells.items():  # ROOT's runs still training, or stopped, count in their rows
                if c.unfinished:
                    row = merged.setdefault(key, Cell(c.task, c.algo, c.env_id))
                    row.unfinished += c.unfinished
                    row.running += c.running
                    unfinished += c.unfinished
            cells = merged
            if not any(c.finals for c in cells.values()):
                raise ConfigError(f"{args.root} has no finished run and {args.records} no record: no table to make")
            recorded = (f"{args.records} ({_n(new, 'run')} recorded, {_n(kept, 'record')} unchanged" +
                        (f"; {_n(unfinished, 'unfinished run')} of {args.root} not recorded)" if unfinished else ")"))
        block = table(cells, reps=args.reps, seed=args.seed)
        new_docs = splice(_read(args.docs), block, args.docs) if args.docs is not None else None
        drawn: list[Path] = []
        if args.figures is not None:  # drawn aside first: a failure leaves the old figures and docs as they were
            args.figures.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".benchmark_table-", dir=args.figures))
            drawn = figures(cells, staging, reps=args.reps, seed=args.seed)
        if records is not None:
            if rec_dir.exists():
                rec_dir.rename(old)
            try:
                records.rename(rec_dir)
            except OSError:
                if old.exists():
                    old.rename(rec_dir)
                raise
            records = None
            shutil.rmtree(old, ignore_errors=True)
        for path in drawn:
            os.replace(path, args.figures / path.name)
        written = [args.figures / p.name for p in drawn if p.suffix == ".png"]
        if new_docs is not None:
            tmp = args.docs.with_name(args.docs.name + ".tmp")
            tmp.write_text(new_docs)
            os.replace(tmp, args.docs)
    except ConfigError as e:
        return _fail(str(e))
    except OSError as e:
        where = e.filename or args.figures or args.docs
        return _fail(f"cannot write {where}{f' as {e.filename2}' if e.filename2 else ''}: {e.strerror or e}")
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if records is not None:
            shutil.rmtree(records, ignore_errors=True)
    if new_docs is None:
        print(block, end="")
    done = [*([args.docs] if new_docs is not None else []), *written, *([recorded] if recorded else [])]
    if done:  # to stderr when the table itself goes to stdout
        print(f"wrote {', '.join(map(str, done))}", file=sys.stdout if new_docs is not None else sys.stderr)
    return 0


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--docs {path} cannot be read ({type(e).__name__})") from None


if __name__ == "__main__":
    sys.exit(main())
