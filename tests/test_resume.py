"""Checkpoints and resume: a run interrupted at any checkpoint and resumed ends bit-identical to one
that never was (metrics apart from wall-clock time, networks, optimizer and every other state)."""

import json
import os
import shutil

import pytest
import torch
from conftest import make_cfg, run_cli, tiny
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl_trust import checkpoint
from rl_trust.errors import ConfigError
from rl_trust.runs import resume_config
from rl_trust.train import MACHINE_FILE, WALL_CLOCK_KEYS, machine, run

BATCH = 2 * 32  # tiny(): env.num_envs=2, rollout.steps_per_env=32


def resumable(algo: str, *overrides: str):
    """Six iterations, a checkpoint every two, all kept."""
    return make_cfg(*tiny(f"total_steps={6 * BATCH}", f"checkpoint.every_steps={2 * BATCH}", "checkpoint.keep=10",
                          "env=Pendulum", *overrides, algo=algo))


def assert_same(a, b):
    """Equal, exactly, to the last bit: networks, optimizer states, generators, normalisers, envs."""
    assert checkpoint.differences(a, b) == []


def final_state(run_dir):
    return checkpoint.load(run_dir / "checkpoint.pt")


def deterministic_metrics(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in WALL_CLOCK_KEYS}


def interrupt_at(reference, step, where):
    """The run directory as a run killed just after its checkpoint at ``step`` left it."""
    shutil.copytree(reference, where)
    for s, path in checkpoint.step_files(where):
        if s > step:
            path.unlink()
    (where / "metrics.json").unlink()
    (where / "checkpoint.pt").unlink()
    return where


