"""The one exception type bbl raises for bad input: the CLI prints its message on one line and exits 1."""


class BblError(Exception):
    """Bad input or state, with a message that names the file and the fix."""


def check_options_at_least_one(obj, names) -> None:
    """Refuse a CLI option of `obj` (a settings dataclass) set below 1; None means unset and passes.

    Raises:
        BblError: "--NAME VALUE must be >= 1" (the field name with dashes, as the option is spelled).
    """
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < 1:
            raise BblError(f"--{name.replace('_', '-')} {value} must be >= 1")
