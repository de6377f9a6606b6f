"""Structured-config schemas (Hydra ConfigStore) and the value checks Hydra's types cannot express.

The schemas make a misspelt key fail at compose time with the key named; :func:`validate`
checks ranges and cross-field constraints and raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rl_trust.errors import ConfigError
from rl_trust.nets import ACTIVATIONS
from rl_trust.workers import resolve_workers

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("local", "ray")
OBS_STATS = ("rollout", "step")  # rollout.obs_stats (rl_trust.rollout.Collector)
EVAL_SEED_OFFSET = 10_000  # the final evaluation's envs are seeded seed + this
MAX_SEED = 2**32 - 1 - EVAL_SEED_OFFSET
# What scripts/train.py can return to a sweeper (optimized_metric): the results in a finished run's metrics.json.
RESULT_KEYS = ("eval/mean_return", "eval/std_return", "eval/mean_length", "train/recent_return", "train/sps",
               "train/time_s")


@dataclass
class EnvConfig:
    id: str = MISSING
    num_envs: int = 8
    normalize_obs: bool = True
    normalize_reward: bool = True
    obs_clip: float = 10.0
    reward_clip: float = 10.0
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra gymnasium.make keyword arguments


@dataclass
class RolloutConfig:
    steps_per_env: int = 256
    # 0: step every env in the learner process; N: N worker processes plus the learner, each stepping
    # a slice of the envs; auto (default): one worker per spare core (at most env.num_envs - 1; none on
    # one core). Batches are the same either way (docs/benchmarks.md has the speed-ups).
    workers: Any = "auto"
    # With workers >= 1: the workers step every env and the learner runs the critic's update of the
    # previous batch while it waits for them (same results, see rl_trust/train.py). No effect with 0.
    overlap_critic: bool = True
    # The envs step in this many groups, in turn (auto: 2, or 1 with a single env). With workers the
    # learner handles one group's results while the workers step another (double buffering). Batches
    # depend on it (observation statistics are updated per group), not on the worker count.
    env_groups: Any = "auto"
    # With workers >= 1, how many envs the learner process steps itself (the workers share the rest);
    # each env group is split the same way. auto: 0 with overlap_critic (the learner's waits go to the
    # critic), else an equal share less one env per group (the learner also does every group's
    # statistics, policy and recording; docs/benchmarks.md, sampling splits). Batches do not depend on it.
    learner_envs: Any = "auto"
    # A worker that has not answered for this long (stopped, or its env stuck in a step) ends the run.
    worker_timeout_s: float = 60.0
    # Where the envs step: local (this process, plus rollout.workers shared-memory worker processes) or
    # ray (rollout.workers Ray actors, on this machine or a cluster: the ray section; each actor runs
    # its whole segment of every rollout).
    backend: str = "local"
    # When the observation statistics take observations in: rollout (frozen while a rollout is
    # collected, updated with all of it at its end: batches do not depend on the backend, the worker
    # count or env_groups) or step (after every step; local backend only).
    obs_stats: str = "rollout"


@dataclass
class RayConfig:
    """rollout.backend=ray: where the actors run (docs/architecture.md, "Rollouts on Ray")."""

    # null: start a local Ray instance for the run (stopped at its end); auto: the cluster this machine
    # has joined (ray start); or a cluster's address (host:port or ray://host:port).
    address: str | None = None
    num_cpus_per_actor: float = 1.0
    # How often Ray may restart a dead actor (its envs start fresh episodes and its segment is collected
    # again, counted as rollout/actor_restarts); 0: a dead actor ends the run.
    max_restarts: int = 0


@dataclass
class PolicyConfig:
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    log_std_init: float = 0.0
    ortho_init: bool = True


@dataclass
class CriticConfig:
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    ortho_init: bool = True
    epochs: int = 10
    minibatch_size: int = 64  # 0: the whole batch in one step; else it must divide the batch
    max_grad_norm: float | None = 0.5
    clip_range: float | None = None
    lr_anneal: bool = True
    # A preset name (rl_trust.critic.PRESETS) or a dict with ``_target_`` (any torch.optim.Optimizer class).
    optim: Any = "arturo"
    lr: float | None = None  # the optimizer's lr (arTuRO: its KL bound); None: the preset's
    # Further arguments over the preset's (add new ones with a leading +: +critic.optim_kwargs.eps=1e-8).
    optim_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PPOConfig:
    name: str = "ppo"
    lr: float = 3e-4
    epochs: int = 10
    minibatch_size: int = 64
    clip_range: float = 0.2
    ent_coef: float = 0.0
    max_grad_norm: float | None = 0.5
    target_kl: float | None = None  # stop the epochs once a minibatch's approximate KL exceeds 1.5x this
    normalize_advantages: bool = True
    lr_anneal: bool = True


@dataclass
class TRPOConfig:
    name: str = "trpo"
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 0.1
    backtrack_coeff: float = 0.8
    max_backtracks: int = 10
    accept_ratio: float = 0.0  # minimum actual/expected improvement; 0: any improvement
    fvp_subsample: float = 1.0  # fraction of the batch the Fisher-vector products use
    ent_coef: float = 0.0
    normalize_advantages: bool = True


@dataclass
class KLPenaltyConfig:
    name: str = "kl_penalty"
    lr: float = 3e-4
    epochs: int = 10
    minibatch_size: int = 64
    target_kl: float = 0.01  # β doubles when the update's KL exceeds 1.5x this, halves below it / 1.5
    beta: float = 1.0  # initial β (the only β when adaptive is false)
    adaptive: bool = True
    beta_min: float = 1e-4
    beta_max: float = 1e4
    clip_range: float | None = None  # also clip the ratio (RLlib-style); null: the pure penalty
    ent_coef: float = 0.0
    max_grad_norm: float | None = 0.5
    normalize_advantages: bool = True
    lr_anneal: bool = True


@dataclass
class ProjectionConfig:
    name: str = "projection"
    projection: str = "kl"  # kl | w2 | frobenius (rl_trust/updaters/projection.py)
    mean_bound: float = 0.03  # per state, on the mean part of the distance
    cov_bound: float = 0.001  # per state, on the covariance part
    regression_coef: float = 10.0  # pulls the network's own output towards its projection
    lr: float = 3e-4
    epochs: int = 10
    minibatch_size: int = 64
    ent_coef: float = 0.0
    # Entropy control: per action dimension, a lower bound on the projected policy's entropy that falls
    # linearly from the first policy's to this over the run; null: none.
    entropy_final: float | None = None
    max_grad_norm: float | None = 0.5
    normalize_advantages: bool = True
    lr_anneal: bool = True


@dataclass
class CheckpointConfig:
    every_steps: int = 100_000  # environment steps between checkpoints (at iteration boundaries); 0: the final one only
    keep: int = 3  # periodic checkpoints kept (the newest); the final one is kept as checkpoint.pt


@dataclass
class VideoConfig:
    # Environment steps between recordings of the deterministic policy (at iteration boundaries, and once
    # more at the end); 0: none. Each is an mp4 under videos/ and a clip in TensorBoard (pip install -e .[video]).
    every_steps: int = 0
    length: int = 500  # at most this many env steps per recorded episode
    width: int = 320
    height: int = 240
    tensorboard: bool = True  # also write each clip to TensorBoard (an animated image)


@dataclass
class TunedConfig:
    """Set by the file configs/tuned/<algo>_<env group>.yaml that applied, if any."""

    file: str | None = None
    env_id: str | None = None  # the task it was tuned for


@dataclass
class Config:
    algo: Any = MISSING
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    seed: int = 0
    total_steps: int = 1_000_000
    device: str = "auto"
    gamma: float = 0.99
    gae_lambda: float = 0.95
    torch_threads: int = 1
    eval_episodes: int = 10
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    # Consecutive policy or critic updates with a non-finite result (each undone) before the run stops.
    max_nonfinite_updates: int = 10
    progress: bool = True
    tuned: TunedConfig = field(default_factory=TunedConfig)
    # A run directory to continue from its newest checkpoint (scripts/train.py resume=RUN_DIR).
    resume: str | None = None
    # What scripts/train.py returns to a sweeper (Optuna optimises it): a key of the run's metrics.json.
    optimized_metric: str = "eval/mean_return"


ALGO_SCHEMAS: dict[str, type] = {"ppo": PPOConfig, "trpo": TRPOConfig, "kl_penalty": KLPenaltyConfig,
                                 "projection": ProjectionConfig}
CUSTOM = "custom"  # algo=custom algo._target_=package.Class: a user's own updater (docs/extending.md)
_UPDATER_METHODS = ("update", "state_dict", "load_state_dict")


def updater_class(target: Any) -> type:
    """The updater class ``algo._target_`` names (``package.module.Class``): importable, with the Updater
    methods and a ``Config`` dataclass of its settings; else a ConfigError naming the key."""
    module, _, name = target.rpartition(".") if isinstance(target, str) else ("", "", "")
    if not module or not name:
        raise ConfigError(f"algo._target_={_fmt(target)} is invalid: a dotted path to a class, package.module.Class")
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError as e:
        raise ConfigError(f"algo._target_={target}: cannot import {module!r} ({e}); is it installed or on "
                          "PYTHONPATH?") from None
    if not isinstance(cls, type):
        raise ConfigError(f"algo._target_={target}: {module} has no class {name!r}")
    missing = [m for m in _UPDATER_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise ConfigError(f"algo._target_={target}: {name} lacks {', '.join(missing)} (the Updater interface, "
                          "docs/extending.md)")
    if not (isinstance(getattr(cls, "Config", None), type) and dataclasses.is_dataclass(cls.Config)):
        raise ConfigError(f"algo._target_={target}: {name} has no Config dataclass of its settings "
                          "(docs/extending.md)")
    return cls


def updater_settings(algo: DictConfig) -> tuple[type, Any]:
    """A custom updater's class and its settings: the ``algo`` keys (but ``name`` and ``_target_``) as its
    ``Config`` dataclass, each key checked to be a field and each value against the field's type."""
    if "_target_" not in algo.keys():  # (`in` is False for a ??? value)
        raise ConfigError(f"algo.name={algo.name!r} does not match the algo settings: choose your own updater with "
                          "algo=custom algo._target_=package.Class (docs/extending.md), not algo.name")
    if OmegaConf.is_missing(algo, "_target_"):
        raise ConfigError("algo._target_ is missing: algo=custom needs the updater's class, e.g. "
                          "algo._target_=my_package.MyUpdater (docs/extending.md)")
    cls = updater_class(algo._target_)
    keys = sorted(f.name for f in dataclasses.fields(cls.Config))
    given = {k: v for k, v in algo.items() if k not in ("name", "_target_")}
    for key in given:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join('algo.' + c for c in close)}? " if close else ""
            raise ConfigError(f"algo.{key} is not a setting of {algo._target_} ({hint}its Config has "
                              f"{', '.join(keys)})")
    try:
        node = OmegaConf.merge(OmegaConf.structured(cls.Config), given)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"algo.{key}={_fmt(given.get(key))} is invalid for {algo._target_}: "
                          f"{str(e).splitlines()[0]}") from None
    missing = [k for k in keys if OmegaConf.is_missing(node, k)]
    if missing:
        raise ConfigError(f"algo.{missing[0]} is missing: {algo._target_}'s Config has no default for it "
                          f"(add +algo.{missing[0]}=...)")
    return cls, OmegaConf.to_object(node)
