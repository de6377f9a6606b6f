"""Evaluate a saved run: ``python scripts/evaluate.py runs/<run> --episodes 10``.

The argument is a checkpoint file or a run directory (its final checkpoint, else its newest).
"""

from __future__ import annotations

import json
import sys

from rl_trust.cli import Parser
from rl_trust.config import MAX_SEED
from rl_trust.errors import CheckpointError, ConfigError
from rl_trust.evaluate import evaluate, load_policy


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__)
    parser.add_argument("checkpoint", help="a run directory, or a checkpoint file scripts/train.py wrote")
    parser.add_argument("--episodes", type=int, default=10, help="episodes, run in parallel (default 10)")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean/argmax")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes={args.episodes} must be >= 1")
    if not 0 <= args.seed <= MAX_SEED:
        parser.error(f"--seed={args.seed} must lie in [0, {MAX_SEED}]")
    try:
        actor, obs_norm, state = load_policy(args.checkpoint)
    except (CheckpointError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = state["config"]
    result = evaluate(actor, obs_norm, cfg["env"]["id"], args.episodes, seed=args.seed,
                      env_kwargs=cfg["env"]["kwargs"], deterministic=not args.stochastic)
    print(json.dumps({"env": cfg["env"]["id"], "algo": cfg["algo"]["name"], **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
