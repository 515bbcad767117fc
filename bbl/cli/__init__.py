"""The cli room: the `bbl` command line (click). `params` (parameter types, one-line errors), `commands` (one thin
command per stage), `cache_commands` (`bbl cache info | verify | repair`). Commands parse and print; every
decision is made by the room that owns the stage."""

from bbl.cli.commands import main

__all__ = ["main"]
