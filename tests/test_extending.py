"""A user's own updater (docs/extending.md): the shipped example trains through scripts/train.py with
algo=custom, and its settings are checked against its Config before anything is written."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


def train(tmp_path, *overrides):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "env=Pendulum", "algo=custom",
                           "algo._target_=kl_scaled_pg.KLScaledPolicyGradient", "progress=false",
                           "rollout.workers=0", f"hydra.run.dir={tmp_path / 'run'}", *overrides],
                          capture_output=True, text=True, env=env, timeout=600)


def test_the_example_updater_trains(tmp_path):
    proc = train(tmp_path, "+algo.max_kl=0.02", "total_steps=40960")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["eval/mean_return"] > -1000, metrics  # a random policy: about -1200 (test_learning.py)
    config = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert "kl_scaled_pg.KLScaledPolicyGradient" in config and "max_kl: 0.02" in config


@pytest.mark.parametrize("override, expected", [
    ("+algo.max_kll=0.1", "algo.max_kll is not a setting of kl_scaled_pg.KLScaledPolicyGradient (did you mean "
                          "algo.max_kl?"),
    ("+algo.max_kl=abc", "algo.max_kl='abc' is invalid for kl_scaled_pg.KLScaledPolicyGradient"),
    ("+algo.max_kl=0", "algo.max_kl=0.0 is invalid: must be > 0"),  # the class's own validate
    ("+algo.backtrack_coeff=1.5", "algo.backtrack_coeff=1.5 is invalid: must lie in (0, 1)"),
])
def test_its_settings_are_checked_before_the_run(tmp_path, override, expected):
    proc = train(tmp_path, override)
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(errors) == 1 and errors[0].startswith("error:"), proc.stderr
    assert expected in errors[0], errors[0]
    assert not (tmp_path / "run").exists()
