"""The one exception type bbl raises for bad input: the CLI prints its message on one line and exits 1."""


class BblError(Exception):
    """Bad input or state, with a message that names the file and the fix."""
