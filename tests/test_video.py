"""Videos: the recorded episodes are the evaluation's, training records at its interval, failures are notes."""

import json
import os
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
from conftest import ROOT, make_cfg, tiny
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl_trust import video
from rl_trust.errors import RenderError
from rl_trust.evaluate import episode_returns, load_policy, policy_of
from rl_trust.train import run


def frames_of(path):
    reader = imageio.get_reader(path)
    try:
        return np.stack([frame for frame in reader])  # list() would size itself by len(), which is inf
    finally:
        reader.close()


def test_recorded_episodes_are_the_evaluation_episodes(video_run, tmp_path):
    actor, obs_norm, state = load_policy(video_run)
    paths = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    returns, lengths, frames = video.record(policy_of(actor, obs_norm), "Pendulum-v1", paths, episodes=3, seed=7,
                                            env_kwargs={}, width=64, height=64, keep_frames=True)
    plain, plain_lengths = episode_returns(policy_of(actor, obs_norm), "Pendulum-v1", 3, seed=7)
    np.testing.assert_array_equal(returns, plain)  # rendering changes nothing the policy sees
    np.testing.assert_array_equal(lengths, plain_lengths)
    for path, kept in zip(paths, frames, strict=True):
        assert kept.shape == (200, 500, 500, 3) and kept.dtype == np.uint8  # a frame per action, Pendulum's size
        written = frames_of(path)
        assert written.shape == kept.shape
        assert np.abs(written.astype(int) - kept).mean() < 8  # H.264 is lossy, not wrong
    assert not list(tmp_path.glob(".*tmp*"))


def test_training_records_at_its_interval_into_the_run_and_tensorboard(video_run):
    names = sorted(p.name for p in (video_run / "videos").iterdir())
    assert names == [f"step_{s:012d}.mp4" for s in (64, 128, 192)]  # each multiple crossed; 192 is the end
    assert frames_of(video_run / "videos" / names[0]).shape[0] == 20  # video.length
    acc = EventAccumulator(str(video_run), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    clips = acc.Images("videos/episode")
    assert [c.step for c in clips] == [64, 128, 192]
    assert clips[0].encoded_image_string[:4] == b"GIF8"
    assert [e.step for e in acc.Scalars("video/return")] == [64, 128, 192]


def test_a_rendering_failure_is_one_note_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RenderError("MuJoCo cannot render headless here: install EGL")

    monkeypatch.setattr(video, "select_backend", broken)
    result = run(make_cfg("env=Pendulum", *tiny("video.every_steps=64")), tmp_path)
    assert np.isfinite(result["eval/mean_return"])
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "video" in ln]
    assert len(notes) == 1 and "install EGL" in notes[0] and notes[0].startswith("note: video.every_steps=64")
    assert not (tmp_path / "videos").exists()


def test_videos_do_not_change_the_run(tmp_path):
    with_videos = run(make_cfg("env=Pendulum", *tiny("video.every_steps=64", "video.length=5")), tmp_path / "a")
    without = run(make_cfg("env=Pendulum", *tiny()), tmp_path / "b")
    assert with_videos["eval/mean_return"] == without["eval/mean_return"]


def test_mujoco_renders_headless_choosing_a_backend(tmp_path):
    """In a fresh process with MUJOCO_GL unset, as a user's first run would be."""
    code = (
        "import os, json\n"
        "from rl_trust import video\n"
        "backend = video.select_backend('HalfCheetah-v5', {}, 64, 48)\n"
        "from rl_trust.envs import make_env\n"
        "env = make_env('HalfCheetah-v5', **video.render_kwargs('HalfCheetah-v5', 64, 48))\n"
        "env.reset(seed=0)\n"
        "frame = env.render()\n"
        "env.close()\n"
        "print(json.dumps({'backend': backend, 'env': os.environ['MUJOCO_GL'], 'shape': list(frame.shape),\n"
        "                  'std': float(frame.std())}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["backend"] in video.BACKENDS and got["env"] == got["backend"]
    assert got["shape"] == [48, 64, 3] and got["std"] > 1  # a picture, not a blank frame


def test_a_backend_that_does_not_work_is_named(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa-not-a-backend")
    with pytest.raises(RenderError, match="MUJOCO_GL=osmesa-not-a-backend"):
        video.select_backend("HalfCheetah-v5", {}, 64, 48)


def test_evaluate_script_writes_the_videos_of_its_episodes(video_run, tmp_path):
    script = str(ROOT / "scripts" / "evaluate.py")
    plain = subprocess.run([sys.executable, script, str(video_run), "--episodes", "2"], capture_output=True,
                           text=True, timeout=300)
    filmed = subprocess.run([sys.executable, script, str(video_run), "--episodes", "2", "--video", str(tmp_path / "v"),
                             "--video-episodes", "2"], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and filmed.returncode == 0, filmed.stderr
    plain, filmed = json.loads(plain.stdout), json.loads(filmed.stdout)
    assert filmed["eval/mean_return"] == plain["eval/mean_return"]
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["Pendulum-v1_seed12345.mp4",
                                                                   "Pendulum-v1_seed12346.mp4"]
    assert len(filmed["videos"]) == 2
