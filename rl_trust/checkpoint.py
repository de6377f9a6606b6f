"""Checkpoint files: a run's complete state, checksummed, written atomically and durably.

A file is one header line, ``RL_TRUST-CHECKPOINT 1 <size> <sha256>``, then the ``torch.save`` bytes
of the state dict, so a truncated or corrupted file is refused instead of loading garbage (``torch.load``
checks neither). A write goes to a temporary file in the same directory, is flushed and fsynced, renamed
over the target and the directory fsynced: a reader sees the old file or the new one, never half of one.
A process killed mid-write leaves its temporary file; :class:`Checkpointer` removes such leftovers when a
run starts or resumes.

A run directory holds ``checkpoints/step_<global step>.pt`` (the newest ``keep``, taken every
``every_steps`` environment steps at an iteration boundary) and ``checkpoint.pt``, the final one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from rl_trust.errors import CheckpointError, ConfigError

MAGIC = b"RL_TRUST-CHECKPOINT"
VERSION = 2
FINAL = "checkpoint.pt"
SUBDIR = "checkpoints"
_STEP_FILE = re.compile(r"step_(\d+)\.pt")
_TMP_MARK = ".tmp-"


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (temporary file, fsync, rename, fsync of the
    directory), with the mode a plain ``open`` would give (the umask's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _umask_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def dumps(state: dict) -> bytes:
    """``state`` as checkpoint bytes: the header, then ``torch.save``'s bytes."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header = b"%s %d %d %s\n" % (MAGIC, VERSION, len(payload), hashlib.sha256(payload).hexdigest().encode())
    return header + payload


def loads(data: bytes, name: str = "checkpoint", map_location: str | torch.device = "cpu",
          legacy: bool = False) -> dict:
    """The state dict in checkpoint bytes, after checking the header, the length and the checksum.
    ``legacy``: also read a plain ``torch.save`` file (rl_trust's checkpoints before checksums), unchecked."""
    if not data:
        raise CheckpointError(f"{name} is empty")
    if legacy and data.startswith(b"PK"):
        return _unpickle(data, name, map_location)
    header, sep, payload = data.partition(b"\n")
    fields = header.split(b" ")
    if not data.startswith(MAGIC) or not sep or len(fields) != 4:
        kind = "a plain torch.save file" if data.startswith(b"PK") else "not a file scripts/train.py writes"
        raise CheckpointError(f"{name} is not an rl_trust checkpoint ({kind}: no rl_trust checkpoint header)")
    try:
        version, size, digest = int(fields[1]), int(fields[2]), fields[3].decode()
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{name} has a damaged header") from None
    if version != VERSION:
        raise CheckpointError(f"{name} has checkpoint format {version}; this rl_trust reads format {VERSION}")
    if len(payload) != size:
        raise CheckpointError(f"{name} is truncated or padded ({len(payload)} bytes of state, the header says {size})")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{name} is corrupt (its checksum does not match its contents)")
    return _unpickle(payload, name, map_location)


def _unpickle(payload: bytes, name: str, map_location) -> dict:
    try:
        # Checkpoints hold numpy arrays (normaliser statistics, env states) and plain config dicts.
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)
    except Exception as e:  # a file whose checksum matches but torch cannot read: another tool's
        raise CheckpointError(f"{name} cannot be read by torch.load ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{name} holds a {type(state).__name__}, not a run's state")
    return state


