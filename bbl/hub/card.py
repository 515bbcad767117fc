"""The model card of an exported run: README.md with the Hub's YAML metadata and a text generated from the run's
ledger (`bbl_run.json`): words seen with and without teachers, the teachers and where they came from, the logit
cache's settings, the revisions (`main` and the `chck_{N}M` checkpoints) and, when given, `bbl eval` results.

Pure functions of dicts: `render_card(run, ...)` returns the text; `bbl.hub.export` writes it. Metadata keys follow
the Hub's model card spec (huggingface.co/docs/hub/model-cards: `library_name`, `pipeline_tag`, `tags`,
`model-index`); the BabyLM budget is under `bbl:`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

RESULT_METRICS = (
    # (task, key in its result, label, kind): kind "accuracy" shown in percent, "score" as is
    ("blimp", "overall", "BLiMP (mean over paradigms)", "accuracy"),
    ("supplement", "overall", "BLiMP supplement (mean over files)", "accuracy"),
    ("ewok", "overall", "EWoK (mean over domains)", "accuracy"),
    ("entity_tracking", "overall", "Entity tracking (mean over splits)", "accuracy"),
    ("wug_adj", "spearman", "WUG adj. nominalization (Spearman rho)", "score"),
    ("reading", "eye_tracking", "Reading: eye tracking (R² gain)", "score"),
    ("reading", "self_paced_reading", "Reading: self-paced reading (R² gain)", "score"),
    ("perplexity", "perplexity", "Dev perplexity", "score"),
)
"""The headline number of each `bbl eval` task, in the order the card lists them."""


@dataclass(frozen=True)
class Revision:
    """One revision of the exported repo: `main` (the final model) or a word checkpoint."""

    name: str
    """The branch: `main` or `chck_{N}M` (`bbl.data.words.checkpoint_name`)."""
    words_seen: int | None
    """Words the model had seen at this revision (the ledger's, or the checkpoint's `bbl_checkpoint.json`)."""
    step: int | None
    """Optimizer steps at this revision."""
    results: dict | None = None
    """This revision's `bbl eval` record (an entry of results.json), if one was found."""


def _millions(n: int | None) -> str:
    return "unknown" if n is None else f"{n:,} ({n / 1e6:.2f}M)"


def _with_teachers(ledger: dict, words: int | None) -> int | None:
    """Words seen by a revision that had seen `words`, plus what its bbl-trained teachers saw (the ledger's
    words_seen_with_teachers less the final model's words); None when unknown or the run had no teachers."""
    final, total = ledger.get("words_seen"), ledger.get("words_seen_with_teachers")
    if words is None or final is None or total is None:
        return None
    return words + (total - final)


def _teacher_rows(ledger: dict) -> list[str]:
    rows = []
    for t in ledger.get("teachers") or []:
        if t.get("external"):
            origin = f"external: {t.get('source', 'pretrained')} ({t.get('name') or Path(t['path']).name})"
            words = "not counted (external pretrained teacher)"
        else:
            origin = "trained by bbl"
            words = _millions(t.get("words_seen"))
        epochs = "" if t.get("epochs") is None else f"{t['epochs']:g}"
        rows.append(f"| {Path(t['path']).name} | {origin} | {words} | {epochs} |")
    return rows


def headline_results(record: dict) -> list[tuple[str, str, float, str]]:
    """(task, label, value, kind) of each task of a `bbl eval` record that has its headline number."""
    out = []
    for task, key, label, kind in RESULT_METRICS:
        value = (record.get("tasks") or {}).get(task, {}).get(key)
        if isinstance(value, (int, float)):
            out.append((task, label, float(value), kind))
    return out


def _dataset_note(result: dict) -> str:
    parts = [p for p in (result.get("dataset"), result.get("suite") and f"suite {result['suite']}") if p]
    if result.get("fallback"):
        parts.append(f"**fell back from {result['fallback']}**")
    if result.get("scoring"):
        parts.append(f"scoring {result['scoring']}")
    return ", ".join(parts)