# dataclasses.fields gives the annotations as strings (from __future__ import annotations)
_DATACLASSES: dict[str, type] = {cls.__name__: cls for cls in (
    EnvConfig, RolloutConfig, RayConfig, PolicyConfig, CriticConfig, CheckpointConfig, VideoConfig, TunedConfig)}


def typed(container: dict) -> DictConfig:
    """A plain config dict (a checkpoint's) as the structured config Hydra composes: the schemas' types."""
    data = dict(container)
    algo = data.pop("algo")
    cfg = OmegaConf.merge(OmegaConf.structured(Config), data)
    cfg.algo = (OmegaConf.create(algo) if algo["name"] == CUSTOM else
                OmegaConf.merge(OmegaConf.structured(ALGO_SCHEMAS[algo["name"]]), algo))
    return cfg


def _hydra_subdir(run_dir: str) -> str | None:
    """Where Hydra saves the composed config: ``.hydra``, or nowhere (None) when ``run_dir`` already holds a
    run, whose own ``.hydra`` must survive the rejected command (scripts/train.py refuses it)."""
    from rl_trust.runs import holds_run

    return None if holds_run(run_dir) else ".hydra"


def register_configs() -> None:
    OmegaConf.register_new_resolver("rl_trust.hydra_subdir", _hydra_subdir, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name, schema in ALGO_SCHEMAS.items():  # outside the algo group, so never offered as an algo= option
        cs.store(group="schema/algo", name=name, node=schema)


# Fields whose values are free-form mappings (keyword arguments): their keys are not checked.
_FREE_FORM = {"env.kwargs", "critic.optim", "critic.optim_kwargs"}


def check_keys(cfg: DictConfig) -> None:
    """Every key must be one the schema defines: a key added with + (Hydra's suggestion for a misspelt
    one) would otherwise be silently ignored. The algo section must be the one its name says."""
    algo_keys = set(OmegaConf.select(cfg, "algo").keys())
    name = cfg.algo.name
    if name == CUSTOM:  # its keys are its class's (updater_settings)
        _check_node(cfg, Config, "")
        return
    expected = {f.name for f in dataclasses.fields(ALGO_SCHEMAS[name])}
    if algo_keys != expected:
        owner = next((n for n, sch in ALGO_SCHEMAS.items() if {f.name for f in dataclasses.fields(sch)} == algo_keys),
                     None)
        if owner is not None:
            raise ConfigError(f"algo.name={name!r} does not match the algo settings, which are algo={owner}'s: "
                              f"choose the updater with algo={name}, not algo.name")
    _check_node(cfg, Config, "")


def schema_keys(parent: str) -> list[str] | None:
    """The keys the schema allows under ``parent`` ("" for the top level; every updater's under "algo"),
    or None where it sets none (free-form mappings, unknown parents)."""
    if parent == "algo":
        return sorted({f.name for schema in ALGO_SCHEMAS.values() for f in dataclasses.fields(schema)})
    schema: Any = Config
    for part in parent.split(".") if parent else ():
        field_types = {f.name: f.type for f in dataclasses.fields(schema)}
        schema = _DATACLASSES.get(field_types.get(part), None)
        if schema is None:
            return None
    return sorted(f.name for f in dataclasses.fields(schema))


def unknown_key(full: str, keys: list[str]) -> ConfigError:
    """The error for a key the schema does not have, with the nearest allowed ones."""
    parent, _, leaf = full.rpartition(".")
    prefix = f"{parent}." if parent else ""
    close = difflib.get_close_matches(leaf, keys, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(prefix + c for c in close)}? " if close else ""
    where = f"the keys of {parent}" if parent else "the top-level keys"
    return ConfigError(f"{full} is not a config key ({hint}a + adds a key nothing reads): {where} are "
                       f"{', '.join(keys)}")


def _check_node(node: DictConfig, schema: type, prefix: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in node.keys():
        full = f"{prefix}{key}"
        if key not in fields:
            raise unknown_key(full, sorted(fields))
        if full in _FREE_FORM:
            continue
        if full == "algo" and node[key].name == CUSTOM:
            continue
        sub = ALGO_SCHEMAS[node[key].name] if full == "algo" else fields[key].type
        sub = _DATACLASSES.get(sub, sub) if isinstance(sub, str) else sub
        if dataclasses.is_dataclass(sub) and isinstance(node[key], DictConfig):
            _check_node(node[key], sub, f"{full}.")


def _fmt(value: Any) -> str:
    """A value as the command line would write it (0 rather than 0.0, 1e-05 rather than 1e-05)."""
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={_fmt(value)} is invalid: {allowed}")


def positive(cfg: DictConfig, key: str, *, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        value >= 0 if allow_zero else value > 0)
    _require(ok, key, value, "must be >= 0" if allow_zero else "must be > 0")


def optional_positive(cfg: DictConfig, key: str) -> None:
    if OmegaConf.select(cfg, key) is not None:
        positive(cfg, key)


def in_range(cfg: DictConfig, key: str, low: float, high: float, *, closed: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    ok = low <= value <= high if closed else low < value < high
    bounds = f"[{low}, {high}]" if closed else f"({low}, {high})"
    _require(ok, key, value, f"must lie in {bounds}")


def _count(cfg: DictConfig, key: str, low: int, high: int, bounds: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value != "auto":
        _require(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high, key, value,
                 f"'auto' or a count in [{low}, {high}] ({bounds})")


def validate(cfg: DictConfig) -> None:
    """Check every value range and cross-field constraint; raise ConfigError naming the key."""
    algo = OmegaConf.select(cfg, "algo.name")
    _require(algo in ALGO_SCHEMAS or algo == CUSTOM, "algo", algo,
             f"allowed: {', '.join(sorted(ALGO_SCHEMAS))}, or custom with algo._target_ (docs/extending.md)")
    check_keys(cfg)
    _require(cfg.device in DEVICES, "device", cfg.device, f"allowed: {', '.join(DEVICES)}")
    tuned = cfg.tuned
    _require(tuned.env_id is None or tuned.env_id == cfg.env.id, "env.id", cfg.env.id,
             f"configs/tuned/{tuned.file}.yaml applied, which was tuned for {tuned.env_id}: add ~tuned to train "
             f"{cfg.env.id} with the generic defaults, or select its env group (env=...)")
    for key in ("total_steps", "env.num_envs", "rollout.steps_per_env", "torch_threads", "eval_episodes",
                "critic.epochs", "env.obs_clip", "env.reward_clip"):
        positive(cfg, key)
    num_envs, rollout = cfg.env.num_envs, cfg.rollout
    _require(rollout.backend in BACKENDS, "rollout.backend", rollout.backend, f"allowed: {', '.join(BACKENDS)}")
    _require(rollout.obs_stats in OBS_STATS, "rollout.obs_stats", rollout.obs_stats, f"allowed: {', '.join(OBS_STATS)}")
    _count(cfg, "rollout.env_groups", 1, num_envs, "at most env.num_envs")
    if rollout.backend == "ray":
        _count(cfg, "rollout.workers", 1, num_envs, "Ray actors, each stepping at least one env")
        _require(rollout.obs_stats == "rollout", "rollout.obs_stats", rollout.obs_stats,
                 "the ray backend's actors act on statistics frozen for the rollout: use rollout")
        _require(rollout.learner_envs == "auto", "rollout.learner_envs", rollout.learner_envs,
                 "the ray backend steps every env in its actors: leave it auto")
        _check_ray(cfg)
    else:
        default = RayConfig()
        for key in ("address", "num_cpus_per_actor", "max_restarts"):  # set, and nothing would read it
            value = cfg.ray[key]
            _require(value == getattr(default, key), f"ray.{key}", value,
                     "only the ray backend reads it: add rollout.backend=ray")
        _count(cfg, "rollout.workers", 0, num_envs - 1, "at most env.num_envs - 1: the learner steps one env itself")
        workers = resolve_workers(rollout.workers, num_envs)
        _count(cfg, "rollout.learner_envs", 0, num_envs - max(workers, 1),
               "at most env.num_envs - rollout.workers: each worker steps at least one env")
    for key in ("gamma", "gae_lambda"):
        in_range(cfg, key, 0.0, 1.0, closed=True)
    for net in ("policy", "critic"):
        _require(cfg[net].activation in ACTIVATIONS, f"{net}.activation", cfg[net].activation,
                 f"allowed: {', '.join(ACTIVATIONS)}")
        hidden = list(cfg[net].hidden)
        _require(all(isinstance(h, int) and h > 0 for h in hidden), f"{net}.hidden", hidden,
                 "must be a list of positive layer widths")
    optional_positive(cfg, "critic.max_grad_norm")
    optional_positive(cfg, "critic.clip_range")
    batch = num_envs * cfg.rollout.steps_per_env
    positive(cfg, "critic.minibatch_size", allow_zero=True)
    optional_positive(cfg, "critic.lr")
    seed = cfg.seed
    _require(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED, "seed", seed,
             f"must be an integer in [0, {MAX_SEED}] (numpy seeds are 32-bit; the evaluation uses seed + "
             f"{EVAL_SEED_OFFSET})")
    positive(cfg, "checkpoint.every_steps", allow_zero=True)
    _require(isinstance(cfg.checkpoint.every_steps, int), "checkpoint.every_steps", cfg.checkpoint.every_steps,
             "must be a whole number of environment steps (0: only the final checkpoint)")
    positive(cfg, "checkpoint.keep")
    positive(cfg, "video.every_steps", allow_zero=True)
    _require(isinstance(cfg.video.every_steps, int), "video.every_steps", cfg.video.every_steps,
             "must be a whole number of environment steps (0: no videos)")
    positive(cfg, "video.length")
    for key in ("video.width", "video.height"):
        value = OmegaConf.select(cfg, key)
        _require(isinstance(value, int) and 16 <= value <= 4096 and value % 2 == 0, key, value,
                 "must be an even number of pixels in [16, 4096] (H.264 needs even sizes)")
    positive(cfg, "rollout.worker_timeout_s")
    positive(cfg, "max_nonfinite_updates")
    _require(cfg.optimized_metric in RESULT_KEYS, "optimized_metric", cfg.optimized_metric,
             f"allowed: {', '.join(RESULT_KEYS)}")
    log_std = cfg.policy.log_std_init
    _require(isinstance(log_std, (int, float)) and math.isfinite(log_std), "policy.log_std_init", log_std,
             "must be a finite number")
    mb = cfg.critic.minibatch_size
    _require(mb == 0 or batch % mb == 0, "critic.minibatch_size", mb,
             f"0 (the whole batch) or a divisor of the batch size env.num_envs * rollout.steps_per_env = {batch}")
    _require(cfg.total_steps >= batch, "total_steps", cfg.total_steps,
             f"must be at least one batch (env.num_envs * rollout.steps_per_env = {batch})")
    if algo == CUSTOM:
        cls, settings = updater_settings(cfg.algo)
        if callable(getattr(cls, "validate", None)):  # its own value checks, raising ConfigError
            cls.validate(settings, batch)
    else:
        VALIDATORS[algo](cfg, batch)


def _check_ray(cfg: DictConfig) -> None:
    address = cfg.ray.address
    _require(address is None or address == "auto" or (
        isinstance(address, str) and re.fullmatch(r"(ray://)?[^\s:/]+:\d{1,5}", address) is not None), "ray.address",
             address, "null (a local Ray for the run), auto (the cluster this machine joined) or host:port / "
             "ray://host:port")
    positive(cfg, "ray.num_cpus_per_actor")
    value = cfg.ray.max_restarts
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, "ray.max_restarts", value,
             "must be a whole number >= 0")


def _validate_minibatch_algo(cfg: DictConfig, batch: int) -> None:
    for key in ("algo.lr", "algo.epochs", "algo.minibatch_size"):
        positive(cfg, key)
    positive(cfg, "algo.ent_coef", allow_zero=True)
    optional_positive(cfg, "algo.max_grad_norm")
    mb = cfg.algo.minibatch_size
    _require(batch % mb == 0, "algo.minibatch_size", mb,
             f"must divide the batch size env.num_envs * rollout.steps_per_env = {batch}")


def _validate_ppo(cfg: DictConfig, batch: int) -> None:
    _validate_minibatch_algo(cfg, batch)
    positive(cfg, "algo.clip_range")
    optional_positive(cfg, "algo.target_kl")


def _validate_kl_penalty(cfg: DictConfig, batch: int) -> None:
    _validate_minibatch_algo(cfg, batch)
    positive(cfg, "algo.target_kl")
    optional_positive(cfg, "algo.clip_range")
    for key in ("algo.beta", "algo.beta_min"):
        positive(cfg, key, allow_zero=True)
    positive(cfg, "algo.beta_max")
    a = cfg.algo
    _require(a.beta_min <= a.beta_max, "algo.beta_min", a.beta_min, f"must be <= algo.beta_max={_fmt(a.beta_max)}")
    if a.adaptive:  # doubling or halving 0 keeps it 0: an adaptive β must start above 0
        _require(0 < a.beta and a.beta_min <= a.beta <= a.beta_max, "algo.beta", a.beta,
                 f"must be > 0 and lie in [algo.beta_min, algo.beta_max] = [{_fmt(a.beta_min)}, {_fmt(a.beta_max)}]")


def _validate_trpo(cfg: DictConfig, batch: int) -> None:
    for key in ("algo.max_kl", "algo.cg_iters", "algo.max_backtracks"):
        positive(cfg, key)
    for key in ("algo.cg_damping", "algo.accept_ratio", "algo.ent_coef"):
        positive(cfg, key, allow_zero=True)
    in_range(cfg, "algo.backtrack_coeff", 0.0, 1.0)
    value = cfg.algo.fvp_subsample
    _require(0.0 < value <= 1.0, "algo.fvp_subsample", value, "must lie in (0, 1]")


def _validate_projection(cfg: DictConfig, batch: int) -> None:
    _validate_minibatch_algo(cfg, batch)
    kinds = ("kl", "w2", "frobenius")  # rl_trust.updaters.projection.PROJECTIONS
    _require(cfg.algo.projection in kinds, "algo.projection", cfg.algo.projection, f"allowed: {', '.join(kinds)}")
    for key in ("algo.mean_bound", "algo.cov_bound"):
        positive(cfg, key)
    positive(cfg, "algo.regression_coef", allow_zero=True)
    value = cfg.algo.entropy_final
    _require(value is None or (isinstance(value, (int, float)) and math.isfinite(value)), "algo.entropy_final",
             value, "must be a finite number (nats per action dimension) or null")


VALIDATORS = {"ppo": _validate_ppo, "trpo": _validate_trpo, "kl_penalty": _validate_kl_penalty,
              "projection": _validate_projection}
