"""The training loop: collect → critic values → GAE → policy update → critic update → log → checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from rl_trust import checkpoint
from rl_trust.advantages import gae
from rl_trust.config import EVAL_SEED_OFFSET, validate
from rl_trust.critic import PRESETS, Critic
from rl_trust.envs import check_env
from rl_trust.errors import ConfigError, DivergedError
from rl_trust.evaluate import evaluate
from rl_trust.guard import Guard
from rl_trust.logger import Logger
from rl_trust.normalization import ObsNormalizer, RewardScaler
from rl_trust.policies import Actor
from rl_trust.rollout import Collector, EpisodeStats
from rl_trust.updaters import make_updater
from rl_trust.video import TrainingVideos
from rl_trust.workers import make_envs, resolve_env_groups, resolve_learner_envs, resolve_workers

# metrics.json keys that measure wall-clock time: the only ones a resumed run does not reproduce exactly.
WALL_CLOCK_KEYS = ("train/time_s", "train/sps")
# The results each run shows in TensorBoard's HParams dashboard, beside hyperparameters().
HPARAM_METRICS = ("eval/mean_return", "eval/std_return", "train/recent_return")
# Settings that do not change what a run computes: left out of the HParams dashboard.
_NOT_HYPERPARAMETERS = ("progress", "device", "torch_threads", "checkpoint", "video", "resume", "tuned",
                        "optimized_metric", "rollout.workers", "rollout.learner_envs", "rollout.overlap_critic",
                        "rollout.worker_timeout_s", "rollout.backend", "ray", "max_nonfinite_updates",
                        "eval_episodes")


def hyperparameters(cfg: DictConfig) -> dict[str, float | int | str | bool]:
    """The run's settings as flat ``section.key`` scalars for TensorBoard's HParams dashboard (lists and
    mappings as text, None as "null")."""
    out: dict[str, float | int | str | bool] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            full = f"{prefix}{key}"
            if full in _NOT_HYPERPARAMETERS:
                continue
            if isinstance(value, dict) and full not in ("env.kwargs", "critic.optim", "critic.optim_kwargs"):
                walk(value, f"{full}.")
            elif isinstance(value, (bool, int, float, str)):
                out[full] = value
            else:
                out[full] = json.dumps(value) if value is not None else "null"

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is invalid: no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def global_rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":  # only then: asking would start CUDA in a CPU run on a GPU machine
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_global_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def _hints(cfg: DictConfig) -> tuple[str, str]:
    """What most likely makes the policy's or the critic's updates non-finite, in the run's settings."""
    env = "or non-finite observations or rewards from the env"
    again = "(a new run with a smaller value; resume would repeat this run exactly)"
    if cfg.algo.name == "trpo":
        policy = f"too large a trust region (algo.max_kl={cfg.algo.max_kl}) {again}, {env}"
    elif "lr" in cfg.algo:
        policy = f"too large a learning rate (algo.lr={cfg.algo.lr}) {again}, {env}"
    else:
        policy = f"too large a step in the updater's settings (algo.*) {again}, {env}"
    optim = cfg.critic.optim if isinstance(cfg.critic.optim, str) else cfg.critic.optim.get("_target_")
    lr = cfg.critic.lr if cfg.critic.lr is not None else PRESETS.get(optim, {}).get("lr", "its default")
    return policy, f"too large a critic step (critic.optim={optim}, critic.lr={lr}) {again}, {env}"


