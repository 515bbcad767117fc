"""The `bbl` command line: click commands only, each a thin call into the module that owns the stage.

Run `bbl --help` for the list of stages, `bbl COMMAND --help` for each one's options.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bbl import __version__
from bbl.errors import BblError

PathArg = click.Path(path_type=Path)


class _Group(click.Group):
    """Turns a BblError anywhere below into a one-line `error: ...` and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BblError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bbl")
def main():
    """bbl — Baby Llama as a tool: train teachers, cache their top-k soft targets in Zarr, distill a student."""


@main.command()
@click.option("--train-dir", type=PathArg, required=True, help="BabyLM train dir with *.train files (babylm_10M/).")
@click.option("--dev-dir", type=PathArg, required=True, help="BabyLM dev dir with *.dev files (babylm_dev/).")
@click.option("--out", type=PathArg, required=True, help="Output dir for cleaned text, tokenizer, streams.")
@click.option("--vocab-size", type=int, default=16000, show_default=True, help="BPE vocabulary size.")
@click.option("--force", is_flag=True, help="Redo every step even when the outputs match the inputs.")
def prepare(train_dir, dev_dir, out, vocab_size, force):
    """Clean BabyLM text, train the BPE tokenizer, encode token streams."""
    from bbl.data import prepare as run_prepare

    manifest = run_prepare(train_dir, dev_dir, out, vocab_size=vocab_size, force=force, log=click.echo)
    t = manifest["totals"]
    click.echo(f"prepared {out}: train {t['train']['words']:,} words -> {t['train']['tokens']:,} tokens "
               f"({t['train']['tokens_per_word']} tokens/word), dev {t['dev']['tokens']:,} tokens, "
               f"vocab {manifest['vocab_size']}, dtype {manifest['dtype']}")


@main.group(cls=_Group)
def data():
    """Check BabyLM data against the official release."""


@data.command("verify")
@click.argument("directory", type=PathArg)
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
def data_verify(directory, as_json):
    """Compare DIRECTORY (holding babylm_10M/, babylm_dev/, babylm_test/) with the official SHA-1s."""
    from bbl.verify_data import verify_babylm_dir

    rows = verify_babylm_dir(directory)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            click.echo(f"{r['split']:<12} {r['source']:<18} {r['status']}")
        counts = {s: sum(r["status"] == s for r in rows) for s in ("identical", "modified", "missing")}
        click.echo(", ".join(f"{n} {s}" for s, n in counts.items()))
    if any(r["status"] == "modified" for r in rows):
        sys.exit(1)


def _train_options(f):
    f = click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out.")(f)
    f = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override a config value, e.g. --set training.lr=1e-4 (repeatable).")(f)
    f = click.option("--out", type=PathArg, required=True, help="Output dir (an HF model dir when done).")(f)
    f = click.option("--data", type=PathArg, required=True, help="Prepared dir from `bbl prepare`.")(f)
    return click.argument("config")(f)


@main.command("train-teacher")
@_train_options
def train_teacher(config, data, out, overrides, resume):
    """Train a teacher (preset name or YAML path) on the transformers Trainer."""
    from bbl.config import load_config
    from bbl.train import train_lm

    train_lm(load_config(config, overrides), data, out, resume=resume, kind="teacher", log=click.echo)


@main.command("train-student")
@_train_options
def train_student(config, data, out, overrides, resume):
    """Train the student on hard labels only (the paper's no-distillation baseline)."""
    from bbl.config import load_config
    from bbl.train import train_lm

    train_lm(load_config(config, overrides), data, out, resume=resume, kind="student_baseline", log=click.echo)
