"""The pieces every `bbl` command is built from: parameter types (paths, cache locations, counts), the command
class (old option spellings kept as deprecated aliases, options derived from a config dataclass when first
needed), `--set` for a config's fields, and the group that turns every error into one `error: ...` line.

Exit status, one rule: 2 for every usage error (click's convention: an unknown option, a missing or malformed
value; and bbl's own `UsageError`: a value out of its setting's range, a bad `--set`, an unknown name, which
`BblCommand` raises as click's `UsageError`), 1 for a failure of the work (`BblError`: a file, model, cache or
output dir that is not what it should be).
Nothing here imports torch or numpy: `bbl --help` stays light (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import types
import typing
from pathlib import Path

import click

from bbl import RENAMED_OPTIONS
from bbl.errors import BblError, UsageError

PathArg = click.Path(path_type=Path)


class _CacheLocation(click.ParamType):
    """A cache's place: a local path, or any fsspec URL (s3://bucket/name.zarr, gs://..., memory://...)."""

    name = "PATH|URL"

    def convert(self, value, param, ctx):
        from bbl.cache.store import cache_location  # bbl.cache is heavy: imported when a cache is named

        return cache_location(value)


CacheArg = _CacheLocation()
INT64_MAX = 2**63 - 1
SEED_MAX = 2**32 - 1
"""The largest seed numpy's legacy seeding (which the Trainer's `set_seed` calls) and torch accept alike."""
Positive = click.IntRange(min=1, max=INT64_MAX)
"""Counts (windows, batches, pairs, processes): an integer >= 1 (and one torch and numpy can hold)."""
Seed = click.IntRange(min=0, max=SEED_MAX)
"""A seed: 0 to 2**32 - 1 (numpy's range; torch takes it too)."""
Int64 = click.IntRange(min=-INT64_MAX - 1, max=INT64_MAX)
"""Any integer setting (its range is the config's to check): one that fits an int64."""


class _FiniteFloatRange(click.FloatRange):
    """A float range that also refuses nan and inf (click lets both through: nan fails no comparison)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        return number


class _FiniteFloat(click.types.FloatParamType):
    """Any finite number (a config's float field; its range is the config's to check)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        return number


FiniteFloat = _FiniteFloat()
PositiveFloat = _FiniteFloatRange(min=0, min_open=True)
"""Rates and temperatures: a finite number > 0."""
NonNegativeFloat = _FiniteFloatRange(min=0)
"""Thresholds: a finite number >= 0."""


class BblCommand(click.Command):
    """A `bbl` command: accepts its old option spellings for one release (`bbl.RENAMED_OPTIONS`), each with one
    `warning:` line naming the new one, and builds options derived from a config dataclass only when they are
    first needed (parsing or --help), so importing the CLI imports no config module that needs numpy.

    Args:
        renamed: {old spelling: new spelling}; default: this command's entry of `bbl.RENAMED_OPTIONS`.
        positional: the option a bare (positional) argument stands for, in a command whose operand used to be
            positional (`bbl cache info PATH` is `bbl cache info --cache PATH`).
        late_options: () -> [click.Option], called once, inserted after the parameter named `late_after`.
    """

    def __init__(self, *args, renamed: dict[str, str] | None = None, positional: str | None = None,
                 late_options=None, late_after: str | None = None, **kwargs):
        self._late, self._late_after = late_options, late_after
        super().__init__(*args, **kwargs)
        self.renamed = renamed if renamed is not None else RENAMED_OPTIONS.get(self.name, {})
        self.positional = positional

    @property
    def params(self) -> list[click.Parameter]:
        if self._late is not None:
            late, self._late = self._late(), None
            names = [p.name for p in self._params]
            at = names.index(self._late_after) + 1 if self._late_after in names else len(names)
            self._params[at:at] = late
        return self._params

    @params.setter
    def params(self, value):
        self._params = list(value)

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, self._respell(ctx, list(args)))

    def invoke(self, ctx):
        """Run the command; bbl's `UsageError` leaves as click's, so it exits 2 naming `--help` like click's own."""
        try:
            return super().invoke(ctx)
        except UsageError as e:
            raise click.UsageError(str(e), ctx) from None

    def _respell(self, ctx, args: list[str]) -> list[str]:
        """`args` with each old spelling replaced by its new one (and a bare operand of a command that used to
        take it positionally prefixed by its option), one `warning:` line for each old form used."""
        takes_value = {}
        for p in self.params:
            if isinstance(p, click.Option):
                takes_value.update({o: not (p.is_flag or p.count) for o in p.opts})
                takes_value.update({o: False for o in p.secondary_opts})
        out, i, positional_seen = [], 0, False
        while i < len(args):
            arg = args[i]
            if arg == "--":
                out += args[i:]
                break
            name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
            if name in self.renamed:
                name = self.renamed[name]
                _warn(f"{arg.partition('=')[0]} is deprecated in `{ctx.command_path}`; use {name} (the old spelling "
                      f"goes in the next release)")
                arg = f"{name}{eq}{value}"
            if arg.startswith("-") and arg != "-":
                out.append(arg)
                if takes_value.get(name) and not eq and i + 1 < len(args):
                    out.append(args[i + 1])
                    i += 1
            elif self.positional and not positional_seen:
                positional_seen = True
                _warn(f"`{ctx.command_path} {arg}` is deprecated; use `{ctx.command_path} {self.positional} {arg}` "
                      f"(the positional form goes in the next release)")
                out += [self.positional, arg]
            else:
                out.append(arg)
            i += 1
        return out