def save(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` as a checkpoint (atomic, durable, checksummed)."""
    write_bytes(path, dumps(state))


def load(path: str | Path, map_location: str | torch.device = "cpu", legacy: bool = False) -> dict:
    """Read a checkpoint file, or a run directory's final (else newest) checkpoint; :class:`CheckpointError`
    if unusable. ``legacy``: see :func:`loads`."""
    path = Path(path)
    if path.is_dir():  # the final checkpoint, else the newest readable periodic one
        candidates = [p for p in [path / FINAL] if p.is_file()] + [p for _, p in reversed(step_files(path))]
        if not candidates:
            raise CheckpointError(f"{str(path)!r} is a directory without checkpoints (no {FINAL} or {SUBDIR}/)")
        errors = []
        for candidate in candidates:
            try:
                return load(candidate, map_location, legacy)
            except CheckpointError as e:
                errors.append(str(e))
        raise CheckpointError(f"{str(path)!r} holds no readable checkpoint ({'; '.join(errors)})")
    if not path.exists():
        raise CheckpointError(f"{str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} is not a file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{str(path)!r} cannot be read ({e.strerror or e})") from None
    return loads(data, repr(str(path)), map_location, legacy)


def step_files(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The periodic checkpoints under ``run_dir``, as (global step, path), oldest first."""
    folder = Path(run_dir) / SUBDIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.fullmatch(p.name))]
    return sorted(found)


def find(run_dir: str | Path) -> Path | None:
    """The checkpoint to continue ``run_dir`` from: the final one, else the newest periodic one."""
    final = Path(run_dir) / FINAL
    if final.is_file():
        return final
    files = step_files(run_dir)
    return files[-1][1] if files else None


def load_latest(run_dir: str | Path) -> tuple[dict, Path, list[tuple[Path, str]]]:
    """The newest readable checkpoint of ``run_dir``: (state, its path, (file, why) for each newer file
    skipped as unreadable). :class:`CheckpointError` when there is none."""
    run_dir = Path(run_dir)
    candidates = [p for _, p in reversed(step_files(run_dir))]
    if (run_dir / FINAL).is_file():  # a link to the newest periodic file, unless that is gone
        candidates.append(run_dir / FINAL)
    skipped = []
    for path in candidates:
        try:
            return load(path), path, skipped
        except CheckpointError as e:
            skipped.append((path, str(e)))
    why = f" (skipped {'; '.join(e for _, e in skipped)})" if skipped else ""
    raise CheckpointError(f"{str(run_dir)!r} holds no usable checkpoint to resume from{why}")


_held: dict[Path, int] = {}  # run directories this process holds the lock of, and how many times


@contextlib.contextmanager
def lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock file for the block: a second process training into it is refused (taking it
    again in the same process is fine: scripts/train.py takes it before it looks at the directory)."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        _held[run_dir] += 1
        try:
            yield
        finally:
            _held[run_dir] -= 1
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another process is training in {str(run_dir)!r}: wait for it to end, or stop it "
                              "and resume") from None
        _held[run_dir] = 1
        try:
            yield
        finally:
            del _held[run_dir]
            fcntl.flock(f, fcntl.LOCK_UN)


def locked(run_dir: str | Path) -> bool:
    """Whether another process holds ``run_dir``'s lock (is training there now)."""
    path = Path(run_dir) / ".lock"
    if Path(run_dir).resolve() in _held or not path.is_file():
        return False
    try:
        f = open(path)  # read-only: a run the caller may not write (another user's, a read-only copy) is probed too
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


class Checkpointer:
    """Takes a run's periodic checkpoints: every ``every_steps`` environment steps (0: none), the newest
    ``keep`` kept, plus the final one (``checkpoint.pt``, a hard link to the last periodic file)."""

    def __init__(self, run_dir: str | Path, every_steps: int, keep: int):
        self.run_dir, self.every, self.keep = Path(run_dir), every_steps, keep
        self.folder = self.run_dir / SUBDIR
        for leftover in self._leftovers():  # from a process killed while writing
            leftover.unlink(missing_ok=True)

    def _leftovers(self) -> list[Path]:
        dirs = [d for d in (self.run_dir, self.folder) if d.is_dir()]
        return [p for d in dirs for p in d.iterdir() if _TMP_MARK in p.name and p.name.startswith(".")]

    def due(self, previous_step: int, step: int) -> bool:
        """Whether the iteration that took the run from ``previous_step`` to ``step`` crossed an interval."""
        return self.every > 0 and step // self.every > previous_step // self.every

    def save(self, step: int, state: dict, *, final: bool = False) -> Path:
        """Write the checkpoint of global step ``step``; with ``final`` also ``checkpoint.pt``. Returns its path."""
        path = self.folder / f"step_{step:012d}.pt"
        save(path, state)
        if final:
            link = self.run_dir / f".{FINAL}{_TMP_MARK}{os.getpid()}"
            link.unlink(missing_ok=True)
            try:
                os.link(path, link)
            except OSError:  # no hard links on this filesystem: a second copy
                write_bytes(link, path.read_bytes())
            os.replace(link, self.run_dir / FINAL)
            _fsync_dir(self.run_dir)
        for _, old in step_files(self.run_dir)[: -self.keep]:
            old.unlink(missing_ok=True)
        return path


def differences(a, b, path: str = "state", ignore: tuple[str, ...] = ("state.logger.elapsed",)) -> list[str]:
    """Where two checkpoint states differ, to the last bit (paths; ``ignore``: wall-clock entries). Saved
    envs are compared by what they do: restored, both step the same random actions (pickle's bytes are
    not canonical)."""
    import numpy as np

    if path in ignore:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}.{k}", ignore)]
    if path.startswith("state.collector.envs[") and isinstance(a, bytes) and isinstance(b, bytes):
        return [] if _same_env(a, b) else [path]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]", ignore)]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return [] if a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b) else [path]
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return [] if a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f") else [path]
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:  # both NaN
        return []
    return [] if type(a) is type(b) and a == b else [path]


def _same_env(a: bytes, b: bytes, steps: int = 200) -> bool:
    import numpy as np

    from rl_trust.envs import restore_env

    env_a, env_b = restore_env(a), restore_env(b)
    space = env_a.action_space
    space.seed(0)
    try:
        for _ in range(steps):
            action = space.sample()
            out_a, out_b = env_a.step(action), env_b.step(action)
            if not (np.array_equal(out_a[0], out_b[0]) and out_a[1:4] == out_b[1:4]):
                return False
            if out_a[2] or out_a[3]:
                if not np.array_equal(env_a.reset()[0], env_b.reset()[0]):
                    return False
        return True
    finally:
        env_a.close()
        env_b.close()
