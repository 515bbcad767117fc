"""Tables and plots of evaluation results: `results.md` (phenomena x models) and `blimp.png` (the paper's
parallel-coordinates figure: x = BLiMP phenomena, y = accuracy, one line per model)."""

from __future__ import annotations

from pathlib import Path

from bbl.io import atomic_save_figure, atomic_write_json, atomic_write_text


def markdown_table(results: list[dict]) -> str:
    """Rows: BLiMP phenomena, BLiMP overall, supplement files and mean, EWoK domains and mean, entity-tracking splits
    and mean, WUG's Spearman rho, reading's two gains (percent), dev perplexity; columns: models."""
    names = [r["model"] for r in results]
    rows: list[tuple[str, list[str]]] = []

    def pct(v):
        return "" if v is None else f"{100 * v:.1f}"

    blimp = [r["tasks"].get("blimp") for r in results]
    if any(blimp):
        phenomena = sorted({p for b in blimp if b for p in b["by_phenomenon"]})
        rows += [(p, [pct(b["by_phenomenon"].get(p)) if b else "" for b in blimp]) for p in phenomena]
        rows.append(("**BLiMP (mean over paradigms)**", [f"**{pct(b['overall'])}**" if b else "" for b in blimp]))
    supp = [r["tasks"].get("supplement") for r in results]
    if any(supp):
        files = sorted({f for s in supp if s for f in s["by_file"]})
        rows += [(f"supplement: {f}", [pct(s["by_file"].get(f)) if s else "" for s in supp]) for f in files]
        rows.append(("**Supplement (mean)**", [f"**{pct(s['overall'])}**" if s else "" for s in supp]))
    rows += _breakdown(results, "ewok", "by_domain", "EWoK", "**EWoK (mean over domains)**")
    rows += _breakdown(results, "entity_tracking", "by_split", "entity tracking", "**Entity tracking (mean over splits)**")
    wug = [r["tasks"].get("wug_adj") for r in results]
    if any(wug):
        rows.append(("**WUG adj. nominalization (Spearman rho)**", [f"**{w['spearman']:.3f}**" if w else "" for w in wug]))
    reading = [r["tasks"].get("reading") for r in results]
    if any(reading):
        rows.append(("reading: eye tracking (% of unexplained R² gained)", [pct(x["eye_tracking"]) if x else ""
                                                                           for x in reading]))
        rows.append(("reading: self-paced reading (% of unexplained R² gained)",
                     [pct(x["self_paced_reading"]) if x else "" for x in reading]))
    ppl = [r["tasks"].get("perplexity") for r in results]
    if any(ppl):
        rows.append(("dev perplexity", [f"{p['perplexity']:.1f}" if p else "" for p in ppl]))
        if any(p and "bits_per_byte" in p for p in ppl):
            rows.append(("dev bits per byte", [f"{p['bits_per_byte']:.4f}" if p and "bits_per_byte" in p else ""
                                               for p in ppl]))
    rows.append(("parameters (M)", [f"{r['parameters'] / 1e6:.2f}" for r in results]))
    if any(r.get("words_seen") is not None for r in results):  # the BabyLM budget line (issue 13)
        rows.append(("words seen (M)", [_millions(r.get("words_seen")) for r in results]))
        rows.append(("words seen incl. teachers (M)", [_millions(r.get("words_seen_with_teachers")) for r in results]))
    notes, cut = fallback_notes(results), truncation_notes(results)
    marked = {label for task in notes for label in HEADLINE_ROWS[task]}
    truncated = {label for task in cut for label in HEADLINE_ROWS[task]}
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {label}{' (fell back †)' if label in marked else ''}{' (truncated ‡)' if label in truncated else ''}"
              f" | " + " | ".join(vals) + " |" for label, vals in rows]
    if notes or cut:
        lines += ["", *[f"† {task}: {note}" for task, note in notes.items()],
                  *[f"‡ {task}: {note}" for task, note in cut.items()]]
    return "\n".join(lines) + "\n"


HEADLINE_ROWS = {
    "blimp": ("**BLiMP (mean over paradigms)**",), "supplement": ("**Supplement (mean)**",),
    "ewok": ("**EWoK (mean over domains)**",), "entity_tracking": ("**Entity tracking (mean over splits)**",),
    "wug_adj": ("**WUG adj. nominalization (Spearman rho)**",),
    "reading": ("reading: eye tracking (% of unexplained R² gained)",
                "reading: self-paced reading (% of unexplained R² gained)"),
}
"""The row(s) of `markdown_table` holding each zero-shot task's headline number."""