def model_index(name: str, record: dict) -> list[dict]:
    """The Hub's `model-index` (its eval results widget) from a `bbl eval` record: one result per task."""
    results = []
    for task, label, value, kind in headline_results(record):
        result = record["tasks"][task]
        results.append({
            "task": {"type": "text-generation", "name": "zero-shot" if task != "perplexity" else "language modeling"},
            "dataset": {"name": label.split(" (")[0].split(":")[0], "type": result.get("dataset") or task},
            "metrics": [{"type": "accuracy" if kind == "accuracy" else task, "name": label,
                         "value": round(100 * value, 2) if kind == "accuracy" else round(value, 4)}]})
    return [{"name": name, "results": results}] if results else []


def render_card(run: dict, *, name: str, revisions: list[Revision], repo_id: str | None = None,
                license: str | None = None, revision: str = "main") -> str:
    """README.md of one revision of the exported repo.

    Args:
        run: the run's `bbl_run.json` (its `ledger`, config, cache and distillation settings).
        name: the model's name (the run dir's name).
        revisions: every revision of the repo, `main` included, in training order.
        repo_id: the Hub repo (ORG/NAME) for the usage snippet; None: a placeholder.
        license: the card's `license` metadata; None leaves it out (the user decides).
        revision: the revision this card describes (`main` or a `chck_*` branch).
    Returns:
        The card: `---` YAML metadata `---`, then markdown.
    """
    ledger = run.get("ledger") or {}
    this = next(r for r in revisions if r.name == revision)
    distilled = run.get("kind") == "student_distilled"
    arch = run.get("architecture") or (run.get("config") or {}).get("model", {}).get("architecture") or "causal LM"
    meta = _card_meta(run, ledger, this, name=name, arch=arch, license=license, revision=revision,
                      distilled=distilled)
    repo = repo_id or "ORG/NAME"
    params = run.get("parameters")
    lines = [f"# {name}" + ("" if revision == "main" else f" — checkpoint {revision}"), ""]
    lines.append(f"A {arch} causal language model"
                 + (f" of {params / 1e6:.2f}M parameters" if params else "")
                 + f", {'distilled from teachers' if distilled else 'trained'} with "
                 f"bbl {run.get('bbl_version', '')} (run kind `{run.get('kind')}`)"
                 + ("." if revision == "main" else f"; this revision is the model after {_millions(this.words_seen)} "
                    f"words (step {this.step}), saved on the way to `main`."))
    lines += _words_lines(ledger, this, revision)
    if distilled:
        lines += _distillation_lines(run)
    lines += ["", "## Revisions", "",
              "`main` is the final model; each intermediate checkpoint is a branch named `chck_{N}M` after the words "
              "seen (the BabyLM convention).", "", "| revision | words seen | step |", "|---|---:|---:|"]
    lines += [f"| `{r.name}` | {_millions(r.words_seen)} | {'' if r.step is None else r.step} |" for r in revisions]
    lines += ["", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'model = AutoModelForCausalLM.from_pretrained("{repo}", revision="{revision}")',
              f'tokenizer = AutoTokenizer.from_pretrained("{repo}", revision="{revision}")', "```"]
    lines += _evaluation_lines(this.results)
    lines += ["", "The full ledger of the run is `bbl_run.json` on `main` (`bbl_checkpoint.json` on a checkpoint "
              "branch)."]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(lines) + "\n"


def _card_meta(run: dict, ledger: dict, this: Revision, *, name: str, arch: str, license: str | None,
               revision: str, distilled: bool) -> dict:
    """The card's YAML metadata: the Hub's fields, bbl's own (kind, words seen with and without teachers), and
    the model-index of the revision's results."""
    meta: dict = {"library_name": "transformers", "pipeline_tag": "text-generation", "language": ["en"]}
    if license:
        meta["license"] = license
    meta["tags"] = ["babylm", "bbl", arch] + (["knowledge-distillation"] if distilled else [])
    meta["bbl"] = {"kind": run.get("kind"), "revision": revision, "words_seen": this.words_seen,
                   "words_seen_with_teachers": _with_teachers(ledger, this.words_seen),
                   "final_words_seen": ledger.get("words_seen"), "tokens_seen": ledger.get("tokens_seen"),
                   "epochs": ledger.get("epochs"), "teachers": len(ledger.get("teachers") or []),
                   "bbl_version": run.get("bbl_version")}
    if this.results:
        index = model_index(name, this.results)
        if index:
            meta["model-index"] = index
    return meta


