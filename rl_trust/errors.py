"""The one exception type for bad user input."""


class ConfigError(ValueError):
    """A user-settable option has a bad value; the message names the key and what is allowed."""
