"""Videos of the deterministic policy: headless rendering, mp4 files, TensorBoard clips.

The episodes recorded are :func:`rl_trust.evaluate.episode_returns`'s own (the frozen normaliser, the
mean action): a video of evaluation episode ``i`` shows the return the evaluation reports for it.
MuJoCo renders headless through EGL or OSMesa; :func:`select_backend` picks the first that works here
when ``MUJOCO_GL`` is not set. Needs the ``[video]`` extra (imageio-ffmpeg writes the mp4s; TensorBoard's
clips need moviepy < 2, with which torch's ``add_video`` encodes them).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rl_trust.errors import RenderError
from rl_trust.evaluate import Policy, episode_returns, policy_of

INSTALL = "pip install -e '.[video]'"
BACKENDS = ("egl", "osmesa")  # headless OpenGL for MuJoCo, in the order tried
_PROBE = """
import json, sys
import gymnasium as gym
env = gym.make(sys.argv[1], **json.loads(sys.argv[2]))
env.reset(seed=0)
frame = env.render()
env.close()
assert frame is not None and frame.ndim == 3, f"render() gave {type(frame).__name__}, not an RGB frame"
"""


def is_mujoco(env_id: str) -> bool:
    entry = str(gym.spec(env_id.rpartition(":")[2] if ":" in env_id else env_id).entry_point)
    return "mujoco" in entry


def render_kwargs(env_id: str, width: int, height: int, env_kwargs: dict | None = None) -> dict:
    """``gym.make`` arguments for RGB frames; MuJoCo envs take their size (others render at their own) and
    film through the model's ``track`` camera, which follows the body, unless ``env_kwargs`` choose one
    (gymnasium 1.4 otherwise renders from a free camera that stays where the episode started)."""
    if not is_mujoco(env_id):
        return {"render_mode": "rgb_array"}
    chosen = {"camera_name", "camera_id"} & set(env_kwargs or {})
    return {"render_mode": "rgb_array", "width": width, "height": height} | ({} if chosen else {"camera_name": "track"})


def check_writer() -> None:
    """Raise :class:`RenderError` unless mp4 files can be written."""
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError as e:
        raise RenderError(f"writing mp4 videos needs imageio and imageio-ffmpeg ({e.name} is missing): "
                          f"{INSTALL}") from None


def tensorboard_clips() -> str | None:
    """Why TensorBoard clips cannot be written here, or None when they can (torch's ``add_video`` needs
    moviepy < 2, and with moviepy 2 writes nothing without an error)."""
    try:
        version = importlib.metadata.version("moviepy")
    except importlib.metadata.PackageNotFoundError:
        return f"TensorBoard clips need moviepy < 2, which is not installed ({INSTALL})"
    if int(version.split(".")[0]) >= 2:
        return f"TensorBoard clips need moviepy < 2 (torch's add_video writes nothing with {version}): {INSTALL}"
    return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def select_backend(env_id: str, env_kwargs: dict, width: int, height: int) -> str | None:
    """Make ``env_id`` render here: for MuJoCo with ``MUJOCO_GL`` unset, set it to the first of
    :data:`BACKENDS` that renders a frame in a child process (a failed OpenGL start can take the process
    with it). Returns the backend (None for envs that need none); raises :class:`RenderError` saying what
    to install when none works."""
    kwargs = json.dumps(dict(env_kwargs) | render_kwargs(env_id, width, height, env_kwargs))
    for key in ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER"):  # pygame (classic control) with no screen or sound card
        os.environ.setdefault(key, "dummy")
    mujoco = is_mujoco(env_id)
    chosen = os.environ.get("MUJOCO_GL") if mujoco else None
    candidates = [chosen] if chosen or not mujoco else list(BACKENDS)
    errors = []
    for backend in candidates:
        env = dict(os.environ)
        if backend:
            env["MUJOCO_GL"] = backend
            env.setdefault("PYOPENGL_PLATFORM", backend)
        try:
            probe = subprocess.run([sys.executable, "-c", _PROBE, env_id, kwargs], env=env, capture_output=True,
                                   text=True, timeout=120)
        except subprocess.TimeoutExpired:
            errors.append(f"{backend or env_id}: no frame within 120 s")
            continue
        if probe.returncode == 0:
            if backend and not chosen:
                os.environ["MUJOCO_GL"] = backend
                os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
        errors.append(f"{backend or env_id}: {_last_line(probe.stderr)}")
    if not mujoco:
        raise RenderError(f"{env_id} cannot render frames here ({errors[0]}); its render dependencies: "
                          "pip install 'gymnasium[classic-control]' (pygame) or the env's own")
    if chosen:
        raise RenderError(f"MuJoCo cannot render with MUJOCO_GL={chosen} ({errors[0]}); unset it to try "
                          f"{' and '.join(BACKENDS)}")
    raise RenderError(f"MuJoCo cannot render headless here ({'; '.join(errors)}): install EGL (Debian: libegl1) "
                      "or OSMesa (Debian: libosmesa6), or set MUJOCO_GL to a backend that works")


class Mp4:
    """An mp4 file written frame by frame (H.264 via imageio-ffmpeg's own ffmpeg), to ``path`` once closed."""

    def __init__(self, path: Path, fps: float):
        import imageio.v2 as imageio

        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp.mp4")
        self.writer = imageio.get_writer(self.tmp, fps=fps, codec="libx264", macro_block_size=2, quality=7,
                                         ffmpeg_log_level="error")

    def append(self, frame: np.ndarray) -> None:
        self.writer.append_data(frame)

    def close(self, keep: bool = True) -> None:
        """Publish the file (``keep``) or remove it; a failed recording leaves none. Safe to call twice."""
        try:
            self.writer.close()
        finally:
            if keep:
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)


