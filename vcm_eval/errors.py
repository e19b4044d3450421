"""The project's error type for what a user can fix: a setting, a file, a codec, a store.

The CLI prints a :class:`UserError` as one line and exits with status 1; anything else is a bug and keeps
its traceback. Errors of a kind that callers already catch by a builtin type (a bad value, a missing file)
subclass that type too, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """An error whose message names what is wrong and how to fix it (a setting, a file, a binary)."""


class SettingError(UserError, ValueError):
    """A setting or an input value a user chose is not usable (the message names the key or the file)."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the run needs is not there (the message names it and the setting that points to it)."""


def non_negative_setting(value: Any, key: str, fix: str) -> float:
    """``float(value)`` when it is a number >= 0.

    Raises:
        SettingError: one line naming ``key`` and its value, then ``fix`` (what to set instead), for a negative
            number, NaN, or anything that is not a number.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number >= 0:
        raise SettingError(f"{key}={value!r}: {fix}")
    return number


class TargetError(UserError, TypeError):
    """A config's ``_target_`` builds an object of the wrong kind (the message names the option and the target)."""
