import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, ROOT, make_cfg, run_cli, tiny
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl_trust import checkpoint
from rl_trust.config import validate
from rl_trust.errors import ConfigError
from rl_trust.train import run
from rl_trust.workers import ParallelEnvs

ALGOS = sorted(p.stem for p in (CONFIGS / "algo").glob("*.yaml") if p.stem != "custom")  # custom: test_extending
ENVS = sorted(p.stem for p in (CONFIGS / "env").glob("*.yaml"))


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("env", ENVS)
def test_every_config_group_composes_and_validates(algo, env):
    cfg = make_cfg(f"algo={algo}", f"env={env}")
    validate(cfg)
    assert cfg.algo.name == algo


def test_tuned_files_apply_to_their_task_only(tmp_path):
    """A tuned file names its task; another env.id with it is an error naming the key, and ~tuned gives
    the generic defaults."""
    tuned = make_cfg("algo=trpo", "env=HalfCheetah")
    assert tuned.tuned.file == "trpo_HalfCheetah" and tuned.env.num_envs == 16
    generic = make_cfg("algo=trpo", "env=HalfCheetah", "env.id=Swimmer-v5", "~tuned")
    validate(generic)
    assert generic.tuned.file is None and generic.env.num_envs == 8 and generic.policy.log_std_init == 0.0
    assert make_cfg("algo=trpo", "env=Pendulum").tuned.file is None


@pytest.mark.parametrize("algo", ["trpo", "ppo", "kl_penalty"])
def test_every_benchmark_cell_has_a_tuned_file_for_its_task(algo):
    for task in ("HalfCheetah", "Hopper", "Walker2d", "Ant", "Humanoid"):
        cfg = make_cfg(f"algo={algo}", f"env={task}")
        validate(cfg)
        assert (cfg.tuned.file, cfg.tuned.env_id) == (f"{algo}_{task}", f"{task}-v5")
        text = (ROOT / "configs" / "tuned" / f"{algo}_{task}.yaml").read_text()
        comment = " ".join(line for line in text.splitlines()[1:] if line.startswith("#"))
        assert f"on {task}" in comment and len(comment) > 100  # where its values come from



@pytest.mark.parametrize("projection", ["kl", "w2", "frobenius"])
def test_the_projection_updater_has_its_tuned_files_for_every_type(projection):
    """docs/benchmarks.md's projection runs: HalfCheetah and Hopper files, the same for each projection type."""
    for task, check in (("HalfCheetah", lambda c: c.policy.log_std_init == -1.0),
                        ("Hopper", lambda c: (c.env.num_envs, c.rollout.steps_per_env, c.critic.optim) ==
                         (2, 1024, "adam"))):
        cfg = make_cfg("algo=projection", f"algo.projection={projection}", f"env={task}")
        validate(cfg)
        assert cfg.tuned.file == f"projection_{task}" and cfg.algo.projection == projection and check(cfg)
    assert make_cfg("algo=projection", "env=Walker2d").tuned.file is None

def test_misspelt_key_fails_at_compose_time():
    with pytest.raises(Exception, match="lrr"):
        make_cfg("algo.lrr=0.1")


