"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class LmforgeError(Exception):
    """Base class for problems caused by input (config, data, paths), not by a bug."""

    exit_code = 2


class ConfigError(LmforgeError):
    """A config key, value or combination is wrong."""


class DataError(LmforgeError):
    """A dataset, its registration or one of its records is wrong."""


class NotImplementedYet(LmforgeError):
    """A command or option that a later version fills in."""
