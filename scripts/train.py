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
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rl_trust import checkpoint
from rl_trust.config import register_configs, validate
from rl_trust.errors import CheckpointError, ConfigError, DivergedError, WorkerError
from rl_trust.runs import holds_run, resume_config
from rl_trust.train import run

register_configs()


def _error(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _remove_run_dir(out_dir: Path) -> None:
    """Nothing was trained: remove what Hydra and the run wrote, and the directory if that leaves it empty."""
    shutil.rmtree(out_dir / ".hydra", ignore_errors=True)
    for path in [*out_dir.glob("*.log"), *out_dir.glob("events.out.tfevents.*")]:
        path.unlink(missing_ok=True)
    shutil.rmtree(out_dir / checkpoint.SUBDIR, ignore_errors=True)
    (out_dir / ".lock").unlink(missing_ok=True)
    try:
        out_dir.rmdir()
    except OSError:
        pass  # it holds files that are not ours: leave them


def _resume(cfg: DictConfig) -> tuple[DictConfig, Path, dict]:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        raise ConfigError(f"resume={cfg.resume!r} is invalid in a multirun (-m): resume one run at a time")
    run_dir = Path(cfg.resume)
    if not run_dir.is_dir():
        raise ConfigError(f"resume={cfg.resume!r} is not a run directory")
    state, path, skipped = checkpoint.load_latest(run_dir)
    for bad, why in skipped:  # out of the way, so that pruning cannot keep it instead of a good one
        os.replace(bad, bad.with_suffix(".corrupt"))
        print(f"note: skipped {why}; renamed it {bad.with_suffix('.corrupt').name}", file=sys.stderr)
    cfg = resume_config(OmegaConf.create(state["config"]), cfg, list(hydra_cfg.overrides.task))
    validate(cfg)
    step = int(state["global_step"])
    batch = cfg.env.num_envs * cfg.rollout.steps_per_env
    if (run_dir / "metrics.json").exists() and step >= cfg.total_steps // batch * batch:
        raise ConfigError(f"resume={cfg.resume!r}: that run already finished its {step} steps (raise total_steps "
                          "to extend it)")
    print(f"resuming {run_dir} from {path.name} (step {step})", file=sys.stderr, flush=True)
    return cfg, run_dir, state


CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")  # absolute: also when imported (the tests)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="config")
def main(cfg: DictConfig) -> float:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    resuming = cfg.resume is not None
    fresh = not resuming and not holds_run(out_dir)
    try:
        if resuming:
            cfg, out_dir, state = _resume(cfg)
            metrics = run(cfg, out_dir, resume=state)
        elif not fresh:
            raise ConfigError(f"hydra.run.dir={str(out_dir)!r} already holds a run: continue it with "
                              f"resume={out_dir}, or train into a new directory")
        else:
            metrics = run(cfg, out_dir)
    except (ConfigError, CheckpointError) as e:
        if fresh:
            _remove_run_dir(out_dir)
        _error(str(e))
    except WorkerError as e:
        if e.details:
            with contextlib.suppress(OSError):
                (out_dir / "worker_error.log").write_text(e.details)
        _error(f"training stopped: {e}{_where(out_dir, e.details)}", 1)
    except DivergedError as e:
        _error(f"training stopped: {e}", 1)
    except OSError as e:  # disk full, permissions: where the run writes
        _error(f"training stopped: cannot write {e.filename or out_dir}: {e.strerror or e}", 1)
    return metrics["eval/mean_return"]


def _where(out_dir: Path, details: str) -> str:
    found = checkpoint.find(out_dir)
    more = f"; its traceback is in {out_dir / 'worker_error.log'}" if details else ""
    if found is None:
        return f"{more}; no checkpoint was taken yet"
    return f"{more}; continue from the last checkpoint with resume={out_dir}"


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
            return f"{key} is not a config key{_suggest(key)}"
        return f"{key}: {msg}" + (f" ({head})" if head and key not in head else "")
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return " ".join(ln for ln in lines if not ln.startswith(("full_key:", "object_type", "Set the environment")))


def _suggest(key: str) -> str:
    from rl_trust.config import ALGO_SCHEMAS, Config, _check_node  # noqa: F401

    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.structured(Config)
    try:
        keys = list(OmegaConf.select(node, parent).keys()) if parent else list(node.keys())
    except Exception:
        return ""
    if parent == "algo":
        keys = sorted({f for schema in ALGO_SCHEMAS.values() for f in schema.__dataclass_fields__})
    close = difflib.get_close_matches(leaf, keys, n=1)
    where = f"the keys of {parent}" if parent else "the top-level keys"
    return (f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else "") + \
        f": {where} are {', '.join(sorted(keys))}"


def _terminated(signum, frame) -> None:
    raise SystemExit(f"error: stopped by signal {signal.Signals(signum).name}; a run continues from its last "
                     "checkpoint with resume=RUN_DIR")


def cli(argv: list[str]) -> int:
    """Run ``main`` on ``argv``, Hydra's own errors reduced to one line; returns the exit code."""
    resume = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if resume and resume[-1] not in ("null", ""):
        problem = ("is not a run directory" if not os.path.isdir(resume[-1]) else
                   "contains a single quote, which Hydra cannot take in a path" if "'" in resume[-1] else None)
        if problem:  # before Hydra, which would create the directory
            print(f"error: resume={resume[-1]!r} {problem}", file=sys.stderr)
            return 2
        # continue in the run's own directory, and leave its .hydra/ (the original command) as it is
        argv = [*argv, f"hydra.run.dir='{os.path.abspath(resume[-1])}'", "hydra.output_subdir=null"]
    full_errors = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # raise Hydra's errors to here rather than print them
    signal.signal(signal.SIGTERM, _terminated)
    sys.argv = [sys.argv[0], *argv]
    try:
        main()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (print(e.code, file=sys.stderr) or 1)
    except KeyboardInterrupt:
        print("error: interrupted; a run continues from its last checkpoint with resume=RUN_DIR", file=sys.stderr)
        return 130
    except (HydraException, OmegaConfBaseException) as e:
        if full_errors == "1":
            raise
        print(f"error: {hydra_error_line(e)}", file=sys.stderr)
        return 2
    finally:
        if full_errors is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_errors
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
