"""`bbl export`: parse, call `bbl.hub.export.export_run`, print the commands that publish the repo; `bbl
fix-tokenizer`: the same tokenizer config for model dirs in place (`bbl.hub.export.fix_tokenizer_configs`)."""

from __future__ import annotations

import click

from bbl.cli.params import BblCommand, PathArg


@click.command("export", cls=BblCommand)
@click.argument("run_dir", type=PathArg)
@click.option("--out", type=PathArg, required=True, help="The git repository to write (a new or empty dir).")
@click.option("--repo-id", default=None, metavar="ORG/NAME", help="The Hub repo, named in the card and the commands.")
@click.option("--results", "results_dirs", type=PathArg, multiple=True,
              help="A `bbl eval --out` dir: each revision it scored gets its results in its card (repeatable).")
@click.option("--license", "license_", default=None, help="The card's license metadata (e.g. apache-2.0); default: none.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier bbl export in --out.")
def export_cmd(run_dir, out, repo_id, results_dirs, license_, overwrite):
    """Write RUN_DIR as a git repo in the Hugging Face Hub layout: main = the final model, a branch per
    chck_{N}M word checkpoint, a model card from the ledger; print the commands to publish it."""
    from bbl.errors import UsageError
    from bbl.hub.export import export_run, publish_commands

    if repo_id is not None and repo_id.count("/") != 1:
        raise UsageError(f"--repo-id {repo_id}: use ORG/NAME, e.g. my-lab/babylm-distilled")
    result = export_run(run_dir, out, results_dirs=results_dirs, repo_id=repo_id, license=license_,
                        overwrite=overwrite, log=click.echo)
    click.echo(f"exported {run_dir} to {out}: {len(result.revisions)} revision(s) "
               f"({', '.join(r.name for r in result.revisions)}); to publish:\n")
    click.echo("\n".join(publish_commands(result, repo_id)))


@click.command("fix-tokenizer")
@click.argument("model_dirs", nargs=-1, required=True, type=PathArg)
def fix_tokenizer_cmd(model_dirs):
    """Rewrite the tokenizer_config.json of MODEL_DIRS (and of a run's word_checkpoints/chck_* and checkpoints/)
    so that the BabyLM pipeline's transformers 4.51.3 loads them and tokenizes as bbl does; token ids unchanged.
    For model dirs written before bbl did this itself (bbl export does it in the repo it writes)."""
    from bbl.hub.export import fix_tokenizer_configs

    for model_dir in model_dirs:
        for d, changed in fix_tokenizer_configs(model_dir).items():
            click.echo(f"{d}: {'rewrote tokenizer_config.json' if changed else 'tokenizer_config.json already portable'}")
