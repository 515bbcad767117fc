"""The cli room: the `bbl` command line (click). `params` (parameter types, the command class with its deprecated
spellings and late-built config options, `--set`, one-line errors), `commands` (one thin command per stage),
`cache_commands` (`bbl cache info | verify | repair`). Commands parse and print; every decision is made by the
room that owns the stage. Importing it loads no torch or numpy: each command imports its stage when it runs."""

from bbl.cli.commands import main

__all__ = ["main"]