def scalars(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    wall_clock = ("time/sps", "checkpoint/seconds", "checkpoint/megabytes")  # pickle's sizes vary by a few bytes
    return {tag: [(e.step, e.value if e.value == e.value else "nan") for e in acc.Scalars(tag)]  # NaN != NaN
            for tag in acc.Tags()["scalars"] if tag not in wall_clock}


@pytest.mark.parametrize("algo, workers", [("trpo", 0), ("ppo", 0), ("kl_penalty", 0), ("projection", 0), ("trpo", 1),
                                           ("ppo", 1), ("kl_penalty", 1)])
def test_resume_from_any_checkpoint_is_bit_exact(tmp_path, algo, workers):
    cfg = resumable(algo, f"rollout.workers={workers}")
    reference = tmp_path / "reference"
    run(cfg, reference)
    assert [s for s, _ in checkpoint.step_files(reference)] == [2 * BATCH, 4 * BATCH, 6 * BATCH]
    for step in (2 * BATCH, 4 * BATCH):
        resumed = interrupt_at(reference, step, tmp_path / f"resumed_{step}")
        state, path, skipped = checkpoint.load_latest(resumed)
        assert state["global_step"] == step and not skipped
        run(cfg, resumed, resume=state)
        assert deterministic_metrics(resumed) == deterministic_metrics(reference)
        assert_same(final_state(resumed), final_state(reference))
        # TensorBoard: one value per step, the same as the uninterrupted run's (purge_step dropped the rest)
        assert scalars(resumed) == scalars(reference)


def test_a_run_records_each_machine_that_trained_it(tmp_path, monkeypatch):
    """machine.json: one entry per process, from the step it started at; a resume from an earlier checkpoint
    drops the entries of the processes whose steps it replays."""
    cfg = resumable("trpo")
    reference = tmp_path / "reference"
    run(cfg, reference)
    (entry,) = json.loads((reference / MACHINE_FILE).read_text())
    here = machine()
    assert entry == {"from_step": 0} | here and here["cpu"] and here["torch"] == torch.__version__
    assert here["cpus"] == os.cpu_count() and here["device"] == "cpu" and "gpu" not in here
    resumed = interrupt_at(reference, 4 * BATCH, tmp_path / "resumed")
    monkeypatch.setattr("rl_trust.train.machine", lambda device="cpu": here | {"cpu": "another CPU"})
    run(cfg, resumed, resume=checkpoint.load_latest(resumed)[0])
    entries = json.loads((resumed / MACHINE_FILE).read_text())
    assert [(e["from_step"], e["cpu"]) for e in entries] == [(0, here["cpu"]), (4 * BATCH, "another CPU")]
    again = interrupt_at(resumed, 2 * BATCH, tmp_path / "again")  # replays the second process's steps
    run(cfg, again, resume=checkpoint.load_latest(again)[0])
    entries = json.loads((again / MACHINE_FILE).read_text())
    assert [(e["from_step"], e["cpu"]) for e in entries] == [(0, here["cpu"]), (2 * BATCH, "another CPU")]


@pytest.mark.parametrize("content", [None, "{bad", "null", '{"from_step": 0}', "[1]", '[{"from_step": "x"}]'])
def test_a_resume_with_no_or_a_damaged_machine_record_counts_those_steps_unknown(tmp_path, capsys, content):
    cfg = resumable("ppo")
    reference = tmp_path / "reference"
    run(cfg, reference)
    resumed = interrupt_at(reference, 4 * BATCH, tmp_path / "resumed")
    if content is None:  # a run begun by a version that did not record its machine
        (resumed / MACHINE_FILE).unlink()
    else:
        (resumed / MACHINE_FILE).write_text(content)
    capsys.readouterr()
    run(cfg, resumed, resume=checkpoint.load_latest(resumed)[0])
    entries = json.loads((resumed / MACHINE_FILE).read_text())
    assert entries == [{"from_step": 0, "cpu": None}, {"from_step": 4 * BATCH} | machine()]
    assert deterministic_metrics(resumed) == deterministic_metrics(reference)  # the run itself goes on
    said = capsys.readouterr().err
    if content is None:
        assert MACHINE_FILE not in said
    else:
        assert f"{MACHINE_FILE} cannot be read" in said and (resumed / f"{MACHINE_FILE}.damaged").read_text() == content


def test_checkpoints_do_not_change_the_run(tmp_path):
    """Finishing the overlapped critic update early for a checkpoint computes the same thing."""
    run(resumable("ppo", "rollout.workers=1"), tmp_path / "with")
    run(resumable("ppo", "rollout.workers=1", "checkpoint.every_steps=0"), tmp_path / "without")
    assert deterministic_metrics(tmp_path / "with") == deterministic_metrics(tmp_path / "without")
    assert checkpoint.step_files(tmp_path / "without") == [(6 * BATCH, tmp_path / "without" / "checkpoints" /
                                                             f"step_{6 * BATCH:012d}.pt")]


def test_keep_prunes_old_checkpoints_and_final_is_a_link(tmp_path):
    run(resumable("trpo", "checkpoint.keep=2"), tmp_path)
    assert [s for s, _ in checkpoint.step_files(tmp_path)] == [4 * BATCH, 6 * BATCH]
    final = tmp_path / "checkpoint.pt"
    assert final.read_bytes() == (tmp_path / "checkpoints" / f"step_{6 * BATCH:012d}.pt").read_bytes()
    assert not list(tmp_path.rglob(".*tmp-*"))


def test_unsaveable_env_resumes_with_fresh_episodes_and_says_so(tmp_path, monkeypatch, capsys):
    """An env whose state cannot be saved: checkpoints still work, a resume starts fresh episodes and notes it."""
    import rl_trust.envs as envs

    def refuse(env):
        raise TypeError("stand-in for an env that cannot be pickled")

    monkeypatch.setattr(envs, "env_state", refuse)
    cfg = resumable("trpo")
    run(cfg, tmp_path / "a")
    assert "cannot be saved" in capsys.readouterr().err
    resumed = interrupt_at(tmp_path / "a", 2 * BATCH, tmp_path / "b")
    state, _, _ = checkpoint.load_latest(resumed)
    run(cfg, resumed, resume=state)
    err = capsys.readouterr().err
    assert "fresh episodes" in err and "not bit-exact" in err
    assert (resumed / "metrics.json").exists()


def test_resume_config_allows_only_what_cannot_change_the_maths():
    saved = resumable("trpo")
    composed = make_cfg("total_steps=100000", "progress=true", "checkpoint.every_steps=128", "rollout.workers=1")
    cfg = resume_config(saved, composed, ["resume=x", "total_steps=100000", "progress=true",
                                          "checkpoint.every_steps=128", "rollout.workers=1"])
    assert cfg.total_steps == 100000 and cfg.checkpoint.every_steps == 128 and cfg.rollout.workers == 1
    assert OmegaConf.to_container(cfg.algo) == OmegaConf.to_container(saved.algo) and cfg.resume is None
    for overrides, key in [(["algo.max_kl=0.02"], "algo.max_kl"), (["gamma=0.9"], "gamma"), (["algo=ppo"], "algo"),
                           (["seed=3"], "seed"), (["+foo=1"], "foo")]:
        with pytest.raises(ConfigError, match=key):
            resume_config(saved, make_cfg(*overrides) if "+" not in overrides[0] else composed, overrides)
    with pytest.raises(ConfigError, match="may only be extended"):
        resume_config(saved, make_cfg("total_steps=64"), ["total_steps=64"])
    # the same value as the run's is not a change
    same = resume_config(saved, make_cfg(f"seed={saved.seed}"), [f"seed={saved.seed}"])
    assert same.seed == saved.seed


def test_cli_resume_extends_a_finished_run_and_refuses_a_reused_directory(tmp_path):
    run_dir = tmp_path / "run"
    common = tiny("env=Pendulum", f"checkpoint.every_steps={2 * BATCH}")
    first = run_cli(*common, f"total_steps={2 * BATCH}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "done: trpo on Pendulum-v1, seed 0: evaluation return" in first.stdout  # the closing summary
    assert f"tensorboard --logdir {run_dir}" in first.stdout and "scripts/evaluate.py" in first.stdout
    assert f"scripts/export.py {run_dir} --format onnx" in first.stdout and "scripts/plot.py" in first.stdout
    hydra_config = (run_dir / ".hydra" / "config.yaml").read_text()
    again = run_cli(*common, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr and "resume=" in again.stderr
    assert (run_dir / ".hydra" / "config.yaml").read_text() == hydra_config  # the old run is untouched
    done = run_cli(f"resume={run_dir}", cwd=tmp_path)
    assert done.returncode == 2 and "already finished" in done.stderr
    bad = run_cli(f"resume={run_dir}", "algo.max_kl=0.5", cwd=tmp_path)
    assert bad.returncode == 2 and "algo.max_kl" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    more = run_cli(f"resume={run_dir}", f"total_steps={4 * BATCH}", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["train/global_step"] == 4 * BATCH
    assert json.loads((run_dir / f"metrics_step{2 * BATCH}.json").read_text())["train/global_step"] == 2 * BATCH
    assert (run_dir / ".hydra" / "config.yaml").read_text() == hydra_config
    assert [s for s, _ in checkpoint.step_files(run_dir)] == [2 * BATCH, 4 * BATCH]
