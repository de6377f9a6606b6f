"""Plot a TensorBoard scalar across seeds: mean and min-max band over the run directories given.

    python scripts/plot.py bench_runs/trpo_HalfCheetah --tag charts/episodic_return --out curve.png
    python scripts/plot.py A_runs B_runs --label trpo --label ppo --out compare.png

Each positional argument is a run directory or a sweep directory whose subdirectories are runs;
each becomes one curve (its runs are the seeds). Curves are resampled onto a common step grid.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # noqa: E402

from rl_trust.cli import Parser  # noqa: E402


def run_dirs(path: Path) -> list[Path]:
    if list(path.glob("events.out.tfevents.*")):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and list(p.glob("events.out.tfevents.*")))


def unreadable(run: Path) -> list[Path]:
    """Events files in ``run`` with no readable record (every file TensorBoard writes starts with one)."""
    bad = []
    for path in run.glob("events.out.tfevents.*"):
        try:
            if next(iter(EventFileLoader(str(path)).Load()), None) is None:
                bad.append(path)
        except Exception:  # noqa: BLE001 - any failure to read is what is asked
            bad.append(path)
    return bad


def load(run: Path, tag: str) -> tuple[np.ndarray, np.ndarray] | None:
    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # a resumed run's purge is expected, not news
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        return None
    events = acc.Scalars(tag)
    return np.array([e.step for e in events]), np.array([e.value for e in events])


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < window:
        return y
    kernel = np.ones(window) / window
    return np.convolve(np.pad(y, (window - 1, 0), mode="edge"), kernel, mode="valid")


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--tag", default="charts/episodic_return")
    p.add_argument("--label", action="append", default=None, help="one per path (default: the path's name)")
    p.add_argument("--hline", type=float, default=None, help="a horizontal reference line (e.g. max_kl)")
    p.add_argument("--smooth", type=int, default=5, help="moving-average window in logged points")
    p.add_argument("--title", default=None)
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    args = p.parse_args(argv)
    labels = args.label or [path.name for path in args.paths]
    if len(labels) != len(args.paths):
        p.error(f"--label given {len(labels)} times for {len(args.paths)} paths")
    if args.smooth < 1:
        p.error(f"--smooth={args.smooth} must be >= 1")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    formats = fig.canvas.get_supported_filetypes()
    if args.out.is_dir():
        p.error(f"--out {args.out} is a directory: give a file name, e.g. {args.out / 'curve.png'}")
    if args.out.suffix.lstrip(".").lower() not in formats:
        p.error(f"--out {args.out}: the format must be one of {', '.join(sorted(formats))} (from its suffix)")
    for path, label in zip(args.paths, labels, strict=True):
        if not path.is_dir():
            print(f"error: {path} is not a directory", file=sys.stderr)
            return 2
        runs = run_dirs(path)
        if not runs:
            print(f"error: {path} holds no run (no TensorBoard events file in it or its subdirectories)",
                  file=sys.stderr)
            return 2
        bad = [f for r in runs for f in unreadable(r)]
        if bad:
            print(f"error: {bad[0]} cannot be read (corrupt, or not a TensorBoard events file)", file=sys.stderr)
            return 2
        curves = [c for c in (load(r, args.tag) for r in runs) if c is not None]
        if not curves:
            print(f"error: no run under {path} has the tag {args.tag!r}", file=sys.stderr)
            return 2
        grid = np.linspace(0, min(c[0][-1] for c in curves), 200)
        ys = np.stack([np.interp(grid, s, smooth(v, args.smooth)) for s, v in curves])
        ax.plot(grid, ys.mean(0), label=f"{label} ({len(curves)} seeds)")
        ax.fill_between(grid, ys.min(0), ys.max(0), alpha=0.2)
    if args.hline is not None:
        ax.axhline(args.hline, color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(args.tag)
    ax.set_title(args.title or args.tag)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110)
    except (OSError, ValueError) as e:
        print(f"error: cannot write {args.out}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