@pytest.mark.parametrize("overrides, key", [
    (["total_steps=0"], "total_steps"),
    (["env.num_envs=-1"], "env.num_envs"),
    (["rollout.steps_per_env=0"], "rollout.steps_per_env"),
    (["algo=ppo", "algo.minibatch_size=100"], "algo.minibatch_size"),
    (["gamma=1.5"], "gamma"),
    (["device=tpu"], "device"),
    (["policy.activation=swish"], "policy.activation"),
    (["critic.optim=adamw_typo"], "critic.optim"),
    (["critic.lr=-1"], "critic.lr"),
    (["critic.optim=adam", "+critic.optim_kwargs.betas=[2,0]"], "critic.optim"),
    (["critic.minibatch_size=100000"], "critic.minibatch_size"),
    (["algo=trpo", "algo.max_kl=0"], "algo.max_kl"),
    (["algo=trpo", "algo.cg_iters=0"], "algo.cg_iters"),
    (["algo=trpo", "algo.backtrack_coeff=1.5"], "algo.backtrack_coeff"),
    (["algo=trpo", "algo.cg_damping=-0.1"], "algo.cg_damping"),
    (["algo=trpo", "algo.fvp_subsample=0"], "algo.fvp_subsample"),
    (["algo=kl_penalty", "algo.target_kl=0"], "algo.target_kl"),
    (["rollout.workers=8"], "rollout.workers"),
    (["rollout.workers=-1"], "rollout.workers"),
    (["rollout.workers=many"], "rollout.workers"),
    (["env.num_envs=4", "rollout.steps_per_env=10", "critic.minibatch_size=16"], "critic.minibatch_size"),
    (["env=HalfCheetah", "env.id=Swimmer-v5"], "env.id"),
    (["critic.lr=0"], "critic.lr"),
    (["seed=-1"], "seed"),
    (["policy.log_std_init=nan"], "policy.log_std_init"),
    (["algo=kl_penalty", "algo.beta=0", "algo.beta_min=0"], "algo.beta"),
    (["algo=kl_penalty", "algo.beta=-1"], "algo.beta"),
    (["algo=kl_penalty", "algo.beta_min=10", "algo.beta_max=1"], "algo.beta_min"),
    (["rollout.env_groups=0"], "rollout.env_groups"),
    (["env.num_envs=2", "rollout.env_groups=3"], "rollout.env_groups"),
    (["rollout.env_groups=two"], "rollout.env_groups"),
    (["rollout.learner_envs=-1"], "rollout.learner_envs"),
    (["env.num_envs=4", "rollout.learner_envs=4"], "rollout.learner_envs"),
    (["rollout.learner_envs=half"], "rollout.learner_envs"),
    (["env.num_envs=4", "rollout.workers=2", "rollout.learner_envs=3"], "rollout.learner_envs"),
])
def test_bad_values_raise_config_error_naming_the_key(overrides, key, tmp_path):
    cfg = make_cfg("env=Pendulum", *overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(cfg, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_bad_input_one_line_error_nonzero_exit_and_no_run_dir(tmp_path):
    proc = run_cli("algo=ppo", "env=Pendulum", "algo.minibatch_size=100", cwd=tmp_path)
    assert proc.returncode != 0
    assert "algo.minibatch_size=100" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    proc = run_cli("env.id=NoSuchEnv-v0", cwd=tmp_path)
    assert proc.returncode != 0 and "env.id='NoSuchEnv-v0'" in proc.stderr
    proc = run_cli("algo=sarsa", cwd=tmp_path)
    assert proc.returncode != 0 and "ppo" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("env.id=Swimmer-v5", cwd=tmp_path)  # under HalfCheetah's tuned file
    assert proc.returncode == 2 and "env.id='Swimmer-v5'" in proc.stderr and "~tuned" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cfg_job_shows_the_tuned_file_that_applied(tmp_path):
    proc = run_cli("--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0 and "file: trpo_HalfCheetah" in proc.stdout and "env_id: HalfCheetah-v5" in proc.stdout
    proc = run_cli("--cfg", "job", "env.id=Swimmer-v5", "~tuned", cwd=tmp_path)
    assert proc.returncode == 0 and "file: null" in proc.stdout and "id: Swimmer-v5" in proc.stdout


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("env", ENVS)
def test_smoke_run_each_env_and_algo(env, algo, tmp_path):
    if algo == "projection" and env == "CartPole":  # Gaussian projections: a discrete env is refused
        with pytest.raises(ConfigError, match="algo=projection projects Gaussian policies"):
            run(make_cfg(f"env={env}", *tiny(algo=algo)), tmp_path)
        return
    metrics = run(make_cfg(f"env={env}", *tiny(algo=algo)), tmp_path)
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics, nan_ok=True)
    assert metrics["train/global_step"] == 128


def test_tensorboard_tags_and_steps(tmp_path):
    run(make_cfg("env=Pendulum", *tiny("total_steps=600", "rollout.steps_per_env=100", "algo.minibatch_size=40",
                                       "critic.minibatch_size=40", algo="ppo")), tmp_path)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {"charts/episodic_return", "charts/episodic_length", "losses/policy", "losses/value",
                "losses/entropy", "losses/approx_kl", "losses/clipfrac", "losses/explained_variance", "time/sps"}
    assert expected <= tags, expected - tags
    assert [e.step for e in acc.Scalars("losses/policy")] == [200, 400, 600]
    assert "config/text_summary" in acc.Tags()["tensors"]


@pytest.mark.parametrize("algo", ALGOS)
def test_same_seed_same_metrics(algo, tmp_path):
    short = ("total_steps=400", "rollout.steps_per_env=100", "critic.minibatch_size=40")
    short += () if algo == "trpo" else ("algo.minibatch_size=40",)
    cfg = make_cfg("env=Pendulum", *tiny(*short, algo=algo))
    a = run(cfg, tmp_path / "a")
    b = run(cfg, tmp_path / "b")
    c = run(make_cfg("env=Pendulum", *tiny(*short, "seed=1", algo=algo)), tmp_path / "c")
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith(("train/time", "train/sps"))}
    assert all(v == v for v in a.values())  # no NaN: every metric is compared
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


@pytest.mark.parametrize("algo", ["trpo", "ppo"])
def test_critic_overlapping_the_rollout_changes_nothing(algo, tmp_path, monkeypatch):
    """The critic's update interleaved with the next rollout (worker processes) gives the same run as
    the sequential loop: same metrics, same final networks and optimizer state."""
    background_steps = []
    step_wait = ParallelEnvs.step_wait

    def counting_step_wait(self, idle=None, group=None):
        if idle is None:
            return step_wait(self, None, group)

        def counted() -> bool:
            more = idle()
            background_steps.append(more)
            return more

        return step_wait(self, counted, group)

    monkeypatch.setattr(ParallelEnvs, "step_wait", counting_step_wait)
    short = ("total_steps=1200", "env.num_envs=4", "rollout.steps_per_env=100", "critic.minibatch_size=20")
    short += () if algo == "trpo" else ("algo.minibatch_size=40",)
    runs = {"sequential": ("rollout.workers=0",), "overlap": ("rollout.workers=1", "rollout.overlap_critic=true"),
            "workers, no overlap": ("rollout.workers=1", "rollout.overlap_critic=false"),
            "overlap, 2 workers": ("rollout.workers=2",),
            "learner steps 3 of 4": ("rollout.workers=1", "rollout.learner_envs=3")}
    results = {name: run(make_cfg("env=Pendulum", *tiny(*short, *extra, algo=algo)), tmp_path / str(i))
               for i, (name, extra) in enumerate(runs.items())}
    assert sum(background_steps) > 0  # critic steps did run while the workers stepped
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith(("train/time", "train/sps"))}
    assert all(strip(m) == strip(results["sequential"]) for m in results.values())
    ckpts = [checkpoint.load(tmp_path / str(i) / "checkpoint.pt") for i in range(len(runs))]
    reference = {part: _flat(ckpts[0][part]) for part in ("actor", "critic")}
    assert reference["critic"]  # the networks and the optimizer state are compared
    for other in ckpts[1:]:
        for part, tensors in reference.items():
            theirs = _flat(other[part])
            assert theirs.keys() == tensors.keys()
            for key, value in tensors.items():
                assert torch.equal(value, theirs[key]), (part, key)


