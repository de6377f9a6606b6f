from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rl_trust.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
register_configs()


def make_cfg(*overrides: str):
    """Compose the project's Hydra config with ``overrides`` (as the command line would)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def tiny(*overrides: str, algo: str = "trpo") -> list[str]:
    """Overrides for a run of a few hundred steps with ``algo``."""
    minibatch = [] if algo == "trpo" else ["algo.minibatch_size=16"]
    # In process unless a test asks for workers (the default, auto, starts a worker process per run).
    workers = [] if any(o.startswith("rollout.workers=") for o in overrides) else ["rollout.workers=0"]
    return [f"algo={algo}", "env.num_envs=2", "rollout.steps_per_env=32", "total_steps=128", "eval_episodes=2",
            "progress=false", "critic.minibatch_size=16", *minibatch, *workers, *overrides]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def cfg_factory():
    return make_cfg


@pytest.fixture(scope="session")
def video_run(tmp_path_factory):
    """A finished tiny Pendulum run that recorded videos (every 64 steps, 20-step episodes): its directory."""
    from rl_trust.train import run

    out = tmp_path_factory.mktemp("video_run") / "run"
    run(make_cfg("env=Pendulum", *tiny("total_steps=192", "video.every_steps=64", "video.length=20")), out)
    return out
