"""Evaluate a saved run: ``python scripts/evaluate.py runs/<run> --episodes 10 [--video DIR]``.

The argument is a checkpoint file or a run directory (its final checkpoint, else its newest). The
policy acts deterministically (the mean or argmax; ``--stochastic`` samples) with the observation
normaliser frozen; episode
``i`` runs on env seed ``--seed + i``. ``--video DIR`` also writes the first ``--video-episodes`` of
these episodes as mp4 files (headless; needs ``pip install -e '.[video]'``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rl_trust.cli import Parser, one_torch_thread
from rl_trust.config import MAX_SEED
from rl_trust.errors import CheckpointError, ConfigError, RenderError
from rl_trust.evaluate import evaluate, load_policy, policy_of, summary


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__)
    parser.add_argument("checkpoint", help="a run directory, or a checkpoint file scripts/train.py wrote")
    parser.add_argument("--episodes", type=int, default=10, help="episodes, run in parallel (default 10)")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean/argmax")
    parser.add_argument("--video", type=Path, default=None, metavar="DIR", help="write mp4s of the episodes here")
    parser.add_argument("--video-episodes", type=int, default=1, help="how many episodes to record (default 1)")
    parser.add_argument("--width", type=int, default=480, help="video width in pixels, MuJoCo envs (default 480)")
    parser.add_argument("--height", type=int, default=480, help="video height in pixels, MuJoCo envs (default 480)")
    args = parser.parse_args(argv)
    one_torch_thread()
    if args.episodes < 1:
        parser.error(f"--episodes={args.episodes} must be >= 1")
    if not 0 <= args.seed <= MAX_SEED:
        parser.error(f"--seed={args.seed} must lie in [0, {MAX_SEED}]")
    if args.video is None:
        given = [f for f, v in (("--video-episodes", args.video_episodes != 1), ("--width", args.width != 480),
                                ("--height", args.height != 480)) if v]
        if given:
            parser.error(f"{given[0]} only applies with --video DIR")
    else:
        if not 1 <= args.video_episodes <= args.episodes:
            parser.error(f"--video-episodes={args.video_episodes} must lie in [1, --episodes={args.episodes}]")
        for name in ("width", "height"):
            value = getattr(args, name)
            if not (16 <= value <= 4096 and value % 2 == 0):
                parser.error(f"--{name}={value} must be an even number of pixels in [16, 4096]")
        if args.video.exists() and not args.video.is_dir():
            parser.error(f"--video {args.video} is a file, not a directory")
    try:
        actor, obs_norm, state = load_policy(args.checkpoint)
    except (CheckpointError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = state["config"]
    env_id, env_kwargs = cfg["env"]["id"], cfg["env"]["kwargs"]
    out = {"env": env_id, "algo": cfg["algo"]["name"]}
    if args.video is None:
        out |= evaluate(actor, obs_norm, env_id, args.episodes, seed=args.seed, env_kwargs=env_kwargs,
                        deterministic=not args.stochastic)
    else:
        from rl_trust import video

        stem = f"{env_id.replace(':', '_').replace('/', '_')}_seed"
        paths = [args.video / f"{stem}{args.seed + i}.mp4" for i in range(args.video_episodes)]
        try:
            video.check_writer()
            video.select_backend(env_id, env_kwargs, args.width, args.height)
            args.video.mkdir(parents=True, exist_ok=True)
            returns, lengths, _ = video.record(policy_of(actor, obs_norm, deterministic=not args.stochastic), env_id,
                                               paths, episodes=args.episodes, seed=args.seed, env_kwargs=env_kwargs,
                                               width=args.width, height=args.height)
        except (RenderError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        out |= summary(returns, lengths) | {"videos": {str(p): float(r) for p, r in zip(paths, returns, strict=False)}}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
