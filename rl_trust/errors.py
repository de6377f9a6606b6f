"""The exception types a run reports as one line (``scripts/train.py`` prints them without a traceback)."""


class ConfigError(ValueError):
    """A user-settable option has a bad value; the message names the key and what is allowed."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (missing, truncated, corrupt, not ours); the message says which."""


class WorkerError(RuntimeError):
    """A rollout worker process died, failed or stopped answering. ``details``: its traceback, if it sent one."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


class DivergedError(FloatingPointError):
    """Updates kept producing non-finite values; the message names the likely cause."""


class RenderError(RuntimeError):
    """Frames cannot be rendered or a video cannot be written here; the message says what to install or set."""