def _short_path(path) -> str:
    """A path for an error line: one longer than 120 characters shown by its start and end."""
    text = str(path)
    return text if len(text) <= 120 else f"{text[:60]}...{text[-40:]} ({len(text)} characters)"


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


class OneLineErrors(click.Group):
    """Turns a BblError anywhere below into one line `error: ...` and exit status 1, and click's usage errors (a
    bad option value, a missing option; bbl's `UsageError` becomes one in `BblCommand`) into one line naming the
    option and `--help`, with click's exit status 2; nothing has been written by then. An `OSError` no check turned
    into a BblError first (a path the file system refuses) is one line and exit 1 too, never a traceback. Its
    commands are `BblCommand`s."""

    command_class = BblCommand

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BblError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except OSError as e:  # a path the file system refuses where no check named it first: still one line
            where = f"{_short_path(e.filename)}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or e}; check the path (and the disk), or choose another", err=True)
            sys.exit(1)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        except click.exceptions.NoArgsIsHelpError as e:  # a bare `bbl` or `bbl cache`: the help, as click shows it
            click.echo(e.format_message(), err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            ctx = getattr(e, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            click.echo(f"error: {e.format_message()}{where}", err=True)
            sys.exit(e.exit_code)  # 2 for a UsageError (BadParameter, NoSuchOption, ...), as click exits
        if standalone_mode:
            sys.exit(code if isinstance(code, int) else 0)
        return code



@functools.cache
def field_docs(cls) -> dict[str, str]:
    """{field: its docstring, on one line} of a dataclass whose fields carry a docstring below them (litgpt's
    convention, read from the source with ast as jsonargparse does)."""
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def config_options(cls, *, flags: dict[str, str] | None = None, skip: tuple[str, ...] = (),
                   choices: dict[str, tuple[str, ...]] | None = None) -> list[click.Option]:
    """One click option per field of the dataclass `cls`: `--field-name` (or `flags[field]`), its type from the
    annotation (a Literal is a choice, a float any finite number, a bool a flag; `choices[field]` makes a str field
    a choice, e.g. the names in a registry), its default the field's, its help the field's docstring
    (`field_docs`). Ranges are the dataclass's to check (`__post_init__`, one `BblError` line)."""
    flags, docs, hints = flags or {}, field_docs(cls), typing.get_type_hints(cls)
    choices = choices or {}
    options = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if f.name in choices:
            kind = click.Choice(choices[f.name])
        elif typing.get_origin(hint) is typing.Literal:
            kind = click.Choice(typing.get_args(hint))
        else:
            kind = {int: Seed if f.name.endswith("seed") else Int64, float: FiniteFloat, str: click.STRING, bool: click.BOOL, Path: PathArg}[hint]
        default = None if f.default is dataclasses.MISSING else f.default
        flag = flags.get(f.name, "--" + f.name.replace("_", "-"))
        if hint is bool:  # a switch, as click spells one: --delta-ids (off by default)
            options.append(click.Option([flag, f.name], is_flag=True, default=bool(default), help=docs.get(f.name)))
            continue
        options.append(click.Option([flag, f.name], type=kind, default=default, show_default=default is not None,
                                    help=docs.get(f.name)))
    return options


def set_option(section: str, cls_name: str, example: str):
    """`--set SECTION.KEY=VALUE` (repeatable) for a command whose settings are one config dataclass."""
    return click.option("--set", "overrides", multiple=True, metavar=f"{section}.KEY=VALUE",
                        help=f"Set a field of {cls_name} (a value in YAML; KEY as in its docs), e.g. --set {example} "
                             f"(repeatable; a setting given as its own option too is refused).")


def apply_sets(ctx: click.Context, settings: dict, overrides, section: str, cls, *, options: dict | None = None) -> dict:
    """`settings` (what the command's options say, by field) updated with `--set section.KEY=VALUE` overrides.

    Args:
        options: {field: the option that also sets it} where the option's parameter name differs from the field.
    Raises:
        UsageError: a malformed or unknown key, a value of the wrong type, or a field also given as its option.
    """
    from bbl.config import parse_overrides

    values = parse_overrides(overrides, {section: cls}).get(section, {})
    for key in values:
        param = (options or {}).get(key, key)
        if ctx.get_parameter_source(param) is click.core.ParameterSource.COMMANDLINE:
            flag = next((o for p in ctx.command.params if p.name == param for o in p.opts), param)
            raise UsageError(f"--set {section}.{key} and {flag} both set {section}.{key}; pass one")
    return {**settings, **values}


def default_data(name: str) -> Path:
    """../shared/data/NAME next to the working dir, if present (the project's dev data), else NAME."""
    for base in (Path("../shared/data"), Path("data")):
        if (base / name).is_dir():
            return base / name
    return Path(name)
