"""Learning tests: each updater must solve Pendulum-v1 (random policy: about -1200; solved: above -200)."""

import pytest
from conftest import make_cfg

from rl_trust.train import run

THRESHOLD = -400.0


def test_ppo_learns_pendulum(tmp_path):
    metrics = run(make_cfg("algo=ppo", "env=Pendulum", "total_steps=120000", "progress=false",
                           "checkpoint.every_steps=0"), tmp_path)
    assert metrics["eval/mean_return"] > THRESHOLD, metrics


def test_trpo_learns_pendulum(tmp_path):
    metrics = run(make_cfg("algo=trpo", "env=Pendulum", "total_steps=120000", "progress=false",
                           "checkpoint.every_steps=0"), tmp_path)
    assert metrics["eval/mean_return"] > THRESHOLD, metrics


def test_kl_penalty_learns_pendulum(tmp_path):
    metrics = run(make_cfg("algo=kl_penalty", "env=Pendulum", "total_steps=120000", "progress=false",
                           "checkpoint.every_steps=0"), tmp_path)
    assert metrics["eval/mean_return"] > THRESHOLD, metrics


@pytest.mark.parametrize("kind", ["kl", pytest.param("w2", marks=pytest.mark.slow),
                                  pytest.param("frobenius", marks=pytest.mark.slow)])
def test_projection_learns_pendulum(tmp_path, kind):
    metrics = run(make_cfg("algo=projection", f"algo.projection={kind}", "env=Pendulum", "total_steps=120000",
                           "progress=false", "checkpoint.every_steps=0"), tmp_path)
    assert metrics["eval/mean_return"] > THRESHOLD, metrics
