"""The parameter types and the group class every `bbl` command uses: paths, cache locations, counts, and errors
turned into one `error: ...` line with exit status 1."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from bbl.cache.store import cache_location
from bbl.errors import BblError

PathArg = click.Path(path_type=Path)


class _CacheLocation(click.ParamType):
    """A cache's place: a local path, or any fsspec URL (s3://bucket/name.zarr, gs://..., memory://...)."""

    name = "PATH|URL"

    def convert(self, value, param, ctx):
        return cache_location(value)


CacheArg = _CacheLocation()
Positive = click.IntRange(min=1)
"""Counts (windows, batches, pairs, processes): an integer >= 1."""


class _FiniteFloatRange(click.FloatRange):
    """A float range that also refuses nan and inf (click lets both through: nan fails no comparison)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        return number


PositiveFloat = _FiniteFloatRange(min=0, min_open=True)
"""Rates and temperatures: a finite number > 0."""
NonNegativeFloat = _FiniteFloatRange(min=0)
"""Thresholds: a finite number >= 0."""


class OneLineErrors(click.Group):
    """Turns a BblError anywhere below, and click's usage errors (a bad option value, a missing option), into
    one line `error: ...` naming the option and the fix, and exit status 1; nothing has been written by then."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BblError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        except click.ClickException as e:
            ctx = getattr(e, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            click.echo(f"error: {e.format_message()}{where}", err=True)
            sys.exit(1)
        if standalone_mode:
            sys.exit(code if isinstance(code, int) else 0)
        return code


def default_data(name: str) -> Path:
    """../shared/data/NAME next to the working dir, if present (the project's dev data), else NAME."""
    for base in (Path("../shared/data"), Path("data")):
        if (base / name).is_dir():
            return base / name
    return Path(name)