def run(cfg: DictConfig, out_dir: str | Path | None = None, resume: dict | None = None) -> dict[str, float]:
    """Train as ``cfg`` says, writing events, checkpoints and ``metrics.json`` to ``out_dir``; return the metrics.

    ``resume``: a checkpoint's state (:func:`rl_trust.checkpoint.load_latest`) to continue from, in
    ``out_dir``; the run then ends exactly as it would have without the interruption (apart from
    :data:`WALL_CLOCK_KEYS`; docs/reliability.md). Checkpoints are taken every ``checkpoint.every_steps``
    at an iteration boundary and at the end, before the final evaluation; ``metrics.json`` is written
    last, so its presence marks a finished run.
    """
    validate(cfg)
    out_dir = Path(out_dir or os.getcwd())
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    num_envs, rollout = cfg.env.num_envs, cfg.rollout
    steps_per_update = num_envs * rollout.steps_per_env
    num_updates = cfg.total_steps // steps_per_update
    total = num_updates * steps_per_update
    obs_space, action_space = check_env(cfg.env.id, dict(cfg.env.kwargs))
    if len(obs_space.shape) != 1:
        raise ConfigError(f"env.id={cfg.env.id!r} has observation shape {obs_space.shape}; MLP policies need 1-D")
    with contextlib.ExitStack() as outer, contextlib.ExitStack() as stack:  # outer: the logger, open to the end
        # numpy only does small products here (the per-step policy, the critic's minibatches), where a
        # second BLAS thread costs more than it gives and spins on the cores the workers step envs on.
        stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        actor = Actor(obs_space.shape[0], action_space, OmegaConf.to_object(cfg.policy))
        critic = Critic(obs_space.shape[0], OmegaConf.to_object(cfg.critic), total_updates=num_updates,
                        device=device, seed=cfg.seed + 1)
        updater = make_updater(cfg.algo, actor, total_updates=num_updates, seed=cfg.seed + 2)
        collector = _sampler(cfg, actor, obs_space.shape)
        stack.callback(collector.close)  # also on error: worker processes and actors end with the run
        policy_hint, critic_hint = _hints(cfg)
        guards = {"policy": Guard("policy", [actor, updater], policy_hint, cfg.max_nonfinite_updates),
                  # explained variance is of the values before the update (NaN for constant returns)
                  "critic": Guard("critic", [critic], critic_hint, cfg.max_nonfinite_updates,
                                  unchecked=("losses/explained_variance",))}
        outer.enter_context(checkpoint.lock(out_dir))  # one process per run directory, until metrics.json
        checkpointer = checkpoint.Checkpointer(out_dir, cfg.checkpoint.every_steps, cfg.checkpoint.keep)
        global_step = 0
        if resume is not None:
            global_step = _restore(resume, cfg, device, actor, critic, updater, collector, guards)
            if global_step < total and (out_dir / "metrics.json").exists():
                # an extended run is not finished any more: keep what it finished with (its checkpoint.pt
                # stays until the extension's own final one replaces it)
                os.replace(out_dir / "metrics.json", out_dir / f"metrics_step{global_step}.json")
        record_machine(out_dir, global_step, device)
        if total != cfg.total_steps and resume is None:  # said once everything is checked
            note(f"total_steps={cfg.total_steps} is not a multiple of the batch (env.num_envs * "
                 f"rollout.steps_per_env = {steps_per_update}): training {total} steps ({num_updates} updates)")
        logger = outer.enter_context(Logger(str(out_dir), total, OmegaConf.to_yaml(cfg, resolve=True),
                                            progress=cfg.progress, start_step=global_step,
                                            state=None if resume is None else resume["logger"]))
        videos = TrainingVideos(cfg, out_dir, cfg.seed + EVAL_SEED_OFFSET, note)
        files = checkpoint.step_files(out_dir)
        saved = {"path": files[-1][1] if resume is not None and files else None, "warned": False}

        def save(final: bool = False) -> None:
            """Checkpoint the run; its cost (collecting the state included) is logged as checkpoint/*."""
            start = time.perf_counter()
            state = {"actor": actor.state_dict(), "critic": critic.state_dict(), "updater": updater.state_dict(),
                     "collector": collector.state_dict(), "guards": {k: g.state_dict() for k, g in guards.items()},
                     "logger": logger.state_dict(), "rng": global_rng_state(device), "global_step": global_step,
                     "config": OmegaConf.to_container(cfg, resolve=True) | {"resume": None}}
            lost = next((s for s in state["collector"]["envs"] if isinstance(s, str)), None)
            if lost is not None and not saved["warned"]:
                saved["warned"] = True
                note(f"{cfg.env.id}'s state cannot be saved ({lost}): a run resumed from these checkpoints starts "
                     "fresh episodes and is not bit-exact (docs/reliability.md)")
            saved["path"] = checkpointer.save(global_step, state, final=final)
            logger.log({"checkpoint/seconds": time.perf_counter() - start,
                        "checkpoint/megabytes": saved["path"].stat().st_size / 1e6}, global_step)

        def finish(job) -> dict[str, float]:
            try:
                result = job.finish()
            except FloatingPointError:
                result = None
            return guards["critic"].end(result, global_step)

        # The critic's update of batch k only has to end before batch k+1's values are computed, so with
        # rollout.overlap_critic it steps while the workers step the envs for batch k+1 and finishes after:
        # the same data dependencies as the sequential loop, so the same results (tests/test_train.py).
        # Before a checkpoint it finishes at once, so that a checkpoint never holds an update in flight.
        job, metrics = None, {}
        try:
            for _ in range(global_step // steps_per_update, num_updates):
                batch, episodes = collector.collect(idle=job.step if job is not None else None)
                logger.collected(batch, episodes)
                if job is not None:
                    logger.log(metrics | finish(job), global_step)
                batch = critic.evaluate(batch)
                advantages, returns = gae(batch.rewards, batch.values, batch.next_values, batch.terminated,
                                          batch.truncated, gamma=cfg.gamma, lam=cfg.gae_lambda)
                batch = batch.replace(advantages=advantages, returns=returns)
                previous_step, global_step = global_step, global_step + len(batch)
                guards["policy"].begin()
                try:
                    result = updater.update(batch)
                except FloatingPointError:
                    result = None
                metrics = guards["policy"].end(result, global_step) | episode_metrics(episodes) | collector.metrics()
                guards["critic"].begin()
                job = critic.start_update(batch)
                due = checkpointer.due(previous_step, global_step) and global_step < total
                if not rollout.overlap_critic or due or global_step == total:
                    logger.log(metrics | finish(job), global_step)
                    job = None
                if due:
                    save()
                if videos.due(previous_step, global_step) and global_step < total:
                    logger.log(videos(actor, collector.obs_norm, global_step, logger.writer), global_step)
        except DivergedError as e:
            last = f"the last good checkpoint is {saved['path']}" if saved["path"] else "no checkpoint was taken yet"
            raise DivergedError(f"{e}; {last}") from None
        save(final=True)  # before the evaluation: a failure there loses no training
        train_time = logger.elapsed()  # training only: not the envs' or workers' shutdown (nor the last video)
        logger.log(videos(actor, collector.obs_norm, global_step, logger.writer), global_step)
        recent_return = logger.recent_return()
        stack.close()  # the envs and workers, before the evaluation makes its own

        result = evaluate(actor, collector.obs_norm, cfg.env.id, cfg.eval_episodes,
                          seed=cfg.seed + EVAL_SEED_OFFSET, env_kwargs=dict(cfg.env.kwargs))
        result |= {
            "train/global_step": float(global_step),
            "train/time_s": train_time,
            "train/sps": global_step / train_time if train_time > 0 else float("nan"),
            "train/recent_return": recent_return,
        }
        logger.hparams(hyperparameters(cfg), {k: result[k] for k in HPARAM_METRICS}, global_step)
        checkpoint.write_bytes(out_dir / "metrics.json", json.dumps(result, indent=2).encode())
    return result


def _sampler(cfg: DictConfig, actor: Actor, obs_shape: tuple[int, ...]):
    """The run's sampler: a Collector over local envs (in process or shared-memory workers) or a RaySampler."""
    num_envs, rollout = cfg.env.num_envs, cfg.rollout
    obs_norm = ObsNormalizer(obs_shape, enabled=cfg.env.normalize_obs, clip=cfg.env.obs_clip)
    reward_scaler = RewardScaler(num_envs, cfg.gamma, enabled=cfg.env.normalize_reward, clip=cfg.env.reward_clip)
    if rollout.backend == "ray":
        from rl_trust.ray_sampler import RaySampler

        return RaySampler(cfg.env.id, dict(cfg.env.kwargs), num_envs, rollout.workers, rollout.steps_per_env,
                          cfg.seed, actor, OmegaConf.to_object(cfg.policy), obs_norm, reward_scaler,
                          address=cfg.ray.address, num_cpus_per_actor=cfg.ray.num_cpus_per_actor,
                          max_restarts=cfg.ray.max_restarts, timeout_s=rollout.worker_timeout_s)
    workers = resolve_workers(rollout.workers, num_envs)
    groups = resolve_env_groups(rollout.env_groups, num_envs)
    learner_envs = resolve_learner_envs(rollout.learner_envs, num_envs, workers, groups, rollout.overlap_critic)
    envs = make_envs(cfg.env.id, num_envs, workers, dict(cfg.env.kwargs), learner_envs, groups,
                     timeout_s=rollout.worker_timeout_s)
    try:
        return Collector(envs, actor, obs_norm, reward_scaler, rollout.steps_per_env, seed=cfg.seed,
                         obs_stats=rollout.obs_stats)
    except BaseException:
        envs.close()
        raise


def _restore(state: dict, cfg: DictConfig, device: torch.device, actor, critic, updater, collector, guards) -> int:
    """Load a checkpoint's state into the freshly built objects; returns its global step."""
    actor.load_state_dict(state["actor"])
    critic.load_state_dict(state["critic"])
    updater.load_state_dict(state["updater"])
    lost = collector.load_state_dict(state["collector"])
    if lost is not None:
        note(f"{cfg.env.id}'s state could not be saved ({lost}): the resumed run starts fresh episodes, so it is "
             "not bit-exact (docs/reliability.md)")
    for name, guard in guards.items():
        guard.load_state_dict(state["guards"][name])
    set_global_rng_state(state["rng"], device)
    return int(state["global_step"])


MACHINE_FILE = "machine.json"  # in the run directory: one entry per process that trained part of the run
MACHINE_PACKAGES = ("torch", "numpy", "gymnasium", "mujoco")


def machine(device: torch.device | str = "cpu") -> dict[str, object]:
    """What a run's numbers depend on beyond its config: the CPU model (the same seed gives other floats, and so
    other episodes, on another model: docs/benchmarks.md), the accelerator and the library versions."""
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    # the CPUs this process may use (a container's share), not the host's count
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, object] = {"cpu": cpu, "cpus": cpus, "system": platform.platform(),
                               "python": platform.python_version()}
    for name in MACHINE_PACKAGES:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = None
    info["torch"] = torch.__version__  # the build's own label (+cpu, +cu128) rather than the package's
    info["device"] = str(device)
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def record_machine(out_dir: Path, global_step: int, device: torch.device | str = "cpu") -> None:
    """Append this process's :func:`machine` to the run's machine.json, from ``global_step`` on. A resumed run
    keeps the entries of the processes before it (those whose steps it does not replay); steps no entry covers
    (a run from before runs recorded their machine) get an entry with ``cpu: null``; a damaged file is set aside
    as machine.json.damaged, with a note, and its steps counted as not recorded."""
    path = out_dir / MACHINE_FILE
    kept = []
    if path.exists():
        try:
            entries = json.loads(path.read_text())
            if not (isinstance(entries, list) and all(isinstance(e, dict) and type(e.get("from_step")) is int
                                                      for e in entries)):
                raise ValueError("not a list of entries, each with an integer from_step")
            kept = [e for e in entries if e["from_step"] < global_step]
        except (OSError, UnicodeDecodeError, ValueError) as e:
            os.replace(path, path.with_name(f"{MACHINE_FILE}.damaged"))
            note(f"{path} cannot be read ({e}): kept as {MACHINE_FILE}.damaged; the steps before {global_step} are "
                 f"recorded as run on an unknown machine")
    if global_step > 0 and (not kept or kept[0]["from_step"] > 0):
        kept.insert(0, {"from_step": 0, "cpu": None})  # not recorded
    kept.append({"from_step": global_step} | machine(device))
    checkpoint.write_bytes(path, json.dumps(kept, indent=2).encode())


def episode_metrics(episodes: EpisodeStats) -> dict[str, float]:
    if not episodes.returns:
        return {}
    return {"charts/episodic_return": float(np.mean(episodes.returns)),
            "charts/episodic_length": float(np.mean(episodes.lengths))}