def fps_of(env_id: str, env_kwargs: dict) -> float:
    """Frames per second of real time for ``env_id``'s frames (its ``render_fps``)."""
    from rl_trust.envs import make_env

    env = make_env(env_id, **env_kwargs)
    try:
        return float(env.metadata.get("render_fps") or 30)
    finally:
        env.close()


def record(policy: Policy, env_id: str, paths: list[Path], *, episodes: int, seed: int, env_kwargs: dict,
           width: int, height: int, max_steps: int | None = None, keep_frames: bool = False,
           fps: float | None = None):
    """Run :func:`episode_returns` over ``episodes`` envs, writing the first ``len(paths)`` episodes as mp4s.

    Returns (returns, lengths, frames): frames of the recorded episodes ([T, H, W, 3] uint8 each) when
    ``keep_frames``, else None. Raises :class:`RenderError` for a failure to render or write; no partial
    file is left.
    """
    check_writer()
    fps = fps if fps is not None else fps_of(env_id, env_kwargs)
    writers: list[Mp4] = []
    kept: list[list[np.ndarray]] = [[] for _ in paths]

    def frame(i: int, image: np.ndarray) -> None:
        writers[i].append(image)
        if keep_frames:
            kept[i].append(image)

    done = False
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            writers.append(Mp4(path, fps))
        returns, lengths = episode_returns(policy, env_id, episodes, seed=seed, env_kwargs=env_kwargs,
                                           max_steps=max_steps, frames=frame, record=len(paths),
                                           render_kwargs=render_kwargs(env_id, width, height, env_kwargs))
        for w in writers:
            w.writer.close()  # every file encoded before any is published
        done = True
    except RenderError:
        raise
    except Exception as e:
        raise RenderError(f"recording {env_id} failed: {type(e).__name__}: {' '.join(str(e).split())}") from None
    finally:  # also on a signal: no temporary file or ffmpeg process is left
        for w in writers:
            w.close(keep=done)
    return returns, lengths, ([np.stack(f) for f in kept] if keep_frames else None)


class TrainingVideos:
    """``video.every_steps`` during training: one episode of the deterministic policy each time a multiple
    of it is crossed, and once more at the end, as ``videos/step_<step>.mp4`` and a TensorBoard clip
    (``videos/episode``). The episode is the final evaluation's first (its seed), cut at ``video.length``
    steps. Anything that keeps videos from working is one note, and the run goes on without them."""

    def __init__(self, cfg, out_dir: Path, seed: int, note):
        self.cfg, self.dir, self.seed, self.note = cfg.video, Path(out_dir) / "videos", seed, note
        self.env_id, self.env_kwargs = cfg.env.id, dict(cfg.env.kwargs)
        self.on = self.cfg.every_steps > 0
        self.clips = False
        self.fps = fps_of(self.env_id, self.env_kwargs) if self.on else 30.0  # the env's, made once per run
        if self.on:
            try:
                check_writer()
                select_backend(self.env_id, self.env_kwargs, self.cfg.width, self.cfg.height)
            except RenderError as e:
                self.off(e)
            if self.on and self.cfg.tensorboard:
                why = tensorboard_clips()
                if why:
                    note(f"{why}; the mp4 files are still written")
                self.clips = why is None

    def off(self, error: Exception) -> None:
        self.on = False
        self.note(f"video.every_steps={self.cfg.every_steps}: no videos for this run: {error}")

    def due(self, previous_step: int, step: int) -> bool:
        return self.on and step // self.cfg.every_steps > previous_step // self.cfg.every_steps

    def __call__(self, actor, obs_norm, step: int, writer) -> dict[str, float]:
        """Record the policy at ``step``; returns the episode's metrics (video/return, video/length,
        video/seconds)."""
        if not self.on:
            return {}
        start = time.perf_counter()
        try:
            returns, lengths, frames = record(
                policy_of(actor, obs_norm), self.env_id, [self.dir / f"step_{step:012d}.mp4"], episodes=1,
                seed=self.seed, env_kwargs=self.env_kwargs, width=self.cfg.width, height=self.cfg.height,
                max_steps=self.cfg.length, keep_frames=self.clips, fps=self.fps)
        except RenderError as e:
            self.off(e)
            return {}
        if self.clips:
            clip = torch.from_numpy(frames[0]).permute(0, 3, 1, 2).unsqueeze(0)  # [1, T, C, H, W]
            try:
                writer.add_video("videos/episode", clip, step, fps=self.fps)
            except Exception as e:  # noqa: BLE001 - moviepy's encoding errors have many types
                self.clips = False
                self.note(f"TensorBoard clips are off for this run ({type(e).__name__}: {e}); mp4s go on")
        return {"video/return": float(returns[0]), "video/length": float(lengths[0]),
                "video/seconds": time.perf_counter() - start}
