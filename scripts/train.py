"""Train an agent: ``python scripts/train.py algo=trpo env=HalfCheetah [key=value ...]``.

Continue an interrupted (or extend a finished) run in place, from its newest checkpoint:
``python scripts/train.py resume=runs/<run> [total_steps=N progress=false checkpoint.every_steps=N ...]``.

Every mistake on the command line is one line on stderr naming the key and what is allowed, and a
non-zero exit; nothing is left behind that looks like a run.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rl_trust import checkpoint, sweep
from rl_trust.config import register_configs, schema_keys, unknown_key, validate
from rl_trust.errors import CheckpointError, ConfigError, DivergedError, WorkerError
from rl_trust.runs import holds_run, resume_config
from rl_trust.train import MACHINE_FILE, run
from rl_trust.workers import resolve_workers

register_configs()


class RunFailed(RuntimeError):
    """A run of a multirun failed (its one line is already printed): Hydra records the job as failed and
    the other runs go on; the multirun then ends non-zero."""


def _error(message: str, code: int = 2) -> float:
    """Print the one line; exit with ``code``, or in a multirun end this run only: an Optuna trial returns
    the worst value for its direction (the study goes on), any other run raises :class:`RunFailed`."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        with contextlib.suppress(OSError):  # the sweep's table (trials.csv) shows why the run failed
            (Path(hydra_cfg.runtime.output_dir) / sweep.FAILURE).write_text(message + "\n")
        if sweep.is_optuna(hydra_cfg):
            return sweep.failed_value(hydra_cfg)
        raise RunFailed(message)
    sys.exit(code)


HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def _remove_run_dir(out_dir: Path) -> None:
    """Nothing was trained: remove what Hydra and this command wrote (the directory held no run before),
    and the directory if that leaves it empty; anything else in it stays."""
    for name in HYDRA_FILES:
        (out_dir / ".hydra" / name).unlink(missing_ok=True)
    for path in out_dir.glob("events.out.tfevents.*"):
        path.unlink(missing_ok=True)
    shutil.rmtree(out_dir / checkpoint.SUBDIR, ignore_errors=True)
    (out_dir / ".lock").unlink(missing_ok=True)
    (out_dir / MACHINE_FILE).unlink(missing_ok=True)
    for folder in (out_dir / ".hydra", out_dir):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: it may hold files that are not ours


class _Stopped(BaseException):
    """A termination signal arrived (SIGTERM: a cluster's pre-emption, ``kill``)."""


def _terminated(signum, frame) -> None:
    raise _Stopped(signal.Signals(signum).name)