def _flat(state, prefix=""):
    """Every tensor of a nested state dict, keyed by its path."""
    out = {}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list | tuple) else ()
    for k, v in items:
        if isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
        elif isinstance(v, dict | list | tuple):
            out |= _flat(v, f"{prefix}{k}.")
    return out


def test_checkpoint_evaluates_with_script(tmp_path):
    run(make_cfg("env=CartPole", *tiny()), tmp_path)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(tmp_path / "checkpoint.pt"),
                           "--episodes", "3"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["env"] == "CartPole-v1" and out["eval/episodes"] == 3 and out["eval/mean_return"] > 0


def test_cli_run_and_multirun(tmp_path):
    proc = run_cli("env=CartPole", *tiny(), "hydra.run.dir=out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "metrics.json").exists()
    proc = run_cli("-m", "env=CartPole", *tiny(), "seed=0,1", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list(Path(tmp_path, "sweep").glob("*/metrics.json"))) == 2


def test_numpy_blas_runs_one_thread_during_a_run_whatever_torch_threads(tmp_path, monkeypatch):
    from threadpoolctl import threadpool_info

    from rl_trust.rollout import Collector

    seen, collect = [], Collector.collect

    def recording_collect(self, *args, **kwargs):
        seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
        return collect(self, *args, **kwargs)

    monkeypatch.setattr(Collector, "collect", recording_collect)
    before = torch.get_num_threads()
    try:
        run(make_cfg("env=Pendulum", *tiny("total_steps=400", "env.num_envs=2", "rollout.steps_per_env=100",
                                           "critic.minibatch_size=40", "torch_threads=2")), tmp_path)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}  # numpy's BLAS was found and held at one thread


def test_total_steps_not_a_multiple_of_the_batch_is_said(tmp_path, capsys):
    metrics = run(make_cfg("env=Pendulum", *tiny("total_steps=150")), tmp_path)
    assert metrics["train/global_step"] == 128
    assert "total_steps=150 is not a multiple of the batch" in capsys.readouterr().err


def test_each_run_shows_its_hyperparameters_and_result_in_hparams(tmp_path):
    from rl_trust.train import hyperparameters

    cfg = make_cfg("env=Pendulum", *tiny("total_steps=128", algo="ppo"))
    metrics = run(cfg, tmp_path)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")  # in the run's own directory
    assert [(e.step, e.value) for e in acc.Scalars("eval/mean_return")] == [(128, pytest.approx(
        metrics["eval/mean_return"]))]
    hp = hyperparameters(cfg)
    assert hp["algo.lr"] == cfg.algo.lr and hp["policy.hidden"] == "[64, 64]" and "progress" not in hp
