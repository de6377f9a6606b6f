"""Runs on rollout.backend=ray: the local run exactly, learning Pendulum; a dead actor is one line, or with
ray.max_restarts a restart and its segment collected again; a run's own local Ray ends with it."""

import json
import os
import re
import subprocess
import sys

from conftest import ROOT, make_cfg
from test_ray_sampler import ray_processes
from test_resume import scalars

from rl_trust.train import WALL_CLOCK_KEYS, run


def test_a_run_on_ray_is_the_local_run_and_learns_pendulum(tmp_path):
    """The same seed gives the same run on either backend (metrics.json but wall-clock time), learning
    Pendulum to the learning tests' threshold; the run's own local Ray is gone at its end."""
    from test_learning import THRESHOLD

    assert not ray_processes()
    common = ("algo=trpo", "env=Pendulum", "total_steps=120000", "progress=false", "checkpoint.every_steps=0")
    on_ray = run(make_cfg(*common, "rollout.backend=ray", "rollout.workers=2"), tmp_path / "ray")
    assert not ray_processes()
    local = run(make_cfg(*common, "rollout.workers=0"), tmp_path / "local")
    assert on_ray["eval/mean_return"] > THRESHOLD, on_ray
    assert {k: v for k, v in on_ray.items() if k not in WALL_CLOCK_KEYS} == \
        {k: v for k, v in local.items() if k not in WALL_CLOCK_KEYS}
    assert {v for _, v in scalars(tmp_path / "ray")["rollout/actor_restarts"]} == {0.0}


def _train(tmp_path, *overrides):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
               RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "env=Pendulum",
                           "env.id=faulty_envs:Dying-v0",
                           "env.num_envs=4", "rollout.steps_per_env=64", "total_steps=1024", "eval_episodes=1",
                           "progress=false", "rollout.backend=ray", "rollout.workers=2", f"hydra.run.dir={tmp_path}",
                           *overrides], capture_output=True, text=True, env=env, timeout=600)


def test_a_dead_actor_is_one_line_and_no_ray_is_left(tmp_path):
    assert not ray_processes()
    proc = _train(tmp_path / "run", "+env.kwargs.die_after=100")
    assert proc.returncode not in (0, None)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert re.search(r"rollout actor (0 \(envs 0-1|1 \(envs 2-3), node \S+\) died", errors[0]), errors[0]
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not ray_processes()


def test_a_restarted_actor_collects_its_segment_again(tmp_path):
    marker = tmp_path / "died"
    proc = _train(tmp_path / "run", "+env.kwargs.die_after=100", f"+env.kwargs.marker={marker}", "ray.max_restarts=1")
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()  # an actor did die
    restarts = [v for _, v in scalars(tmp_path / "run")["rollout/actor_restarts"]]
    assert restarts[0] == 0 and restarts[-1] == 1, restarts
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train/global_step"] == 1024
    assert not ray_processes()


def test_a_local_run_resumed_on_ray_is_the_uninterrupted_run(tmp_path):
    """The collector's state is per env, so a checkpoint of a local run continues on Ray bit for bit."""
    from test_resume import BATCH, deterministic_metrics, final_state, interrupt_at, resumable

    from rl_trust import checkpoint

    reference = tmp_path / "reference"
    run(resumable("ppo", "rollout.workers=1"), reference)
    resumed = interrupt_at(reference, 2 * BATCH, tmp_path / "resumed")
    state, _, _ = checkpoint.load_latest(resumed)
    run(resumable("ppo", "rollout.backend=ray", "rollout.workers=2"), resumed, resume=state)
    assert deterministic_metrics(resumed) == deterministic_metrics(reference)
    on_ray = final_state(resumed)
    assert on_ray["collector"].pop("actor_restarts") == 0  # the Ray sampler's own counter
    differences = checkpoint.differences(on_ray, final_state(reference))
    assert differences and all(d.startswith(("state.config.rollout.backend", "state.config.rollout.workers"))
                               for d in differences), differences
    assert not ray_processes()