def fallback_notes(results: list[dict]) -> dict[str, str]:
    """{task: what was scored instead} for each task whose suite's data was missing, so the other suite's was
    scored (`fallback` in its results: the missing dir's name)."""
    notes = {}
    for r in results:
        for task, result in r["tasks"].items():
            if result.get("fallback") and task in HEADLINE_ROWS:
                notes[task] = (f"the {result.get('suite')} suite's {result['fallback']}/ is missing; scored "
                               f"{result.get('dataset')} ({result.get('data')}) instead, so this number is not the "
                               f"{result.get('suite')} suite's")
    return notes


def truncation_notes(results: list[dict]) -> dict[str, str]:
    """{task: which models had how many items scored on their last tokens only} for each task where a model's
    learned position table (GPT-2) was shorter than some items (`truncated` in its results: a count of items,
    reading: of rows). The pipeline's code fails on those items, so the number has no official counterpart."""
    notes = {}
    for task in HEADLINE_ROWS:
        cut = [(r["model"], res["truncated"], res.get("items", res.get("pairs", res.get("words"))))
               for r in results for res in [r["tasks"].get(task) or {}] if res.get("truncated")]
        if cut:
            counts = ", ".join(f"{model} {n:,}" + (f" of {total:,}" if total else "") for model, n, total in cut)
            notes[task] = (f"items longer than the model's learned positions, scored on their last tokens ({counts}); "
                           "the pipeline cannot score them, so this number has no official counterpart")
    return notes


def _breakdown(results: list[dict], task: str, key: str, label: str, mean_label: str) -> list[tuple[str, list[str]]]:
    """Rows of one accuracy task: each entry of `key` (percent), then its overall mean in bold."""
    found = [r["tasks"].get(task) for r in results]
    if not any(found):
        return []
    names = sorted({n for f in found if f for n in f[key]})
    rows = [(f"{label}: {n}", [f"{100 * f[key][n]:.1f}" if f and n in f[key] else "" for f in found]) for n in names]
    return rows + [(mean_label, [f"**{100 * f['overall']:.1f}**" if f else "" for f in found])]


def _millions(words: int | None) -> str:
    return "n/a" if words is None else f"{words / 1e6:.3f}"


def plot_blimp(results: list[dict], path: Path) -> Path | None:
    """Parallel-coordinates PNG of per-phenomenon BLiMP accuracy; None when no result has BLiMP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_blimp = [r for r in results if r["tasks"].get("blimp")]
    if not with_blimp:
        return None
    phenomena = sorted({p for r in with_blimp for p in r["tasks"]["blimp"]["by_phenomenon"]})
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(phenomena) + 3), 5))
    for r in with_blimp:
        acc = r["tasks"]["blimp"]["by_phenomenon"]
        ax.plot(range(len(phenomena)), [100 * acc.get(p, float("nan")) for p in phenomena], marker="o",
                label=f"{r['model']} ({100 * r['tasks']['blimp']['overall']:.1f})")
    ax.set_xticks(range(len(phenomena)))
    ax.set_xticklabels([p.replace("_", " ") for p in phenomena], rotation=45, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("BLiMP zero-shot accuracy by phenomenon (legend: mean over paradigms)")
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)
    return path


def written_files(results: list[dict]) -> str:
    """What `bbl eval` wrote, for its last line: the per-model JSONs, results.md, blimp.png (only when BLiMP was
    scored), results.json and the pipeline's predictions.json files (each task's `predictions`; none for BLiMP and
    the supplement under `--pair-scoring bos`, the default without `--suite`)."""
    predictions = sum(1 for r in results for res in r["tasks"].values() if res.get("predictions"))
    files = [f"{len(results)} model JSON(s)", "results.md",
             *(["blimp.png"] if any(r["tasks"].get("blimp") for r in results) else []), "results.json"]
    if predictions:
        return ", ".join(files) + f" and {predictions} predictions.json under pipeline/"
    return (", ".join(files) + "; no pipeline/ predictions.json (the pipeline's files come with --suite or "
            "--pair-scoring pipeline; BLiMP and the supplement scored bos have none)")


def write_report(results: list[dict], out: Path) -> None:
    """`blimp.png`, `results.md`, then `results.json` in `out`, each written atomically: `results.json` is the
    marker of a finished evaluation (the pipeline's and the study's runner skip an eval that has it), so it comes
    last and a kill during the plot or the table leaves no marker."""
    out = Path(out)
    plot_blimp(results, out / "blimp.png")
    atomic_write_text(out / "results.md", markdown_table(results))
    atomic_write_json(out / "results.json", results)