def _resume(cfg: DictConfig) -> tuple[DictConfig, Path, dict, list[tuple[Path, str]]]:
    """The checks of ``resume=``, changing nothing: the config, the run directory, the checkpoint's state
    and the newer checkpoint files that could not be read."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        raise ConfigError(f"resume={cfg.resume!r} is invalid in a multirun (-m): resume one run at a time")
    run_dir = Path(cfg.resume)
    state, _, skipped = checkpoint.load_latest(run_dir)
    cfg = resume_config(OmegaConf.create(state["config"]), cfg, list(hydra_cfg.overrides.task))
    validate(cfg)
    step = int(state["global_step"])
    batch = cfg.env.num_envs * cfg.rollout.steps_per_env
    if (run_dir / "metrics.json").exists() and step >= cfg.total_steps // batch * batch:
        raise ConfigError(f"resume={str(run_dir)!r}: that run already finished its {step} steps (raise total_steps "
                          f"by at least one batch, {batch} steps, to extend it)")
    return cfg, run_dir, state, skipped


CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")  # absolute: also when imported (the tests)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="config")
def main(cfg: DictConfig) -> float:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    resuming = cfg.resume is not None
    fresh = False
    try:
        if resuming:
            cfg, out_dir, state, skipped = _resume(cfg)  # checks only: a refused resume changes nothing
            with checkpoint.lock(out_dir):
                for bad, why in skipped:  # out of the way, so that pruning cannot keep it instead of a good one
                    os.replace(bad, bad.with_suffix(".corrupt"))
                    print(f"note: skipped {why}; renamed it {bad.with_suffix('.corrupt').name}", file=sys.stderr)
                print(f"resuming {out_dir} from step {state['global_step']}", flush=True)
                metrics = run(cfg, out_dir, resume=state)
            print(summary(metrics, cfg, out_dir), flush=True)
            return metrics[cfg.optimized_metric]
        if holds_run(out_dir):  # finished, stopped, or in progress in another process: touch nothing
            hint = (f"continue it with resume={shlex.quote(str(out_dir))}" if checkpoint.find(out_dir)
                    else "it stopped before its first checkpoint: remove it to start again")
            if checkpoint.locked(out_dir):
                hint = "another process is training there now"
            raise ConfigError(f"hydra.run.dir={str(out_dir)!r} already holds a run: {hint}, or train into "
                              "another directory")
        share = sweep.cores_per_trial(HydraConfig.get())
        if share is not None and cfg.rollout.workers == "auto" and cfg.rollout.backend == "local":  # trials share cores
            cfg.rollout.workers = resolve_workers("auto", cfg.env.num_envs, cores=share)
        with checkpoint.lock(out_dir):  # refused if another process took it meanwhile: then nothing is ours
            fresh = True
            metrics = run(cfg, out_dir)
        print(summary(metrics, cfg, out_dir), flush=True)
        if HydraConfig.get().mode == RunMode.MULTIRUN and sweep.is_optuna(HydraConfig.get()):
            return sweep.trial_value(metrics[cfg.optimized_metric], HydraConfig.get())
    except (ConfigError, CheckpointError) as e:
        if fresh and HydraConfig.get().mode != RunMode.MULTIRUN:  # a multirun keeps the run's record
            _remove_run_dir(out_dir)
        return _error(str(e))
    except WorkerError as e:
        if e.details:
            with contextlib.suppress(OSError):
                (out_dir / "worker_error.log").write_text(e.details)
        return _error(f"training stopped: {e}{_where(out_dir, e.details)}", 1)
    except DivergedError as e:
        return _error(f"training stopped: {e}", 1)
    except OSError as e:  # disk full, permissions: where the run writes
        return _error(f"training stopped: cannot write {e.filename or out_dir}: {e.strerror or e}", 1)
    except (KeyboardInterrupt, _Stopped) as e:
        name = "SIGINT" if isinstance(e, KeyboardInterrupt) else str(e)
        print(f"error: stopped by {name}{_where(out_dir, '')}", file=sys.stderr, flush=True)
        sys.exit(130 if name == "SIGINT" else 143)  # a signal ends a multirun too
    return metrics[cfg.optimized_metric]


def summary(metrics: dict[str, float], cfg: DictConfig, out_dir: Path) -> str:
    """What a finished run prints: its result, its cost, where it is, and what to do with it next."""
    seconds = int(metrics["train/time_s"])
    where = shlex.quote(str(out_dir))
    inside = lambda name: shlex.quote(str(out_dir / name))  # noqa: E731 - a file in the run directory
    bin_dir = Path(sys.executable).parent  # the virtual environment's, as the README runs it
    if bin_dir.is_relative_to(Path.cwd()):
        bin_dir = bin_dir.relative_to(Path.cwd())
    python, tensorboard = bin_dir / "python", bin_dir / "tensorboard"
    scripts = Path(__file__).resolve().parent
    if scripts.is_relative_to(Path.cwd()):
        scripts = scripts.relative_to(Path.cwd())
    return "\n".join([
        f"done: {cfg.algo.name} on {cfg.env.id}, seed {cfg.seed}: evaluation return {metrics['eval/mean_return']:.1f}"
        f" ± {metrics['eval/std_return']:.1f} over {int(metrics['eval/episodes'])} episodes",
        f"      {int(metrics['train/global_step'])} steps in {seconds // 3600}:{seconds // 60 % 60:02d}:"
        f"{seconds % 60:02d} ({metrics['train/sps']:.0f} steps/s); run directory {out_dir}",
        f"next: {tensorboard} --logdir {where}",
        f"      {python} {scripts / 'evaluate.py'} {where} --episodes 20 [--video {inside('eval_videos')}]",
        f"      {python} {scripts / 'export.py'} {where} --format onnx --out {inside('policy.onnx')}",
        f"      {python} {scripts / 'plot.py'} {where} --out {inside('curve.png')}",
    ])


def _where(out_dir: Path, details: str) -> str:
    more = f"; its traceback is in {out_dir / 'worker_error.log'}" if details else ""
    if checkpoint.find(out_dir) is None:
        return f"{more}; no checkpoint was taken yet (remove {str(out_dir)!r} to start again)"
    return f"{more}; continue from the last checkpoint with resume={shlex.quote(str(out_dir))}"


def hydra_error_line(e: BaseException) -> str:
    """One line for a Hydra or OmegaConf error: the key, and what is allowed where that can be said."""
    if isinstance(e, MissingConfigException) and e.options:
        group = (e.missing_cfg_file or "").rsplit("/", 1)[0]
        choice = (e.missing_cfg_file or "").rsplit("/", 1)[-1]
        options = sorted(e.options)
        close = difflib.get_close_matches(choice, options, n=1) or [o for o in options if choice.startswith(o)]
        hint = f" (did you mean {group}={close[0]}?)" if close else ""
        return f"{group}={choice} is not an option{hint}: allowed: {', '.join(options)}"
    cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else e
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        msg = str(getattr(cause, "msg", "") or cause).strip().splitlines()[0]
        head = str(e).strip().splitlines()[0] if cause is not e else ""
        key = cause.full_key
        if "not in struct" in msg or "not in 'Config'" in msg or "Key '" in msg and "not" in msg:
            keys = schema_keys(key.rpartition(".")[0])
            return str(unknown_key(key, keys)) if keys else f"{key} is not a config key"
        section = schema_keys(key) if "Invalid type assigned" in msg else None
        if section:
            hint = " (checkpoint.every_steps=0 keeps only the final checkpoint)" if key == "checkpoint" else ""
            return (f"{key} is a section, not a value: set its keys ({', '.join(section)}), e.g. "
                    f"{key}.{section[0]}=...{hint}")
        value = getattr(cause, "__dict__", {}).get("value", None)
        for kind, want in (("Integer", "an integer (write 100000, not 1e5 or 1.5)"), ("Float", "a number"),
                           ("Boolean", "true or false")):
            if f"converted to {kind}" in msg or f"valid {kind.lower()[:4]}" in msg:
                shown = msg.split("'")[1] if msg.count("'") >= 2 else value
                return f"{key}={shown} is invalid: must be {want}"
        return f"{key}: {msg}" + (f" ({head})" if head and key not in head else "")
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return " ".join(ln for ln in lines if not ln.startswith(("full_key:", "object_type", "Set the environment")))


def _custom_hint(line: str, argv: list[str]) -> str:
    """For ``algo=custom``, an unknown ``algo.<key>`` is most likely the user's updater's own setting given
    without its +: say so (or name the custom config's own key it misspells) rather than list the built-in
    updaters' keys."""
    key = line.split(" is not a config key", 1)[0]
    if "algo=custom" not in argv or not key.startswith("algo.") or key == line:
        return line
    close = difflib.get_close_matches(key.split(".")[1], ["_target_", "name"], n=1, cutoff=0.6)
    if close:
        return f"{key} is not a key of algo=custom (did you mean algo.{close[0]}?)"
    given = [a.split("=", 1) for a in argv if a.split("=", 1)[0] == key or a.startswith(f"{key}.")]
    full, value = (given[-1] if given and len(given[-1]) == 2 else (key, "..."))  # Hydra keeps the last
    return (f"{key} is not a key of algo=custom (name, _target_): a custom updater's own setting takes a +, as "
            f"in +{full}={value} (docs/extending.md)")


def _check_argv(argv: list[str]) -> list[str]:
    """The command line's own mistakes, before Hydra (whose argparse prints a usage page, and which would
    create the run directory first); returns the arguments with a resume's directory and run directory
    set. Raises ConfigError."""
    parser = get_args_parser()

    def error(message: str):
        raise ConfigError(f"train.py: {message} (see --help)")

    parser.error = error
    args = parser.parse_args(argv)
    seen = {item.split("=", 1)[0].lstrip("+~"): item for item in args.overrides}  # the last wins, as in Hydra
    if "resume" not in seen or seen["resume"] in ("resume=null", "resume=None"):
        return argv
    value = seen["resume"].split("=", 1)[1].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    if args.multirun or any(o.lstrip("+").startswith(("hparams_search=", "hydra.mode=")) for o in args.overrides):
        raise ConfigError(f"resume={value!r} is invalid in a multirun (-m, hparams_search=, hydra.mode): resume one "
                          "run at a time")
    if not value:
        raise ConfigError("resume= needs a run directory (resume=runs/<run>)")
    if not os.path.isdir(value):
        raise ConfigError(f"resume={value!r} is not a run directory")
    if "hydra.run.dir" in seen:
        raise ConfigError(f"{seen['hydra.run.dir']} cannot be given with resume=: a run continues in its own "
                          "directory")
    path = os.path.abspath(value).replace("\\", "\\\\").replace("'", "\\'")
    # the run's directory, quoted for Hydra (commas and = in a multirun's folder names); .hydra/ keeps the
    # original command
    ours = [f"resume='{path}'", f"hydra.run.dir='{path}'", "hydra.output_subdir=null"]
    return ours + [a for a in argv if not a.startswith("resume=")]


def _check_sweep(argv: list[str]) -> None:
    """An Optuna sweep's settings, checked before Hydra starts it (Hydra turns an exception in a callback
    into a warning, so the sweep's own callback cannot refuse it): the config composed as the multirun
    will compose it. Raises ConfigError; Hydra's own errors are left to the run itself."""
    args = get_args_parser().parse_args(argv)
    if not (args.multirun or any(o.lstrip("+").startswith("hparams_search=") for o in args.overrides)):
        return
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_dir(config_dir=CONFIGS, version_base="1.3", job_name="train"):
            cfg = GlobalHydra.instance().hydra.compose_config("config", args.overrides, run_mode=RunMode.MULTIRUN)
    except (HydraException, OmegaConfBaseException):
        return  # the multirun reports it, as one line
    if cfg.hydra.mode == RunMode.MULTIRUN and sweep.is_optuna(cfg.hydra):
        HydraConfig.instance().set_config(cfg)
        sweep.check_optuna(cfg)


def cli(argv: list[str]) -> int:
    """Run ``main`` on ``argv``, Hydra's own errors reduced to one line; returns the exit code."""
    try:
        argv = _check_argv(argv)
        _check_sweep(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    full_errors = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # raise Hydra's errors to here rather than print them
    signal.signal(signal.SIGTERM, _terminated)
    sys.argv = [sys.argv[0], *argv]
    try:
        main()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (print(e.code, file=sys.stderr) or 1)
    except (KeyboardInterrupt, _Stopped):  # before the run started
        print("error: stopped before training started", file=sys.stderr)
        return 130
    except (HydraException, OmegaConfBaseException) as e:
        if full_errors == "1":
            raise
        print(f"error: {_custom_hint(hydra_error_line(e), argv)}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"error: the multirun ended with a failed run ({e}); the others finished", file=sys.stderr)
        return 1
    except OSError as e:  # Hydra making the run directory: a file is in the way, no permission
        print(f"error: cannot create the run directory {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    finally:
        if full_errors is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_errors
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