def _words_lines(ledger: dict, this: Revision, revision: str) -> list[str]:
    """The words seen (the BabyLM budget), with the bbl-trained teachers' words, and the teachers' table."""
    lines = ["", "## Words seen (the BabyLM budget)", "",
             "| | words |", "|---|---:|",
             f"| this revision (`{revision}`) | {_millions(this.words_seen)} |",
             f"| the final model (`main`) | {_millions(ledger.get('words_seen'))} |"]
    if ledger.get("teachers"):
        if revision != "main":
            lines.append(f"| this revision and the bbl-trained teachers | "
                         f"{_millions(_with_teachers(ledger, this.words_seen))} |")
        lines.append(f"| the final model and its bbl-trained teachers | {_millions(ledger.get('words_seen_with_teachers'))} |")
    if isinstance(ledger.get("tokens_seen"), int):
        lines += ["", f"The final model saw {ledger['tokens_seen']:,} tokens in {ledger.get('windows_seen', 0):,} "
                  f"windows, {ledger.get('epochs')} epochs over a corpus of {_millions(ledger.get('corpus_words'))} "
                  "words."]
    if ledger.get("teachers"):
        lines += ["", "## Teachers", "", "| teacher | provenance | words seen | epochs |", "|---|---|---:|---:|",
                  *_teacher_rows(ledger)]
        if ledger.get("external_teachers"):
            lines += ["", "External pretrained teachers are listed apart: their training words are not in these "
                      "counts, and the BabyLM rules do not let a competition entry distil their output "
                      "distributions (bbl's docs/commands.md, 'What the BabyLM rules say about teachers')."]
    return lines


def _distillation_lines(run: dict) -> list[str]:
    """The distillation settings table of a distilled student."""
    lines = ["", "## Distillation", "", "| setting | value |", "|---|---|",
             f"| mode | {run.get('distill_mode')} |", f"| alpha (weight of the hard-label CE) | {run.get('alpha')} |"]
    if not run.get("caches"):
        lines += [f"| temperature | {run.get('temperature')} |", f"| KD variant | {run.get('kd_variant')} |",
                  f"| reduction | {run.get('reduction')} |"]
    for c, cache in enumerate(run.get("caches") or []):  # several caches: each one's own reading and weight
        name = Path(str(cache.get("cache"))).name
        lines.append(f"| logit cache {c} | `{name}`: {cache.get('cache_targets')} targets, KD variant "
                     f"{cache.get('kd_variant')}, weight {cache.get('weight'):g}, temperature "
                     f"{cache.get('temperature')} |")
    if run.get("distill_mode") == "cached" and not run.get("caches"):
        lines += [f"| logit cache | `{Path(str(run.get('cache'))).name}` |",
                  f"| cache temperature | {run.get('cache_temperature')} |",
                  f"| cache top-k | {run.get('cache_top_k')} |", f"| cache targets | {run.get('cache_targets')} |",
                  f"| cache samples per position | {run.get('cache_num_samples')} |"]
    return lines


def _evaluation_lines(results: dict | None) -> list[str]:
    """The headline `bbl eval` results of the revision, if it has any."""
    rows = headline_results(results) if results else []
    if not rows:
        return []
    lines = ["", "## Evaluation (`bbl eval`)", "", "| task | value | data |", "|---|---:|---|"]
    for task, label, value, kind in rows:
        shown = f"{100 * value:.1f}%" if kind == "accuracy" else f"{value:.4f}"
        lines.append(f"| {label} | {shown} | {_dataset_note(results['tasks'][task])} |")
    return lines


def parse_card(text: str) -> tuple[dict, str]:
    """(YAML metadata, markdown body) of a card `render_card` wrote."""
    _, head, body = text.split("---\n", 2)
    return yaml.safe_load(head), body
