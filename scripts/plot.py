"""Learning curves across seeds, several algorithms on one figure: the IQM over seeds with a stratified
bootstrap confidence interval (rliable), and a table of final returns.

    python scripts/plot.py --group trpo='runs/*trpo*' --group ppo='runs/*ppo*' --out curves.png
    python scripts/plot.py bench_runs/trpo_HalfCheetah --tag charts/episodic_return --out curve.png
    python scripts/plot.py --group trpo='bench_runs/hc/trpo' --group ppo='bench_runs/hc/ppo' --out hc.png \\
        --profile hc_profile.png

A group is ``LABEL=PATH_OR_GLOB`` (``--group``) or a positional path (labelled by ``--label`` or its
name); each path or match is a run directory or a directory of runs (searched recursively for
TensorBoard events). Curves are smoothed, resampled onto one step grid up to the shortest run, and
aggregated per point. Beside the figure go ``<out>.csv`` and ``<out>.md``: per group the final
deterministic evaluation (``metrics.json``'s eval/mean_return) as mean ± std, IQM with its CI, median
and each seed's value. ``--profile FILE`` adds a performance profile of the final returns. Needs
``pip install -e '.[plot]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from rl_trust import plotting  # noqa: E402
from rl_trust.cli import Parser  # noqa: E402
from rl_trust.errors import ConfigError  # noqa: E402


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _check_out(p: Parser, out: Path, flag: str, formats) -> None:
    if out.is_dir():
        p.error(f"{flag} {out} is a directory: give a file name, e.g. {out / 'curve.png'}")
    if out.suffix.lstrip(".").lower() not in formats:
        p.error(f"{flag} {out}: the format must be one of {', '.join(sorted(formats))} (from its suffix)")


def _tmp(path: Path) -> Path:
    """Where ``path`` is written first (same suffix: matplotlib reads the format from it)."""
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def _save(fig, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(_tmp(out), dpi=110)


def parser() -> Parser:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", type=Path, help="run directories or directories of runs, one group each")
    p.add_argument("--group", action="append", default=[], metavar="LABEL=GLOB", help="a labelled group of runs")
    p.add_argument("--label", action="append", default=None, help="one per positional path (default: its name)")
    p.add_argument("--tag", default="charts/episodic_return")
    p.add_argument("--smooth", type=int, default=5, help="moving-average window in logged points")
    p.add_argument("--points", type=int, default=200, help="points of the common step grid (default 200)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--ci", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--hline", type=float, default=None, help="a horizontal reference line (e.g. max_kl)")
    p.add_argument("--title", default=None)
    p.add_argument("--profile", type=Path, default=None, help="also draw a performance profile of final returns")
    p.add_argument("--out", type=Path, required=True, help="the figure (PNG, PDF, SVG ...)")
    return p


def _plot(argv: list[str] | None) -> int:
    p = parser()
    args = p.parse_args(argv)
    labels = args.label or [path.name for path in args.paths]
    if len(labels) != len(args.paths):
        p.error(f"--label given {len(labels)} times for {len(args.paths)} paths")
    for name, low in (("smooth", 1), ("points", 2), ("reps", 1)):
        if getattr(args, name) < low:
            p.error(f"--{name}={getattr(args, name)} must be >= {low}")
    if not 0 < args.ci < 1:
        p.error(f"--ci={args.ci} must lie in (0, 1)")
    if not 0 <= args.seed < 2**32:
        p.error(f"--seed={args.seed} must lie in [0, 2**32)")
    if args.profile is not None and args.profile.resolve() == args.out.resolve():
        p.error(f"--profile {args.profile} is the --out file: give it its own name")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    formats = fig.canvas.get_supported_filetypes()
    _check_out(p, args.out, "--out", formats)
    if args.profile is not None:
        _check_out(p, args.profile, "--profile", formats)
    try:
        groups = [(label, str(path)) for label, path in zip(labels, args.paths, strict=True)]
        groups += [plotting.parse_group(g) for g in args.group]
    except ConfigError as e:
        return _fail(str(e))
    if not groups:
        p.error("give runs: positional paths or --group LABEL=GLOB")
    seen = [label for label, _ in groups]
    dup = next((label for label in seen if seen.count(label) > 1), None)
    if dup is not None:
        return _fail(f"the label {dup!r} is given to two groups: labels must differ")
    try:
        plotting._rliable()
        expanded = [(label, plotting.expand(label, pattern), pattern) for label, pattern in groups]
    except ConfigError as e:
        return _fail(str(e))
    return draw(expanded, args, fig, ax)


def draw(groups: list[tuple[str, list[Path], str]], args, fig, ax) -> int:
    """The figure and tables of ``groups`` (label, run directories, what named them) with ``args`` of
    :func:`parser`; scripts/benchmark_table.py calls it with its own lists of runs."""
    rows, finals = [], {}
    for label, paths, pattern in groups:
        bad = [f for r in paths for f in plotting.unreadable(r)]
        if bad:
            return _fail(f"{bad[0]} cannot be read (corrupt, or not a TensorBoard events file)")
        runs = [plotting.read_run(r) for r in paths]
        envs = sorted({r.env_id for r in runs if r.env_id})
        if len(envs) > 1:
            return _fail(f"{label}: its runs are on {len(envs)} tasks ({', '.join(envs)}): give one group per task")
        loaded = [(r, plotting.load_curve(r.path, args.tag)) for r in runs]
        curves = [c for _, c in loaded if c is not None]
        if not curves:
            return _fail(f"no run of {label} ({pattern}) has the tag {args.tag!r}")
        missing = [str(r.path) for r, c in loaded if c is None]
        if missing:
            print(f"note: {label}: {len(missing)} of {len(runs)} runs lack {args.tag!r}, left out: {missing[0]} ...",
                  file=sys.stderr)
        grid, ys = plotting.resample(curves, args.points, args.smooth)
        point, bounds = plotting.interval(ys[:, None, :], plotting.iqm, reps=args.reps, ci=args.ci, seed=args.seed)
        line, = ax.plot(grid, point, label=f"{label} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
        ax.fill_between(grid, bounds[0], bounds[1], alpha=0.2, color=line.get_color())
        rows.append(plotting.final_row(label, runs, reps=max(args.reps, 2000), ci=args.ci, seed=args.seed))
        finals[label] = np.array([r.final for r in runs if r.final is not None])
    if args.hline is not None:
        ax.axhline(args.hline, color="k", linestyle="--", linewidth=1)
    envs = sorted({r["env"] for r in rows if r["env"] != "?"})
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"{args.tag} (IQM, {100 * args.ci:g}% CI)")
    ax.set_title(args.title or " / ".join([*envs, args.tag]))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if args.profile is not None and not any(len(v) for v in finals.values()):
        return _fail("--profile: no run has finished (none has a metrics.json with eval/mean_return)")
    written = [args.out]
    try:  # every output to a temporary file first, then all renamed: a failure leaves none of them
        _save(fig, args.out)
        if any(r["runs"] for r in rows):
            for suffix, text in ((".csv", plotting.csv(rows)), (".md", plotting.markdown(rows, args.ci))):
                _tmp(args.out.with_suffix(suffix)).write_text(text)
                written.append(args.out.with_suffix(suffix))
        if args.profile is not None:
            written.append(_profile(finals, args))
        for path in written:
            os.replace(_tmp(path), path)
    except (OSError, ValueError) as e:
        for path in written:
            with contextlib.suppress(OSError):
                _tmp(path).unlink(missing_ok=True)
        return _fail(f"cannot write {getattr(e, 'filename', None) or args.out}: {e}")
    if any(r["runs"] for r in rows):
        print(plotting.markdown(rows, args.ci), end="")
    print("wrote " + ", ".join(map(str, written)))
    return 0


def _profile(finals: dict[str, np.ndarray], args) -> Path:
    """The fraction of runs whose final return exceeds τ, over τ, with bootstrap CIs (rliable)."""
    from rliable import library, plot_utils

    finals = {k: v for k, v in finals.items() if len(v)}
    values = np.concatenate(list(finals.values()))
    taus = np.linspace(values.min(), values.max(), 101)
    with plotting.seeded(args.seed):
        profiles, cis = library.create_performance_profile({k: v[:, None] for k, v in finals.items()}, taus,
                                                           reps=args.reps, confidence_interval_size=args.ci)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = dict(zip(finals, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, ax=ax, colors=colors,
                                         xlabel=r"final return $\tau$", ylabel=r"fraction of runs with return $> \tau$")
    ax.legend(handles=[Line2D([], [], color=c, label=k) for k, c in colors.items()], loc="lower left")
    fig.tight_layout()
    _save(fig, args.profile)
    return args.profile


def main(argv: list[str] | None = None) -> int:
    try:
        return _plot(argv)
    finally:
        plt.close("all")  # the figures of a call made in process (tests, notebooks)


if __name__ == "__main__":
    sys.exit(main())
