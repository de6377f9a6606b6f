"""A trained policy as a standalone file: raw observation in, environment action out.

:class:`StandalonePolicy` folds the frozen observation normaliser, the actor's deterministic action (the
mean, or the argmax for discrete actions) and the action clip into one ``nn.Module``: the torch form of
:func:`rl_trust.evaluate.act`, which evaluation uses (``tests/test_export.py`` checks the two agree).
:func:`export` writes it as ONNX (onnxruntime runs it with nothing of rl_trust or torch installed),
TorchScript or a ``torch.export`` program, each with a dynamic batch size.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from rl_trust.errors import ConfigError
from rl_trust.normalization import ObsNormalizer
from rl_trust.policies import Actor

FORMATS = ("onnx", "torchscript", "torch_export")
INSTALL = "pip install -e '.[export]'"
MAX_BATCH = 1 << 20  # the dynamic batch dimension's upper bound in the exported programs
METADATA = "rl_trust.json"  # TorchScript / torch.export extra file; ONNX metadata_props hold the same keys


class StandalonePolicy(nn.Module):
    """``obs`` [B, obs_dim] (the env's own dtype) -> the action the env takes [B, act_dim] (float32) or [B]
    (int64): normalised as the frozen ``obs_norm`` does (float64, clipped), the actor's mode, clipped to the
    action space's bounds."""

    def __init__(self, actor: Actor, obs_norm: ObsNormalizer, observation_space: gym.spaces.Box,
                 action_space: gym.Space):
        super().__init__()
        self.actor = copy.deepcopy(actor).eval().requires_grad_(False)
        self.action_space = action_space
        self.obs_numpy_dtype = np.dtype(observation_space.dtype)
        self.obs_dtype = torch.from_numpy(np.zeros(0, self.obs_numpy_dtype)).dtype
        self.normalize, self.clip = bool(obs_norm.enabled), float(obs_norm.clip)
        rms = obs_norm.rms
        self.register_buffer("mean", torch.as_tensor(np.asarray(rms.mean, np.float64)))
        self.register_buffer("std", torch.as_tensor(np.sqrt(np.asarray(rms.var, np.float64) + obs_norm.eps)))
        if self.actor.continuous:
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32))

    def forward(self, obs: Tensor) -> Tensor:
        if self.normalize:
            z = ((obs.to(torch.float64) - self.mean) / self.std).clamp(-self.clip, self.clip).to(torch.float32)
        else:
            z = obs.to(torch.float32)
        action = self.actor.dist.mode(self.actor(z))
        if self.actor.continuous:
            action = torch.minimum(torch.maximum(action, self.low), self.high)  # ONNX's Clip takes scalars only
        return action

    def example(self, batch: int = 2) -> Tensor:
        return torch.zeros(batch, self.mean.shape[0], dtype=self.obs_dtype)


def from_checkpoint(path: str | Path) -> tuple[StandalonePolicy, dict, Actor, ObsNormalizer]:
    """The standalone policy of a checkpoint (or run directory), what :func:`export` records beside it, and
    the checkpoint's own actor and normaliser (what :func:`max_difference` compares with)."""
    from rl_trust.envs import make_env
    from rl_trust.evaluate import load_policy

    actor, obs_norm, state = load_policy(path)
    cfg = state["config"]
    env = make_env(cfg["env"]["id"], **cfg["env"]["kwargs"])
    try:
        policy = StandalonePolicy(actor, obs_norm, env.observation_space, env.action_space)
        space = env.action_space
    finally:
        env.close()
    meta = {"env_id": cfg["env"]["id"], "env_kwargs": cfg["env"]["kwargs"], "algo": cfg["algo"]["name"],
            "seed": cfg["seed"], "global_step": int(state["global_step"]),
            "observation_dtype": policy.obs_numpy_dtype.name,
            "observation_dim": int(policy.mean.shape[0]),
            "action": ({"type": "box", "low": space.low.tolist(), "high": space.high.tolist()}
                       if policy.actor.continuous else {"type": "discrete", "n": int(space.n)})}
    return policy, meta, actor, obs_norm


def _need(*modules: str, why: str) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise ConfigError(f"{why} needs {' and '.join(modules)} ({name} is missing): {INSTALL}") from None


@contextlib.contextmanager
def _quiet(*loggers: str):
    """The exporters' progress and optional-dependency warnings (torchvision's operators) off for a while."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def export(policy: StandalonePolicy, fmt: str, out: str | Path, meta: dict) -> Path:
    """Write ``policy`` as ``fmt`` (one of :data:`FORMATS`) to ``out``, whole or not at all."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format={fmt} is invalid: allowed: {', '.join(FORMATS)}")
    out = Path(out)
    if fmt == "torch_export" and out.suffix != ".pt2":
        raise ConfigError(f"--out {out}: a torch.export program is a .pt2 archive (torch.export.load reads only those)")
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    policy.eval()
    example = policy.example()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with warnings.catch_warnings(), _quiet("torch.onnx", "torch.export", "torch._export"):
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations inside its exporters
            if fmt == "onnx":
                _need("onnx", "onnxscript", why="--format onnx")
                import onnx

                program = torch.onnx.export(policy, (example,), input_names=["obs"], output_names=["action"],
                                            dynamic_shapes={"obs": {0: batch}}, dynamo=True, verbose=False)
                model = program.model_proto
                for key, value in meta.items():
                    entry = model.metadata_props.add()
                    entry.key, entry.value = key, json.dumps(value)
                onnx.save(model, tmp)
            elif fmt == "torchscript":
                traced = torch.jit.trace(policy, example, check_inputs=[(policy.example(1),), (policy.example(7),)])
                traced.save(str(tmp), _extra_files={METADATA: json.dumps(meta)})
            else:
                program = torch.export.export(policy, (example,), dynamic_shapes={"obs": {0: batch}})
                torch.export.save(program, tmp, extra_files={METADATA: json.dumps(meta)})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def load(path: str | Path, fmt: str):
    """``obs (numpy) -> action (numpy)`` for a file :func:`export` wrote (ONNX through onnxruntime); also a
    :data:`rl_trust.evaluate.Policy` (the action space is already in the file)."""
    if fmt == "onnx":
        _need("onnxruntime", why="running an ONNX policy")
        import onnxruntime

        runtime = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda obs, space=None: runtime.run(["action"], {"obs": obs})[0]
    module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
    return lambda obs, space=None: module(torch.from_numpy(obs)).numpy()


def probe_observations(policy: StandalonePolicy, n: int, seed: int = 0) -> np.ndarray:
    """``n`` observations around the normaliser's statistics, a tenth of them far enough out to be clipped."""
    rng = np.random.default_rng(seed)
    mean, std = policy.mean.numpy(), policy.std.numpy()
    scale = np.where(rng.random((n, 1)) < 0.1, 20.0, 3.0)
    return (mean + std * scale * rng.standard_normal((n, len(mean)))).astype(policy.obs_numpy_dtype)


def max_difference(run, policy: StandalonePolicy, actor: Actor, obs_norm: ObsNormalizer, n: int) -> float:
    """The largest difference between ``run`` (a :func:`load`-ed file) and :func:`rl_trust.evaluate.act` of
    ``actor`` and ``obs_norm`` over ``n`` :func:`probe_observations` (a wrong discrete action counts as 1+)."""
    from rl_trust.evaluate import act, frozen

    obs = probe_observations(policy, n)
    expected = act(actor, frozen(obs_norm), obs, policy.action_space)
    return float(np.abs(run(obs).astype(np.float64) - expected).max())
