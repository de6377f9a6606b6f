"""Learning tests: each updater must solve Pendulum-v1 (random policy: about -1200; solved: above -200)."""

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
