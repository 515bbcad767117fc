"""The exception types bbl raises for bad input: the CLI prints the message on one line and exits 1 for a
`BblError` (the work cannot be done: a data file, model, cache or output dir is not what it should be), 2 for a
`UsageError` (a setting is wrong: an option's value, a `--set`, a config's key or value, an unknown name), as click
exits for its own usage errors."""

import contextlib


class BblError(Exception):
    """Bad input or state, with a message that names the file and the fix."""


class UsageError(BblError):
    """A setting the user gave is wrong (an option's value, a `--set`, a config key or value, an unknown name): the
    CLI exits 2 with it, as for click's own usage errors; nothing has been written."""


def check_options_at_least_one(obj, names) -> None:
    """Refuse a CLI option of `obj` (a settings dataclass) set below 1; None means unset and passes.

    Raises:
        UsageError: "--NAME VALUE must be >= 1" (the field name with dashes, as the option is spelled).
    """
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} {value} must be >= 1")


@contextlib.contextmanager
def as_usage_error():
    """A `BblError` raised in the block is a `UsageError`: what it checks are settings the user gave (an option's
    value turned into a config, a config file). Use it around pure checks of settings, never around work."""
    try:
        yield
    except UsageError:
        raise
    except BblError as e:
        raise UsageError(str(e)) from None
