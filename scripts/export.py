"""Export a trained policy as a standalone file: raw observation in, environment action out.

    python scripts/export.py runs/<run> --format onnx --out policy.onnx
    python scripts/export.py runs/<run>/checkpoint.pt --format torchscript --out policy.pt
    python scripts/export.py runs/<run> --format torch_export --out policy.pt2

The file holds the deterministic policy (the mean, or the argmax for discrete actions) with the
observation normaliser frozen and the action clip folded in, for any batch size. After writing it,
the file is run on ``--check`` observations and compared with rl_trust's own evaluation policy; the
largest difference is printed and a difference above ``--atol`` is an error (the file is removed).
ONNX needs ``pip install -e '.[export]'`` (onnx, onnxscript; onnxruntime for the check).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from rl_trust.cli import Parser, one_torch_thread
from rl_trust.config import MAX_SEED
from rl_trust.errors import CheckpointError, ConfigError
from rl_trust.export import MAX_BATCH


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__)
    parser.add_argument("checkpoint", help="a run directory, or a checkpoint file scripts/train.py wrote")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript", "torch_export"))
    parser.add_argument("--out", type=Path, required=True, help="the file to write")
    parser.add_argument("--check", type=int, default=4096, help="observations to compare on (default 4096; 0: none)")
    parser.add_argument("--atol", type=float, default=1e-5, help="largest allowed action difference (default 1e-5)")
    parser.add_argument("--episodes", type=int, default=0,
                        help="also run this many episodes with the file and with rl_trust's policy (default 0)")
    parser.add_argument("--seed", type=int, default=12345, help="env seed of the first of --episodes")
    args = parser.parse_args(argv)
    one_torch_thread()
    if not 0 <= args.check <= MAX_BATCH:
        parser.error(f"--check={args.check} must lie in [0, {MAX_BATCH}] (the largest batch an exported file takes)")
    if not args.atol > 0:
        parser.error(f"--atol={args.atol} must be > 0")
    if args.episodes < 0:
        parser.error(f"--episodes={args.episodes} must be >= 0")
    if not 0 <= args.seed <= MAX_SEED:
        parser.error(f"--seed={args.seed} must lie in [0, {MAX_SEED}]")
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a directory: give a file name")
    if not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: the directory {args.out.parent} does not exist")

    from rl_trust import export

    try:
        policy, meta, actor, obs_norm = export.from_checkpoint(args.checkpoint)
        path = export.export(policy, args.format, args.out, meta)
    except (CheckpointError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    report = {"file": str(path), "format": args.format, "bytes": path.stat().st_size} | meta
    if args.check:
        try:
            diff = export.max_difference(export.load(path, args.format), policy, actor, obs_norm, args.check)
        except Exception as e:  # noqa: BLE001 - a missing runtime, or one that cannot run the file
            path.unlink()
            why = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            print(f"error: the exported file could not be checked, so it was removed: {why}", file=sys.stderr)
            return 2
        report["check"] = {"observations": args.check, "max_abs_diff": diff}
        if not diff <= args.atol:
            path.unlink()
            print(f"error: the exported policy differs from rl_trust's by {diff:.3g} > --atol={args.atol:g} "
                  f"on {args.check} observations; {path} removed", file=sys.stderr)
            return 1
    if args.episodes:
        from rl_trust.evaluate import episode_returns, policy_of

        env = {"env_id": meta["env_id"], "episodes": args.episodes, "seed": args.seed, "env_kwargs": meta["env_kwargs"]}
        ours, _ = episode_returns(policy_of(actor, obs_norm), **env)
        theirs, _ = episode_returns(export.load(path, args.format), **env)
        report["episodes"] = {"seeds": list(range(args.seed, args.seed + args.episodes)),
                              "rl_trust_returns": ours.tolist(), "file_returns": theirs.tolist(),
                              "rl_trust_mean": float(ours.mean()), "file_mean": float(theirs.mean()),
                              "max_abs_diff": float(np.abs(ours - theirs).max())}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
