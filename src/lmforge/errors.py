"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LmforgeError(Exception):
    """Base class for problems caused by input (config, data, paths), not by a bug."""

    exit_code = 2


class ConfigError(LmforgeError):
    """A config key, value or combination is wrong."""


class DataError(LmforgeError):
    """A dataset, its registration or one of its records is wrong."""


class NotImplementedYet(LmforgeError):
    """A command or option that a later version fills in."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string.

    Every unknown-name message uses this one helper, so a typo is matched the same way
    whether it is a config key, a dataset, a column, a template or an asset.
    """
    match = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
