"""Exported policies: the same actions as rl_trust's evaluation policy, any batch size, onnxruntime alone."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, make_cfg, tiny

from rl_trust import export
from rl_trust.evaluate import act, episode_returns, frozen, policy_of
from rl_trust.normalization import ObsNormalizer
from rl_trust.train import run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, video_run):
    cartpole = tmp_path_factory.mktemp("export") / "cartpole"
    run(make_cfg("env=CartPole", *tiny()), cartpole)
    return {"Pendulum-v1": video_run, "CartPole-v1": cartpole}


@pytest.mark.parametrize("fmt", export.FORMATS)
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_exported_file_acts_as_the_training_actor(runs, env_id, fmt, tmp_path):
    policy, meta, actor, obs_norm = export.from_checkpoint(runs[env_id])
    path = export.export(policy, fmt, tmp_path / ("policy.pt2" if fmt == "torch_export" else f"policy.{fmt}"), meta)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    file = export.load(path, fmt)
    obs = export.probe_observations(policy, 4096)
    expected = act(actor, frozen(obs_norm), obs, policy.action_space)
    assert (np.abs(obs - obs_norm.rms.mean) > 10 * np.sqrt(obs_norm.rms.var)).any()  # the clip is exercised
    for batch in (1, 5, 4096):  # a dynamic batch size
        got = file(obs[:batch])
        assert got.shape == expected[:batch].shape and got.dtype == expected.dtype
        if policy.actor.continuous:
            np.testing.assert_allclose(got, expected[:batch], rtol=0, atol=1e-5)
            low, high = policy.action_space.low, policy.action_space.high
            assert (got >= low).all() and (got <= high).all()
        else:
            np.testing.assert_array_equal(got, expected[:batch])  # the argmax
    assert export.max_difference(file, policy, actor, obs_norm, 4096) <= 1e-5


def test_the_module_is_the_evaluation_policy_with_and_without_normalisation():
    import gymnasium as gym

    from rl_trust.config import PolicyConfig
    from rl_trust.policies import Actor

    obs_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
    space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
    torch.manual_seed(0)
    actor = Actor(3, space, PolicyConfig(log_std_init=0.0))
    with torch.no_grad():
        actor.net.layers[-1].weight.mul_(3000)  # actions well beyond the bounds, so the clip acts
    rng = np.random.default_rng(0)
    for enabled in (True, False):
        norm = ObsNormalizer((3,), enabled=enabled, clip=2.0)
        norm.update(rng.normal(5.0, 3.0, (100, 3)))
        policy = export.StandalonePolicy(actor, frozen(norm), obs_space, space)
        obs = rng.normal(5.0, 10.0, (256, 3))
        expected = act(actor, frozen(norm), obs, space)
        assert (np.abs(expected) == 2.0).any()
        np.testing.assert_array_equal(policy(torch.from_numpy(obs)).numpy(), expected)


def test_onnxruntime_alone_gets_the_evaluation_returns(runs, tmp_path):
    path = tmp_path / "pendulum.onnx"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "export.py"), str(runs["Pendulum-v1"]), "--format",
                           "onnx", "--out", str(path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["check"]["max_abs_diff"] <= 1e-5 and report["env_id"] == "Pendulum-v1"
    # torch and rl_trust unimportable: the example needs onnxruntime, gymnasium and numpy only
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.modules['rl_trust'] = None; "
            f"sys.argv = ['x', {str(path)!r}, '--episodes', '3', '--seed', '5']; "
            f"runpy.run_path({str(ROOT / 'examples' / 'onnx_rollout.py')!r}, run_name='__main__')")
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr
    got = json.loads(alone.stdout)["returns"]
    _, _, actor, obs_norm = export.from_checkpoint(runs["Pendulum-v1"])
    expected, _ = episode_returns(policy_of(actor, obs_norm), "Pendulum-v1", 3, seed=5)
    np.testing.assert_allclose(got, expected, rtol=1e-4)  # float32 kernels differ in the last bits, not the returns


@pytest.mark.parametrize("fmt, suffix", [("torchscript", "pt"), ("torch_export", "pt2")])
def test_export_script_runs_the_file_in_the_env(runs, fmt, suffix, tmp_path):
    out = tmp_path / f"p.{suffix}"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "export.py"), str(runs["Pendulum-v1"]), "--format",
                           fmt, "--out", str(out), "--episodes", "2", "--seed", "3"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    episodes = json.loads(done.stdout)["episodes"]
    assert episodes["seeds"] == [3, 4] and episodes["file_returns"] == episodes["rl_trust_returns"]
