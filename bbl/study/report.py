"""The study's outputs: `curves.png` (mean dev CE against optimizer steps, one line per arm), `study.md` (arms side
by side with paired 95% intervals; the other zero-shot tasks in a second table) and, last, `study.json` (every
number; the marker of a finished study)."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from bbl.io import atomic_save_figure, atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class TaskMetric:
    """The headline number of a zero-shot task beyond BLiMP and the supplement, as a study collects and shows it."""

    name: str
    """Its key in a run's numbers and an arm's summary in study.json."""
    task: str
    """The `bbl eval` task it comes from."""
    key: str
    """Its field in that task's results (`bbl eval`'s JSON, under "tasks")."""
    label: str
    """Its column in study.md."""
    scale: float = 100.0
    """Shown multiplied by this: 100 for a share shown in %, 1 for a correlation."""
    digits: int = 1


TASK_METRICS = (
    TaskMetric("ewok", "ewok", "overall", "EWoK (%)"),
    TaskMetric("entity_tracking", "entity_tracking", "overall", "entity tracking (%)"),
    TaskMetric("wug_adj", "wug_adj", "spearman", "WUG adj. (Spearman rho)", scale=1.0, digits=3),
    TaskMetric("reading_eye_tracking", "reading", "eye_tracking", "reading: eye tracking (% R² gained)", digits=2),
    TaskMetric("reading_self_paced", "reading", "self_paced_reading", "reading: self-paced (% R² gained)", digits=2),
)
"""The numbers a study collects for each task of `--tasks` besides blimp and supplement, in column order; the
reading gains are shares of the R² a regression without surprisal leaves unexplained (`bbl.evaluate.reading`)."""


def _task_metrics(study: dict) -> list[TaskMetric]:
    return [m for m in TASK_METRICS if m.name in study.get("metrics", ())]


def _interval(d: dict, scale: float = 1.0, digits: int = 3) -> str:
    if d["ci95"] is None:
        return f"{scale * d['mean']:+.{digits}f}"
    lo, hi = (scale * v for v in d["ci95"])
    mark = " *" if lo > 0 or hi < 0 else ""  # the interval excludes 0
    return f"{scale * d['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]{mark}"


def study_table(study: dict) -> str:
    """Markdown: one row per arm (mean ± std over seeds, paired difference to the baseline with its 95% CI)."""
    n = len(study["seeds"])
    lines = ["| arm | runs | best dev CE (nats) | Δ dev CE vs baseline [95% CI] | BLiMP (%) | Δ BLiMP [95% CI] | "
             "supplement (%) | Δ supplement [95% CI] | wall per run (s) | peak RSS (MiB) |",
             "|---|---:|---:|---|---:|---|---:|---|---:|---:|"]
    for name, arm in study["arms"].items():
        vs = arm["vs_baseline"]
        secs = [r["seconds"] for r in arm["runs"] if r.get("seconds")]
        rss = [r["peak_rss_mib"] for r in arm["runs"] if r.get("peak_rss_mib")]
        base = name == "baseline"
        lines.append(
            f"| {name} | {n} | {arm['best_dev_ce']['mean']:.3f} ± {arm['best_dev_ce']['std']:.3f} | "
            f"{'' if base else _interval(vs['best_dev_ce'])} | "
            f"{100 * arm['blimp']['mean']:.1f} ± {100 * arm['blimp']['std']:.1f} | "
            f"{'' if base else _interval(vs['blimp'], 100, 1)} | "
            f"{100 * arm['supplement']['mean']:.1f} ± {100 * arm['supplement']['std']:.1f} | "
            f"{'' if base else _interval(vs['supplement'], 100, 1)} | "
            f"{sum(secs) / len(secs):.0f} | {max(rss):.0f} |" if secs else
            f"| {name} | {n} | {arm['best_dev_ce']['mean']:.3f} | | | | | | | |")
    for name, t in study.get("teachers", {}).items():
        ce = f"{t['best_dev_ce']:.3f}" if t.get("best_dev_ce") is not None else ""
        lines.append(f"| teacher {name} ({(t.get('parameters') or 0) / 1e6:.2f}M) | 1 | {ce} | | "
                     f"{100 * t['blimp']:.1f} | | {100 * t['supplement']:.1f} | | | |")
    return "\n".join(lines) + "\n"


def tasks_table(study: dict) -> str:
    """Markdown: the other zero-shot tasks' numbers (`TASK_METRICS`) per arm, mean ± std over seeds and the paired
    difference to the baseline with its 95% CI, then the teachers'; "" when the study scored none."""
    metrics = _task_metrics(study)
    if not metrics:
        return ""
    lines = ["| arm | runs | " + " | ".join(f"{m.label} | Δ [95% CI]" for m in metrics) + " |",
             "|---|---:|" + "---:|---|" * len(metrics)]
    for name, arm in study["arms"].items():
        cells = []
        for m in metrics:
            cells.append(f"{m.scale * arm[m.name]['mean']:.{m.digits}f} ± {m.scale * arm[m.name]['std']:.{m.digits}f}")
            cells.append("" if name == "baseline" else _interval(arm["vs_baseline"][m.name], m.scale, m.digits))
        lines.append(f"| {name} | {len(arm['runs'])} | " + " | ".join(cells) + " |")
    for name, t in study.get("teachers", {}).items():
        cells = [c for m in metrics for c in (f"{m.scale * t[m.name]:.{m.digits}f}", "")]
        lines.append(f"| teacher {name} | 1 | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def budget_table(study: dict) -> str:
    """Markdown: words seen per run by each arm's model, and with its teachers (the BabyLM budget; issue 13)."""

    def words(values):
        values = [v for v in values if v is not None]
        return f"{values[0] / 1e6:.3f}" if values and len(set(values)) == 1 else \
            (f"{min(values) / 1e6:.3f}-{max(values) / 1e6:.3f}" if values else "n/a")

    lines = ["| model | words seen per run (M) | incl. teachers (M) |", "|---|---:|---:|"]
    for name, arm in study["arms"].items():
        lines.append(f"| {name} | {words([r.get('words_seen') for r in arm['runs']])} | "
                     f"{words([r.get('words_seen_with_teachers') for r in arm['runs']])} |")
    for name, t in study.get("teachers", {}).items():
        lines.append(f"| teacher {name} | {words([t.get('words_seen')])} | {words([t.get('words_seen')])} |")
    return "\n".join(lines) + "\n"


def per_seed_table(study: dict) -> str:
    """Markdown: every run's best dev CE, BLiMP, supplement and other tasks' numbers (the numbers behind the
    means)."""
    metrics = _task_metrics(study)
    lines = ["| arm | seed | best dev CE | BLiMP (%) | supplement (%) | "
             + "".join(f"{m.label} | " for m in metrics) + "steps | wall (s) |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(metrics) + "---:|---:|"]
    for name, arm in study["arms"].items():
        for r in arm["runs"]:
            lines.append(f"| {name} | {r['seed']} | {r['best_dev_ce']:.4f} | {100 * r['blimp']:.2f} | "
                         f"{100 * r['supplement']:.2f} | "
                         + "".join(f"{m.scale * r[m.name]:.{m.digits + 1}f} | " for m in metrics)
                         + f"{r['global_step']} | {r.get('seconds') or ''} |")
    return "\n".join(lines) + "\n"


def plot_curves(study: dict, path: Path) -> Path:
    """Mean dev CE over seeds against optimizer steps, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, arm in study["arms"].items():
        if arm["mean_curve"]:
            steps, ce = zip(*arm["mean_curve"], strict=True)
            ax.plot(steps, ce, marker="o", ms=3, label=f"{name} (best {arm['best_dev_ce']['mean']:.3f})")
    for name, t in study.get("teachers", {}).items():
        if t.get("best_dev_ce") is not None:
            ax.axhline(t["best_dev_ce"], ls=":", lw=1, color="grey")
            ax.annotate(f"teacher {name}", (0, t["best_dev_ce"]), fontsize=7, color="grey", va="bottom")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"dev CE (nats), mean over {len(study['seeds'])} seed(s)")
    ax.set_title("Student dev CE by arm")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)
    return path


def write_study(study: dict, workdir: Path) -> None:
    """curves.png, study.md, then study.json in `workdir`, each atomically: study.json marks a finished study
    (the pipeline skips a study stage that has it), so it comes last."""
    workdir = Path(workdir)
    plot_curves(study, workdir / "curves.png")
    head = (f"# bbl study: {study['config']}, {len(study['seeds'])} seed(s), {study['date']}, "
            f"{platform.machine()} {platform.system()}\n\n"
            f"Paired differences are arm − baseline over the same seeds (same init and window order); "
            f"* marks a 95% interval that excludes 0. BLiMP is the mean over paradigms"
            + (f" (first {study['max_pairs_per_file']} pairs per file)" if study.get("max_pairs_per_file")
               else " (every pair)") + ".\n\n")
    others = tasks_table(study)
    if others:
        others = "\n## The other zero-shot tasks\n\n" + others
    atomic_write_text(workdir / "study.md", head + study_table(study) + others + "\n## Words seen (the BabyLM budget)\n\n"
                                      "n/a: a run made before bbl counted words.\n\n" + budget_table(study)
                                      + "\n## Every run\n\n" + per_seed_table(study))
    atomic_write_json(workdir / "study.json", study)
