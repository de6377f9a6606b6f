"""Sweeps: Optuna tunes and resumes, trials run side by side (joblib), on Ray and through submitit; a failed
trial is the study's worst, not the sweep's end; the runs of a seed sweep plot as one group."""

import csv
import json
import math
import os
import shutil
import subprocess
import tempfile

import optuna
import pytest
from conftest import ROOT, run_cli
from omegaconf import OmegaConf
from test_bad_input import load_script

from rl_trust import checkpoint

TINY = ["env=Pendulum", "total_steps=256", "env.num_envs=2", "rollout.steps_per_env=64", "critic.minibatch_size=32",
        "eval_episodes=2", "progress=false", "checkpoint.every_steps=0"]


def trials(sweep_dir):
    with open(sweep_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def sweep(tmp_path, *args, name="sweep"):
    keys = {a.split("=")[0] for a in args}
    out = run_cli("-m", *(a for a in TINY if a.split("=")[0] not in keys), *args, f"hydra.sweep.dir={tmp_path / name}",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp_path / name, out


def test_optuna_sweep_finds_a_best_value(tmp_path):
    sweep_dir, _ = sweep(tmp_path, "hparams_search=trpo_optuna", "hydra.sweeper.n_trials=3")
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    rows = trials(sweep_dir)
    assert len(rows) == 3 and all(r["state"] == "complete" for r in rows)
    values = [float(r["eval/mean_return"]) for r in rows]
    assert best.best_value == max(values) and math.isfinite(best.best_value)
    winner = rows[values.index(max(values))]
    assert set(best.best_params) <= set(winner) and float(winner["algo.max_kl"]) == best.best_params["algo.max_kl"]
    assert 0.003 <= best.best_params["algo.max_kl"] <= 0.05  # drawn from the search space
    report = subprocess.run([os.sys.executable, str(ROOT / "scripts" / "sweep_report.py"), str(sweep_dir)],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout[:report.stdout.rindex("}") + 1])
    assert summary["best_value"] == best.best_value and summary["finished"] == 3
    assert set(summary["importances"]) == set(best.best_params)
    assert (sweep_dir / "optimization_history.png").stat().st_size > 5000
    assert (sweep_dir / "param_importances.png").stat().st_size > 5000


def test_a_resumed_study_adds_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["hparams_search=trpo_optuna", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}"]
    sweep(tmp_path, *args, name="first")
    _, second = sweep(tmp_path, *args, name="second")
    assert "Using an existing study" in second.stderr + second.stdout
    study = optuna.load_study(study_name="trpo_Pendulum-v1", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert len({t.params["algo.max_kl"] for t in study.trials}) == 4  # new points, not the first two again


def test_joblib_runs_two_trials_side_by_side_without_oversubscribing(tmp_path):
    sweep_dir, _ = sweep(tmp_path, "hparams_search=trpo_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
                         "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    rows = trials(sweep_dir)
    assert len(rows) == 2 and all(r["state"] == "complete" for r in rows)
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    for row in rows:
        state = checkpoint.load(sweep_dir / row["run"] / "checkpoint.pt")
        assert state["config"]["rollout"]["workers"] == min(share - 1, 1)  # rollout.workers=auto, shared cores


def test_a_failed_trial_is_the_worst_value_and_the_sweep_goes_on(tmp_path):
    # an SGD critic step of 1e30 diverges: its first non-finite update ends that trial (max_nonfinite_updates=1)
    sweep_dir, out = sweep(tmp_path, "hparams_search=trpo_optuna", "hydra/sweeper/sampler=grid",
                           "hydra.sweeper.params=null", "critic.optim=sgd", "max_nonfinite_updates=1",
                           "critic.lr=choice(0.001,1e30)")
    rows = {float(r["critic.lr"]): r for r in trials(sweep_dir)}
    assert rows[1e30]["state"] == "failed" and rows[0.001]["state"] == "complete"
    assert "training stopped" in out.stderr and "critic.lr=1e+30" in rows[1e30]["error"]
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_params["critic.lr"] == 0.001 and math.isfinite(best.best_value)


def test_submitit_local_runs_a_seed_sweep_that_plots_as_one_group(tmp_path):
    sweep_dir, _ = sweep(tmp_path, "seed=0,1", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    rows = trials(sweep_dir)
    assert sorted(r["seed"] for r in rows) == ["0", "1"] and all(r["state"] == "complete" for r in rows)
    out = tmp_path / "seeds.png"
    assert load_script("plot").main(["--group", f"trpo={sweep_dir}", "--tag", "losses/value", "--out", str(out),
                                     "--reps", "100"]) == 0
    table = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [(r["group"], r["runs"]) for r in table] == [("trpo", "2")]


def raylets() -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in ps if "raylet" in line or "gcs_server" in line]


def test_ray_launcher_on_a_local_ray_instance(tmp_path):
    assert not raylets(), "a Ray instance is already running"
    ray_dir = tempfile.mkdtemp(prefix="rlt_ray_", dir="/tmp")  # short: Ray's socket paths have a length limit
    home = tmp_path / "home"
    home.mkdir()
    try:
        env = dict(os.environ, HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
        cmd = [os.sys.executable, str(ROOT / "scripts" / "train.py"), "-m", *TINY, "hparams_search=trpo_optuna",
               "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra/launcher=ray",
               f"+hydra.launcher.ray.init._temp_dir={ray_dir}", "+hydra.launcher.ray.init.num_cpus=2",
               "+hydra.launcher.ray.init.include_dashboard=false", f"hydra.sweep.dir={tmp_path / 'ray'}"]
        out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        rows = trials(tmp_path / "ray")
        assert len(rows) == 2 and all(r["state"] == "complete" for r in rows)
        assert not raylets()  # the sweep's own local Ray ended with it
    finally:
        for line in raylets():
            os.kill(int(line.split()[0]), 9)
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert not os.path.exists(ray_dir)


def test_the_sweep_check_names_a_search_key_that_is_not_a_config_key():
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from rl_trust.errors import ConfigError
    from rl_trust.sweep import check_optuna

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["hparams_search=trpo_optuna"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    check_optuna(cfg)  # the shipped search spaces pass
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.sweeper.params["algo.max_kll"] = "interval(0.01, 0.02)"
    with pytest.raises(ConfigError, match=r"algo.max_kll is not a config key \(did you mean algo.max_kl\?"):
        check_optuna(cfg)


@pytest.mark.parametrize("name", ["trpo_optuna", "ppo_optuna", "kl_penalty_optuna"])
def test_every_shipped_search_space_passes_the_check(name):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from rl_trust.sweep import check_optuna

    algo = name.removesuffix("_optuna")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"algo={algo}", f"hparams_search={name}", "env=Hopper"],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    check_optuna(cfg)
    assert cfg.hydra.sweeper.study_name == f"{algo}_Hopper-v5" and cfg.hydra.sweeper.n_trials == 30
