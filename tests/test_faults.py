"""Faults during a run: dead, failing and silent workers, non-finite updates, kill -9 of the learner."""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_cfg, tiny

from rl_trust import checkpoint
from rl_trust.errors import DivergedError
from rl_trust.logger import Logger
from rl_trust.train import run
from rl_trust.updaters.ppo import PPO

LONG = ("env=Pendulum", "total_steps=2048000", "env.num_envs=4", "rollout.steps_per_env=64", "rollout.workers=1",
        "checkpoint.every_steps=512", "progress=false")


def start(tmp_path, *overrides):
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *LONG, *overrides,
                             f"hydra.run.dir={tmp_path / 'run'}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while checkpoint.find(tmp_path / "run") is None:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.1)
    return proc


def worker_of(proc) -> int:
    """The rollout worker process of the learner ``proc`` (not multiprocessing's resource tracker)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == proc.pid and b"spawn_main" in cmdline:
            return int(stat.parent.name)
    raise AssertionError("no worker process")


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def finish(proc, timeout):
    t0 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.strip().splitlines(), time.monotonic() - t0


def test_a_killed_worker_stops_the_run_with_one_line_and_the_checkpoint_intact(tmp_path):
    proc = start(tmp_path)
    worker = worker_of(proc)
    os.kill(worker, signal.SIGKILL)
    code, err, took = finish(proc, 30)
    assert code == 1 and took < 10
    assert len(err) == 1 and "rollout worker 0" in err[0] and "SIGKILL" in err[0] and "resume=" in err[0], err
    checkpoint.load_latest(tmp_path / "run")  # loads: intact


def test_a_stopped_worker_times_out(tmp_path):
    proc = start(tmp_path, "rollout.worker_timeout_s=2")
    worker = worker_of(proc)
    os.kill(worker, signal.SIGSTOP)
    code, err, took = finish(proc, 60)
    assert gone(worker)  # the learner killed it: a stopped process does not act on SIGTERM
    assert code == 1 and took < 20
    assert len(err) == 1 and "has not answered for 2 s" in err[0] and "rollout.worker_timeout_s" in err[0], err


def test_a_failing_env_in_a_worker_is_one_line_with_its_traceback_kept(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *LONG, "env.id=faulty_envs:Failing-v0",
                           "+env.kwargs.fail_after=100", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT / "tests")))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1, err
    assert "rollout worker 0" in err[0] and "RuntimeError: simulated simulator failure" in err[0]
    assert "simulated simulator failure" in (tmp_path / "run" / "worker_error.log").read_text()


def test_learner_killed_leaves_no_worker_behind(tmp_path):
    proc = start(tmp_path)
    worker = worker_of(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    deadline = time.monotonic() + 5
    while not gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(worker)


def test_kill_resume_script_ends_bit_identical(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "kill_resume.py"), "--kills", "2", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    summary = json.loads(proc.stdout)
    assert proc.returncode == 0, summary["failures"]
    assert summary["kills"] == 2 and summary["identical_final_state"]
    assert all(not e["workers_left"] and not e["corrupt"] for e in summary["events"])


def _poison_every(n_bad, monkeypatch):
    """PPO updates that leave a NaN parameter: the first ``n_bad`` of them (or every one with None)."""
    original, calls = PPO.update, {"n": 0}

    def update(self, batch):
        metrics = original(self, batch)
        calls["n"] += 1
        if n_bad is None or calls["n"] <= n_bad:
            with torch.no_grad():
                next(self.actor.parameters()).fill_(float("nan"))
        return metrics

    monkeypatch.setattr(PPO, "update", update)


def test_nonfinite_policy_updates_are_undone_and_counted(tmp_path, monkeypatch):
    _poison_every(2, monkeypatch)
    cfg = make_cfg("env=Pendulum", *tiny("total_steps=320", algo="ppo"))
    metrics = run(cfg, tmp_path)
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["guards"]["policy"] == {"streak": 0, "total": 2}
    assert all(torch.isfinite(t).all() for t in state["actor"].values())
    assert all(v == v for k, v in metrics.items() if k.startswith("eval/"))  # the trained policy is finite


def test_repeated_nonfinite_updates_stop_the_run_naming_the_cause(tmp_path, monkeypatch):
    _poison_every(None, monkeypatch)
    cfg = make_cfg("env=Pendulum", *tiny("total_steps=640", "max_nonfinite_updates=3", "algo.lr=0.5",
                                         "checkpoint.every_steps=64", algo="ppo"))
    with pytest.raises(DivergedError, match=r"policy update.*3 consecutive.*algo.lr=0.5.*last good checkpoint") as e:
        run(cfg, tmp_path)
    assert str(tmp_path / "checkpoints") in str(e.value)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow on the way to the NaN it is about
def test_critic_divergence_is_caught(tmp_path):
    cfg = make_cfg("env=Pendulum", *tiny("total_steps=640", "critic.optim=sgd", "critic.lr=1e30",
                                         "max_nonfinite_updates=3", algo="trpo"))
    with pytest.raises(DivergedError, match=r"critic update.*critic.optim=sgd"):
        run(cfg, tmp_path)


def test_logger_writes_and_counts_nonfinite_values(tmp_path, capsys):
    with Logger(str(tmp_path), 10, "", progress=False) as logger:
        logger.log({"losses/x": float("nan"), "losses/y": 1.0}, 1)
        logger.log({"losses/x": float("inf")}, 2)
    assert logger.nonfinite == 2
    assert capsys.readouterr().err.count("losses/x") == 1  # reported once


def test_sigterm_stops_with_one_line_and_no_worker_left(tmp_path):
    proc = start(tmp_path)
    worker = worker_of(proc)
    proc.send_signal(signal.SIGTERM)
    code, err, _ = finish(proc, 30)
    assert code != 0 and len(err) == 1 and "SIGTERM" in err[0] and "resume=" in err[0], err
    deadline = time.monotonic() + 5
    while not gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(worker)
    assert not list((tmp_path / "run").rglob(".*.tmp-*"))
    checkpoint.load_latest(tmp_path / "run")


def test_a_second_command_on_a_run_in_progress_touches_nothing(tmp_path):
    proc = start(tmp_path)
    second = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *LONG,
                             f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "another process is training there now" in second.stderr
    time.sleep(1.0)
    assert proc.poll() is None  # the first run goes on
    proc.kill()
    proc.wait()
    assert (tmp_path / "run" / ".hydra" / "config.yaml").exists()


def test_a_refused_command_keeps_the_users_own_files(tmp_path):
    folder = tmp_path / "mine"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "my.yaml").write_text("x: 1\n")
    (folder / "important.log").write_text("keep me\n")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "env=Pendulum", "total_steps=0",
                           f"hydra.run.dir={folder}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "total_steps=0" in proc.stderr
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [".hydra", ".hydra/my.yaml",
                                                                            "important.log"]


def test_guard_undoes_an_update_that_leaves_optimizer_state_non_finite():
    """Finite parameters with an overflowed Adam moment would freeze those weights: undone as well."""
    from rl_trust.guard import Guard

    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([param], lr=0.1)
    param.grad = torch.ones(3)
    opt.step()
    guard = Guard("policy", [opt], "a hint", patience=2)
    guard.begin()
    before = copy.deepcopy(opt.state_dict())
    opt.state[param]["exp_avg_sq"].fill_(float("inf"))
    metrics = guard.end({"losses/policy": 0.5}, step=1)
    assert metrics["guard/policy_rejected"] == 1.0
    assert checkpoint.differences(opt.state_dict(), before) == []
    guard.begin()
    assert guard.end({"losses/policy": 0.4}, step=2)["guard/policy_rejected"] == 1.0 and guard.streak == 0
