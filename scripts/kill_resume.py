"""Kill training with SIGKILL at random moments, resume it, repeat; check that nothing is lost or corrupted.

    python scripts/kill_resume.py --kills 5 --out /tmp/kill_resume            # a short Pendulum run
    python scripts/kill_resume.py --kills 3 --max-delay 60 -- env=HalfCheetah total_steps=200000

Runs the configuration once without interruption (the reference), then again killing the learner
(``kill -9``) ``--kills`` times, each at a random moment up to ``--max-delay`` seconds after its first
checkpoint (after its start, or its resume), each time resuming with ``resume=RUN_DIR``. After every kill
it checks: each checkpoint file loads (checksum), no worker process outlived the learner, at most
one checkpoint interval of logged steps was lost. At the end: metrics.json (apart from wall-clock
time) and the final checkpoint (networks, optimizer states, generators, normalisers, envs) equal
the reference's bit for bit. Prints a JSON summary (fewer kills than asked when the run finished
first: give it more steps); exit 0 when every check passed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl_trust import checkpoint
from rl_trust.cli import Parser
from rl_trust.train import WALL_CLOCK_KEYS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["env=Pendulum", "algo=ppo", "env.num_envs=4", "rollout.steps_per_env=64", "total_steps=16384",
           "checkpoint.every_steps=1024", "checkpoint.keep=2", "rollout.workers=1", "eval_episodes=2"]


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def newest_step(run_dir: Path) -> int:
    files = checkpoint.step_files(run_dir)
    return files[-1][0] if files else -1


def last_logged_step(run_dir: Path) -> int:
    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # the purge after a resume is expected
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    return max(steps, default=0)


def train(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), "progress=false", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--max-delay", type=float, default=2.0, help="seconds (default 2)")
    p.add_argument("--seed", type=int, default=0, help="of the kill times")
    p.add_argument("--out", type=Path, default=Path("kill_resume"))
    p.add_argument("overrides", nargs="*", help="train.py overrides (default: a short Pendulum PPO run)")
    args = p.parse_args(argv)
    if args.kills < 1:
        p.error(f"--kills={args.kills} must be >= 1")
    if args.max_delay <= 0:
        p.error(f"--max-delay={args.max_delay} must be > 0")
    overrides = args.overrides or DEFAULT
    every = next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("checkpoint.every_steps=")), 100_000)
    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    reference, chaos = (args.out / "reference").resolve(), (args.out / "killed").resolve()
    proc = train([*overrides, f"hydra.run.dir={reference}"])
    if proc.wait() != 0:
        print(f"error: the reference run failed: {proc.stderr.read().strip()}", file=sys.stderr)
        return 1

    failures, kills, resumes, log = [], 0, 0, []
    proc = train([*overrides, f"hydra.run.dir={chaos}"])
    while True:
        started = time.monotonic()
        resumed_at = newest_step(chaos)
        while newest_step(chaos) <= resumed_at and proc.poll() is None:
            time.sleep(0.05)  # each kill waits for the run to make progress (a new checkpoint)
        deadline = time.monotonic() + rng.uniform(0, args.max_delay)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is not None or kills == args.kills:
            break
        workers = children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        time.sleep(2.0)  # the kernel's parent-death signal needs no time; reaping and /proc might
        survivors = [w for w in workers if alive(w)]
        states = [(s, path) for s, path in checkpoint.step_files(chaos)]
        corrupt = []
        for _, path in states:
            try:
                checkpoint.load(path)
            except Exception as e:  # noqa: BLE001 - any failure to load is what this script looks for
                corrupt.append(str(e))
        latest = states[-1][0] if states else 0
        lost = last_logged_step(chaos) - latest
        log.append({"kill": kills, "after_s": round(time.monotonic() - started, 2), "latest_checkpoint": latest,
                    "steps_lost": lost, "workers_left": survivors, "corrupt": corrupt})
        if survivors:
            failures.append(f"kill {kills}: worker processes {survivors} outlived the learner")
            for w in survivors:
                os.kill(w, signal.SIGKILL)
        if corrupt:
            failures.append(f"kill {kills}: {corrupt}")
        if lost > every:
            failures.append(f"kill {kills}: {lost} logged steps lost, more than one interval ({every})")
        if (chaos / "metrics.json").exists():  # killed while shutting down: the run had finished
            break
        proc = train([f"resume={chaos}"])
        resumes += 1
    code = proc.wait()
    finished = (chaos / "metrics.json").exists()
    if not finished:
        failures.append(f"the resumed run failed (exit {code}): {proc.stderr.read().strip()}")
    else:
        ref_metrics = json.loads((reference / "metrics.json").read_text())
        new_metrics = json.loads((chaos / "metrics.json").read_text())
        strip = lambda m: {k: v for k, v in m.items() if k not in WALL_CLOCK_KEYS}  # noqa: E731
        if strip(ref_metrics) != strip(new_metrics):
            failures.append(f"metrics differ: {strip(ref_metrics)} != {strip(new_metrics)}")
        diff = checkpoint.differences(checkpoint.load(reference / checkpoint.FINAL),
                                      checkpoint.load(chaos / checkpoint.FINAL))
        if diff:
            failures.append(f"final checkpoints differ at {diff[:5]}")
        leftovers = [str(p) for p in chaos.rglob(".*.tmp-*")]
        if leftovers:
            failures.append(f"stray temporary files: {leftovers}")
    summary = {"kills": kills, "kills_asked": args.kills, "resumes": resumes, "overrides": overrides, "events": log,
               "identical_final_state": finished and not any("differ" in f for f in failures),
               "failures": failures}
    print(json.dumps(summary, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
