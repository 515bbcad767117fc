"""Check every results table in README.md, BENCHMARKS.md, docs/*.md and docs/results/*.md against its raw file.

Every table carries an HTML comment on the line above it (a blank line between is allowed):

    <!-- check: cpu_study; raw: docs/results/cpu-study/study.json -->
    <!-- raw: none (not reproducible from the repo: raw output not kept; re-run: COMMAND) -->
    <!-- not a result -->

For a `check:` table the function of that name below reads the raw file(s) and rebuilds the table (header and
rows). A table that holds no result (settings, options, a reference) says `<!-- not a result -->`; a table
with no mark, or one that names a raw file without a `check:`, is an error. Every cell must equal the document's
after normalising (`**` and backslashes dropped, "−" read as "-").
A cell built as `Near(text, tol)` matches when the document's numbers are each within `tol` of the numbers in
`text`: for raw values that were themselves rounded (transcribed from a printed table). Exit 1 on any mismatch,
naming the file, the table and the cell; tables marked `raw: none` are listed.

    python benchmarks/check_results_tables.py              # check everything
    python benchmarks/check_results_tables.py --print antlm_study   # the table one check builds, as markdown
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bbl.study.stats import mean_std, paired_interval, paired_ratio_interval  # noqa: E402  (pure Python: no torch)

MARK = re.compile(r"<!--\s*(.*?)\s*-->")
NUMBER = re.compile(r"[-+]?\d[\d,]*\.?\d*")


@dataclass(frozen=True)
class Near:
    """A cell whose numbers may differ from `text`'s by up to `tol` each (inputs rounded before they were kept)."""

    text: str
    tol: float

    def __str__(self) -> str:
        return self.text


def norm(cell: str) -> str:
    return re.sub(r"\s+", " ", str(cell).replace("**", "").replace("\\", "").replace("−", "-")).strip()


def numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in NUMBER.findall(text)]


def cell_matches(doc: str, want) -> bool:
    if isinstance(want, Near):
        a, b = norm(doc), norm(want.text)
        return (NUMBER.sub("#", a) == NUMBER.sub("#", b) and len(numbers(a)) == len(numbers(b))
                and all(abs(x - y) <= want.tol for x, y in zip(numbers(a), numbers(b), strict=True)))
    return norm(doc) == norm(want)


# ---- formatting, as bbl's study report formats (bbl.study.report) ----

def ms(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    m, s = mean_std([scale * v for v in values])
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def ci(a: list[float], b: list[float], scale: float = 1.0, digits: int = 3) -> str:
    """Paired a - b over seeds: mean [95% t-interval], * when the interval excludes 0."""
    d = paired_interval([scale * x for x in a], [scale * x for x in b])
    lo, hi = d["ci95"]
    return f"{d['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]" + (" *" if lo > 0 or hi < 0 else "")


def load(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


def runs(study: dict, arm: str, metric: str, seeds=None) -> list[float]:
    rs = study["arms"][arm]["runs"]
    return [r[metric] for r in rs if seeds is None or r["seed"] in seeds]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


# ---- the checks: each returns (header, rows) ----

CPU_STUDY = "docs/results/cpu-study/study.json"
CPU_STAGES = "docs/results/cpu-study/stages.json"
SPARSE = "docs/results/sparse-targets/summary.json"
ANTLM = "docs/results/antlm-study/study.json"
ENTITY = "docs/results/antlm-study/entity-tracking.json"
FINETUNE = "docs/results/antlm-study/finetune.json"
EQUAL = "docs/results/equal-bytes/study.json"
EQUAL_CACHES = "docs/results/equal-bytes/caches.json"
EQUAL_FIRST = "docs/results/equal-bytes/first-run/study.json"
EQUAL_FIRST_CACHES = "docs/results/equal-bytes/first-run/caches.json"
CROSS_CACHE = "docs/results/cross-tokenizer/cache-info.json"
CROSS_BPB = "docs/results/cross-tokenizer/bits-per-byte.json"
CROSS_ALIGNMENT = "docs/results/cross-tokenizer/alignment.json"


def cpu_study():
    s = load(CPU_STUDY)
    header = ["arm", "runs", "best dev CE (nats)", "Δ dev CE vs baseline [95% CI]", "BLiMP (%)",
              "Δ BLiMP vs baseline [95% CI]", "supplement (%)", "Δ supplement vs baseline [95% CI]",
              "train wall per run (s, mean)", "peak RSS (MiB, max of the runs)"]
    rows = []
    for arm in s["arms"]:
        base = arm == "baseline"
        cells = [arm, str(len(runs(s, arm, "seed"))), ms(runs(s, arm, "best_dev_ce"))]
        for metric, scale, digits in (("best_dev_ce", 1, 3), ("blimp", 100, 1), ("supplement", 100, 1)):
            if metric != "best_dev_ce":
                cells.append(ms(runs(s, arm, metric), 100, 1))
            cells.append("" if base else ci(runs(s, arm, metric), runs(s, "baseline", metric), scale, digits))
        cells += [f"{mean(runs(s, arm, 'seconds')):.0f}", f"{max(runs(s, arm, 'peak_rss_mib')):.0f}"]
        rows.append(cells)
    for name, t in s["teachers"].items():
        rows.append([f"teacher {name} ({t['parameters'] / 1e6:.2f}M)", "1", f"{t['best_dev_ce']:.3f}", "",
                     f"{100 * t['blimp']:.1f}", "", f"{100 * t['supplement']:.1f}", "", "", ""])
    return header, rows


def cpu_study_runs():
    s = load(CPU_STUDY)
    header = ["arm", "seed", "best dev CE", "BLiMP (%)", "supplement (%)", "steps", "wall (s)"]
    rows = [[arm, str(r["seed"]), f"{r['best_dev_ce']:.4f}", f"{100 * r['blimp']:.2f}", f"{100 * r['supplement']:.2f}",
             str(r["global_step"]), f"{r['seconds']:.1f}"] for arm, a in s["arms"].items() for r in a["runs"]]
    return header, rows


def cpu_study_pairs():
    s = load(CPU_STUDY)
    header = ["paired difference (3 seeds)", "dev CE (nats) [95% CI]", "BLiMP (points)", "supplement (points)",
              "dev CE per seed"]
    rows = []
    for a, b in (("cached", "baseline"), ("online", "baseline"), ("cached", "online")):
        cells = [f"{a} − {b}"]
        for metric, scale, digits in (("best_dev_ce", 1, 3), ("blimp", 100, 1), ("supplement", 100, 1)):
            cells.append(ci(runs(s, a, metric), runs(s, b, metric), scale, digits))
        diffs = [x - y for x, y in zip(runs(s, a, "best_dev_ce"), runs(s, b, "best_dev_ce"), strict=True)]
        cells.append(", ".join(f"{d:+.3f}" for d in diffs))
        rows.append(cells)
    return header, rows


def cpu_study_stages():
    s, st = load(CPU_STUDY), load(CPU_STAGES)
    header = ["stage / run", "wall time (s)", "peak RSS (MiB)"]
    rows = [[x["stage"] + (f" ({x['note']})" if x.get("note") else ""), f"{x['seconds']:,.1f}",
             f"{x['peak_rss_mib']:,}"] for x in st["stages"]]
    total = sum(x["seconds"] for x in st["stages"])
    for name, secs in st["teacher_eval_seconds"].items():
        rows.append([f"study: eval teacher/{name} (BLiMP + supplement, every pair)", f"{secs:,.1f}", ""])
        total += secs
    for arm, ev in st["run_eval_seconds_mean"].items():
        train = runs(s, arm, "seconds")
        rows.append([f"study: {arm} run, mean of {len(train)} (train / eval)", f"{mean(train):,.1f} / {ev:,.1f}",
                     f"{max(runs(s, arm, 'peak_rss_mib')):,.0f} (max of {len(train)})"])
        total += sum(train) + len(train) * ev
    rows.append(["total (measured, with the contention above)", f"{total:,.0f} ({total / 60:.0f} min)", ""])
    return header, rows


def _sparse_dev_ce(arm: str) -> list[float]:
    """Per-seed dev CE: full precision from the CPU study where the arm is its own, else the transcribed values."""
    s, sp = load(CPU_STUDY), load(SPARSE)
    return runs(s, arm, "best_dev_ce") if arm in s["arms"] else sp["arms"][arm]["dev_ce_per_seed"]


ROUNDED_TOL = 1.1e-3
"""How far a number recomputed from per-seed dev CE kept at 4 decimals may be from the study's own (full-precision)
printout at 3 decimals: 0.0005 of display rounding plus up to ~0.0005 from the inputs' rounding through the
interval's t-factor."""


def _rounded(arm: str) -> bool:
    return arm not in load(CPU_STUDY)["arms"]


def sparse_targets():
    s, sp = load(CPU_STUDY), load(SPARSE)
    zs = sp["seeds_zero_shot"]
    header = ["arm", "B/token", "best dev CE (nats)", "Δ dev CE vs baseline [95% CI]", "BLiMP (%)",
              "Δ BLiMP vs baseline [95% CI]", "supplement (%)", "Δ supplement vs baseline [95% CI]"]
    rows = []
    base = _sparse_dev_ce("baseline")
    for arm, a in sp["arms"].items():
        dev = _sparse_dev_ce(arm)
        tol = ROUNDED_TOL if _rounded(arm) else 0
        cells = [a["label"], f"{a['bytes_per_token']:.1f}" if "bytes_per_token" in a else "",
                 Near(ms(dev), tol) if tol else ms(dev),
                 "" if arm == "baseline" else (Near(ci(dev, base), tol) if tol else ci(dev, base))]
        for metric in ("blimp", "supplement"):
            if arm in s["arms"]:
                cells.append(ms(runs(s, arm, metric, zs), 100, 1))
                cells.append("" if arm == "baseline" else
                             ci(runs(s, arm, metric, zs), runs(s, "baseline", metric, zs), 100, 1))
            else:
                cells += [a[metric], a[f"delta_{metric}"]]
        rows.append(cells)
    return header, rows


def sparse_targets_pairs():
    header = ["paired difference, dev CE (3 seeds)", "mean [95% CI] (nats)", "per seed"]
    rows = []
    for a, b in (("topk4", "cached"), ("sampled12", "cached"), ("sampled32", "cached"), ("hybrid8s12", "cached"),
                 ("sampled12", "topk4"), ("sampled32", "topk4"), ("hybrid8s12", "topk4"),
                 ("hybrid8s12", "sampled32")):
        x, y = _sparse_dev_ce(a), _sparse_dev_ce(b)
        tol = ROUNDED_TOL if _rounded(a) or _rounded(b) else 0
        text = ci(x, y)
        per_seed = ", ".join(f"{u - v:+.3f}" for u, v in zip(x, y, strict=True))
        rows.append([f"{a} − {b}", Near(text, tol) if tol else text, Near(per_seed, tol) if tol else per_seed])
    return header, rows


def sparse_targets_runs():
    sp = load(SPARSE)
    header = ["arm", "seed 0 dev CE", "seed 1 dev CE", "seed 2 dev CE"]
    rows = []
    for arm in sp["arms"]:
        dev = _sparse_dev_ce(arm)
        if not _rounded(arm):  # the CPU study's own runs: their transcribed values must agree with study.json
            assert all(abs(u - v) < 5.1e-5 for u, v in zip(dev, sp["arms"][arm]["dev_ce_per_seed"], strict=True)), arm
        rows.append([arm, *(f"{v:.4f}" for v in dev)])
    return header, rows


ANTLM_ARMS = {
    "baseline": "baseline (causal, 3 epochs)",
    "cached": "cached (causal + KD)",
    "antlm": "antlm (clm:1,mlm:1,clm:1)",
    "antlm-cached": "antlm-cached (KD in the causal phases)",
    "antlm-cached-mlmkd": "antlm-cached + `distill.mlm_kd`",
    "antlm-own": "antlm, `mlm_target: own`",
}


def antlm_study():
    s = load(ANTLM)
    header = ["arm", "best dev CE (nats)", "Δ dev CE vs baseline [95% CI]", "BLiMP fast (%)",
              "Δ BLiMP vs baseline [95% CI]", "supplement fast (%)", "Δ supplement vs baseline [95% CI]",
              "wall per run (s, mean)"]
    rows = []
    for arm, label in ANTLM_ARMS.items():
        cells = [label, ms(runs(s, arm, "best_dev_ce"))]
        for metric, scale, digits in (("best_dev_ce", 1, 3), ("blimp", 100, 1), ("supplement", 100, 1)):
            if metric != "best_dev_ce":
                cells.append(ms(runs(s, arm, metric), 100, 1))
            cells.append("" if arm == "baseline" else ci(runs(s, arm, metric), runs(s, "baseline", metric), scale,
                                                         digits))
        cells.append(f"{mean(runs(s, arm, 'seconds')):.0f}")
        rows.append(cells)
    return header, rows


ANTLM_PAIRS = (("cached", "baseline", "KD (one teacher), causal only"),
               ("antlm", "baseline", "the AntLM schedule, no KD"),
               ("antlm-cached", "cached", "the AntLM schedule, with KD"),
               ("antlm-cached-mlmkd", "antlm-cached", "KD in the masked phase too"),
               ("antlm-own", "antlm", "masked token predicted at its own position"))


def antlm_pairs():
    s = load(ANTLM)
    header = ["what changes", "arm − reference", "Δ dev CE [95% CI]", "dev CE per seed", "Δ BLiMP fast",
              "Δ supplement fast"]
    rows = []
    for a, b, what in ANTLM_PAIRS:
        dev = ", ".join(f"{x - y:+.3f}" for x, y in zip(runs(s, a, "best_dev_ce"), runs(s, b, "best_dev_ce"),
                                                         strict=True))
        rows.append([what, f"{a} − {b}", ci(runs(s, a, "best_dev_ce"), runs(s, b, "best_dev_ce")), dev,
                     ci(runs(s, a, "blimp"), runs(s, b, "blimp"), 100, 1),
                     ci(runs(s, a, "supplement"), runs(s, b, "supplement"), 100, 1)])
    return header, rows


def antlm_supplement_runs():
    s = load(ANTLM)
    header = ["seed", "baseline supplement fast (%)", "antlm-cached (%)", "difference (points)",
              "difference (pairs of 250)"]
    rows = []
    for r0, r1 in zip(s["arms"]["baseline"]["runs"], s["arms"]["antlm-cached"]["runs"], strict=True):
        d = r1["supplement"] - r0["supplement"]
        assert r0["supplement_pairs"] == r1["supplement_pairs"] == 250
        rows.append([str(r0["seed"]), f"{100 * r0['supplement']:.1f}", f"{100 * r1['supplement']:.1f}",
                     f"{100 * d:+.1f}", f"{round(250 * d):+d}"])
    return header, rows


def antlm_curves():
    s = load(ANTLM)
    steps = [step for step, _ in s["arms"]["baseline"]["mean_curve"]]
    header = ["arm", *(f"step {step}" for step in steps)]
    rows = [[arm, *(f"{ce:.3f}" for _, ce in s["arms"][arm]["mean_curve"])] for arm in ANTLM_ARMS]
    return header, rows


def antlm_entity_tracking():
    e = load(ENTITY)
    header = ["arm", "entity tracking (%)", "Δ vs baseline [95% CI]", "regular", "ambiref", "move_contents"]
    rows = []
    per_seed = e["overall_per_seed"]
    for arm, p in e["printed"].items():
        if arm in per_seed:  # recompute from the per-seed values (kept at 2 decimals) as far as they allow
            overall = Near(ms(per_seed[arm], 1, 2), 0.06)
            assert cell_matches(p["overall"], overall), (arm, p["overall"])
            delta = "" if arm == "baseline" else Near(ci(per_seed[arm], per_seed["baseline"], 1, 2), 0.06)
            if delta:
                assert cell_matches(p["delta"], delta), (arm, p["delta"])
            cells = [p["overall"], p.get("delta", "")]
        else:
            cells = [p["overall"], ""]
        rows.append([arm, *cells, p["regular"], p["ambiref"], p["move_contents"]])
    return header, rows


def tuned_baseline():
    s = load(ANTLM)
    header = ["arm", "best dev CE (nats)", "Δ dev CE vs untuned baseline [95% CI]", "BLiMP fast (%)",
              "supplement fast (%)"]
    labels = {"baseline": "baseline (preset settings)", "swept-baseline": "swept baseline",
              "cached": "distilled (cached, T = 1, alpha 0.5, preset settings)"}
    rows = [[label, ms(runs(s, arm, "best_dev_ce")),
             "" if arm == "baseline" else ci(runs(s, arm, "best_dev_ce"), runs(s, "baseline", "best_dev_ce")),
             ms(runs(s, arm, "blimp"), 100, 1), ms(runs(s, arm, "supplement"), 100, 1)]
            for arm, label in labels.items()]
    return header, rows


def tuned_baseline_pairs():
    s = load(ANTLM)
    header = ["distilled − swept baseline", "mean [95% CI]", "per seed"]
    rows = []
    for metric, scale, digits, label in (("best_dev_ce", 1, 3, "dev CE (nats)"), ("blimp", 100, 1, "BLiMP fast (points)"),
                                         ("supplement", 100, 1, "supplement fast (points)")):
        a, b = runs(s, "cached", metric), runs(s, "swept-baseline", metric)
        rows.append([label, ci(a, b, scale, digits),
                     ", ".join(f"{scale * (x - y):+.{digits}f}" for x, y in zip(a, b, strict=True))])
    return header, rows


TUNED = "docs/results/tuned-baseline/study.json"
TUNED_ARMS = {"baseline": "preset baseline (plain CE)", "swept-baseline": "swept baseline",
              "cached": "preset distilled (T = 1, alpha 0.5, forward KL)", "swept-distilled": "swept distilled",
              "swept-distilled-fkl": "swept distilled, forward KL in place of its divergence"}


def tuned_both_swept():
    """The 5-seed study of part 3: every arm's mean ± std and its paired Δ against the preset baseline."""
    s = load(TUNED)
    header = ["arm", "best dev CE (nats)", "Δ dev CE vs preset baseline [95% CI]", "BLiMP fast (%)",
              "supplement fast (%)", "wall per run (s)"]
    rows = [[label, ms(runs(s, arm, "best_dev_ce")),
             "" if arm == "baseline" else ci(runs(s, arm, "best_dev_ce"), runs(s, "baseline", "best_dev_ce")),
             ms(runs(s, arm, "blimp"), 100, 1), ms(runs(s, arm, "supplement"), 100, 1),
             f"{mean(runs(s, arm, 'seconds')):.0f}"]
            for arm, label in TUNED_ARMS.items()]
    return header, rows


def tuned_both_swept_pairs():
    """The comparisons the page states, paired by seed."""
    s = load(TUNED)
    header = ["comparison", "dev CE (nats) [95% CI]", "per seed (dev CE)", "BLiMP fast (points)",
              "supplement fast (points)"]
    pairs = [("swept-distilled", "swept-baseline", "swept distilled − swept baseline (BabyLlama-2's claim)"),
             ("cached", "baseline", "preset distilled − preset baseline"),
             ("cached", "swept-baseline", "preset distilled − swept baseline"),
             ("swept-baseline", "baseline", "swept baseline − preset baseline"),
             ("swept-distilled", "cached", "swept distilled − preset distilled"),
             ("swept-distilled-fkl", "swept-distilled", "forward KL − the swept divergence (swept settings)")]
    rows = []
    for a, b, label in pairs:
        ce_a, ce_b = runs(s, a, "best_dev_ce"), runs(s, b, "best_dev_ce")
        rows.append([label, ci(ce_a, ce_b), ", ".join(f"{x - y:+.3f}" for x, y in zip(ce_a, ce_b, strict=True)),
                     ci(runs(s, a, "blimp"), runs(s, b, "blimp"), 100, 1),
                     ci(runs(s, a, "supplement"), runs(s, b, "supplement"), 100, 1)])
    return header, rows


def _majority(t: dict) -> tuple[float, float]:
    """(% of the most frequent valid label, F1 of always answering 1 in %)."""
    counts = {int(k): v for k, v in t["valid_label_counts"].items()}
    n = sum(counts.values())
    p1 = counts.get(1, 0) / n
    return 100 * max(counts.values()) / n, 100 * 2 * p1 / (1 + p1)


def finetune():
    f = load(FINETUNE)
    header = ["task", "metric (the recipe's)", "score", "accuracy", "F1", "MCC", "best epoch", "train / valid",
              "majority class (valid)"]
    rows = []
    for task, t in f["tasks"].items():
        assert sum(t["valid_label_counts"].values()) == t["valid"], task
        maj, f1_ones = _majority(t)
        base = f"{maj:.1f}" + (f" (F1 of always \"1\": {f1_ones:.1f})" if t["metric"] == "f1" else "")
        rows.append([task, "F1" if t["metric"] == "f1" else t["metric"], f"{t['score']:.1f}", f"{t['accuracy']:.1f}",
                     "" if t["f1"] is None else f"{t['f1']:.1f}", "" if t["mcc"] is None else f"{t['mcc']:.1f}",
                     f"{t['best_epoch']}/{t['epochs']}", f"{t['train']:,} / {t['valid']:,}", base])
    return header, rows


def readme_summary():
    s, a, sp, et, ft = load(CPU_STUDY), load(ANTLM), load(SPARSE), load(ENTITY), load(FINETUNE)
    eb, eb_caches, tb, xt = load(EQUAL), load(EQUAL_CACHES), load(TUNED), load(CROSS5)
    xtok = "[cross-tokenizer](docs/results/cross-tokenizer.md)"
    dev = lambda st, arm: runs(st, arm, "best_dev_ce")  # noqa: E731
    wall = mean(runs(s, "cached", "seconds")) / mean(runs(s, "online", "seconds"))
    t = s["teachers"]
    maj = {task: _majority(x)[0] for task, x in ft["tasks"].items()}
    cpu, sparse, antlm = ("[CPU study](docs/results/cpu-study.md)", "[sparse targets](docs/results/sparse-targets.md)",
                          "[AntLM](docs/results/antlm.md)")
    header = ["what was measured", "result [95% CI]", "seeds", "details"]
    rows = [
        ["KD from the top-64 cache − plain training: dev CE (nats)", ci(dev(s, "cached"), dev(s, "baseline")), "3", cpu],
        ["the same: BLiMP, every pair (points)",
         ci(runs(s, "cached", "blimp"), runs(s, "baseline", "blimp"), 100, 1), "3", cpu],
        [f"cache − online KD (teachers resident): dev CE, at {wall:.2f}x online's wall time",
         ci(dev(s, "cached"), dev(s, "online")), "3", cpu],
        ["student vs its two teachers: BLiMP (%)",
         f"{ms(runs(s, 'cached', 'blimp'), 100, 1)} vs {100 * t['gpt2']['blimp']:.1f} and "
         f"{100 * t['llama']['blimp']:.1f}", "3 vs 1", cpu],
        [f"sampled, 32 draws ({sp['arms']['sampled32']['bytes_per_token']:.1f} B/token) − top-64 "
         f"({sp['arms']['cached']['bytes_per_token']:.1f}): dev CE",
         Near(ci(_sparse_dev_ce("sampled32"), dev(s, "cached")), ROUNDED_TOL), "3", sparse],
        [f"hybrid, top-8 + 12 draws ({sp['arms']['hybrid8s12']['bytes_per_token']:.1f} B/token) − top-64: dev CE",
         Near(ci(_sparse_dev_ce("hybrid8s12"), dev(s, "cached")), ROUNDED_TOL), "3", sparse],
        [f"hybrid, top-4 + 8 draws ({eb_caches['hybrid-4s8']['bytes_per_token']:.1f} B/token) − top-64 "
         f"({eb_caches['cached']['bytes_per_token']:.1f}), one teacher: dev CE",
         ci(dev(eb, "hybrid-4s8"), dev(eb, "cached")), "3", "[equal bytes](docs/results/equal-bytes.md)"],
        [f"hybrid, top-4 + 4 draws ({eb_caches['hybrid-4s4']['bytes_per_token']:.1f} B/token) − top-64: dev CE",
         ci(dev(eb, "hybrid-4s4"), dev(eb, "cached")), "3", "[equal bytes](docs/results/equal-bytes.md)"],
        [f"hybrid top-4 + 8 at the 50% highest-entropy positions ({eb_caches['hybrid-4s8-kd50']['bytes_per_token']:.1f} "
         f"B/token) − top-64: dev CE", ci(dev(eb, "hybrid-4s8-kd50"), dev(eb, "cached")), "3",
         "[equal bytes](docs/results/equal-bytes.md)"],
        ["KD from a teacher with another tokenizer (BPE, no prefix space), exact-match KL − plain training: dev CE",
         ci(dev(xt, "xtok-exact"), dev(xt, "baseline")), "5", xtok],
        ["the same teacher through ALM, the paper's settings, GradMag − plain training: dev CE",
         ci(dev(xt, "xtok-alm-gradmag"), dev(xt, "baseline")), "5", xtok],
        ["AntLM schedule clm:1,mlm:1,clm:1 − causal only: dev CE", ci(dev(a, "antlm"), dev(a, "baseline")), "3", antlm],
        ["KD in the masked phase too (`distill.mlm_kd`) − KD in causal phases: dev CE",
         ci(dev(a, "antlm-cached-mlmkd"), dev(a, "antlm-cached")), "3", antlm],
        ["both swept with the same 16-trial budget, distilled − plain: dev CE",
         ci(dev(tb, "swept-distilled"), dev(tb, "swept-baseline")), "5", "[tuned baseline](docs/results/tuned-baseline.md)"],
        ["entity tracking, distilled − plain (points)",
         et["printed"]["cached"]["delta"], "3", antlm],
        ["(Super)GLUE fine-tuning, the full recipe: RTE / MNLI accuracy (majority class)",
         f"{ft['tasks']['rte']['accuracy']:.1f} ({maj['rte']:.1f}) / {ft['tasks']['mnli']['accuracy']:.1f} "
         f"({maj['mnli']:.1f})", "1", "[fine-tuning](docs/results/finetune.md)"],
    ]
    return header, rows


# ---- BENCHMARKS.md ----

DIVERGENCES = "docs/results/divergences/step-ratios.json"
TARGETS_BENCH = "docs/results/sparse-targets/targets-bench.json"
FAULT_RUNS = [f"docs/results/fault-injection/run{i}.json" for i in (1, 2, 3)]
FAULT_RUNS_42 = [f"docs/results/fault-injection/run{i}.json" for i in (4, 5)]


def divergence_steps():
    d = load(DIVERGENCES)
    header = ["divergence", "step CPU (ms)", "÷ forward KL", "step wall (ms)", "÷ forward KL", "head CPU ÷ forward KL"]
    rows = [[f"`{name}`", f"{x['step_cpu_ms']:.0f}", f"{x['step_cpu_ratio']:.3f}", f"{x['step_ms']:.0f}",
             f"{x['step_ratio']:.3f}", f"{x['head_cpu_ratio']:.3f}"] for name, x in d["divergences"].items()]
    return header, rows

DIVERGENCES_RERUN = "docs/results/divergences/step-ratios-2026-12-07.json"


def divergence_steps_rerun():
    """The re-run after the cache refactor beside the recorded run: each divergence's ratios to forward KL."""
    old, new = load(DIVERGENCES)["divergences"], load(DIVERGENCES_RERUN)["divergences"]
    header = ["divergence", "step CPU (ms), now", "step CPU ÷ forward KL, before", "step CPU ÷ forward KL, now",
              "head CPU ÷ forward KL, before", "head CPU ÷ forward KL, now"]
    rows = [[f"`{name}`", f"{x['step_cpu_ms']:.0f}", f"{old[name]['step_cpu_ratio']:.3f}", f"{x['step_cpu_ratio']:.3f}",
             f"{old[name]['head_cpu_ratio']:.3f}", f"{x['head_cpu_ratio']:.3f}"] for name, x in new.items()]
    return header, rows


DISTILL_STEP = "docs/results/benchmarks/distill-step-2026-12-07.json"


def _target(ratio: float, target: float, digits: int = 3) -> str:
    return f"{ratio:.{digits}f} (target ≤ {target:g}: {'met' if ratio <= target else 'missed'})"


def chunked_loss_step():
    """bench_distill.py --modes plain,cached,hf-plain: the chunked loss against the model's own (B, S, V) logits."""
    m = load(DISTILL_STEP)["modes"]
    hf, plain, cached = m["hf-plain"], m["plain"], m["cached"]
    header = ["mode", "ms/step", "÷ HF plain", "÷ chunked plain", "peak RSS (MiB)", "÷ HF plain"]
    rows = [["HF plain CE (`loss_impl: hf`)", f"{hf['total_ms']:,.1f}", "1.000", "", f"{hf['peak_rss_mib']:,.0f}",
             "1.000"],
            ["chunked plain CE (bbl's default)", f"{plain['total_ms']:,.1f}", f"{plain['total_ms'] / hf['total_ms']:.3f}",
             "1.000", f"{plain['peak_rss_mib']:,.0f}", f"{plain['peak_rss_mib'] / hf['peak_rss_mib']:.3f}"],
            ["chunked cached KD (`topk_tail`, k = 64)", f"{cached['total_ms']:,.1f}",
             _target(cached["total_ms"] / hf["total_ms"], 1.0), _target(cached["total_ms"] / plain["total_ms"], 1.10),
             f"{cached['peak_rss_mib']:,.0f}", _target(cached["peak_rss_mib"] / hf["peak_rss_mib"], 0.9)]]
    return header, rows


CACHE_BENCH = "docs/results/benchmarks/cache-2026-12-07.json"


def cache_dump():
    """bench_cache.py: dump throughput against the same teachers' forward-only throughput (target ≥ 0.90)."""
    b = load(CACHE_BENCH)
    sizes = " + ".join(f"{n / 1e6:.2f}M" for n in b["teachers"].values())
    r = b["dump_over_forward"]
    header = ["teachers", "forward-only", "dump", "dump ÷ forward"]
    rows = [[f"demo CPU teachers ({sizes}), {b['windows']} windows", f"{b['forward_windows_per_s']:.1f} windows/s",
             f"{b['dump_windows_per_s']:.1f} windows/s",
             f"{r:.2f} — {'meets' if r >= 0.9 else 'misses'} the target"]]
    return header, rows


def cache_layouts():
    """bench_cache.py: each layout's bytes/token, fidelity against the fp32 targets, and read speeds."""
    header = ["layout", "bytes/token", "mean KL vs exact (nats)", "max abs log-prob error", "contiguous read (windows/s)",
              "shuffled read (windows/s)", "random single windows/s"]
    rows = [[x["name"], f"{x['bytes_per_token']:.1f}", f"{x['mean_kl']:.1e}", f"{x['max_abs_logprob_error']:.1e}",
             f"{x['contiguous_windows_per_s']:,.0f}", f"{x['shuffled_windows_per_s']:,.0f}",
             f"{x['random_single_windows_per_s']:,.0f}"] for x in load(CACHE_BENCH)["layouts"]]
    return header, rows


TARGETS_RENORM_ROWS = (64, 4)
"""The top-k sizes whose renormalised target the table shows beside the tail-aware one (same cache)."""


def targets_bench():
    b = load(TARGETS_BENCH)
    header = ["config", "B/token (compressed)", "grad error ‖p−r‖₂", "TV(p, r)"]
    rows = []
    for r in b["results"]:
        if r["targets"] == "topk":
            k = r["top_k"]
            rows.append([f"topk {k}, tail-aware" + (" (the study's `cached` arm)" if k == 64 else ""),
                         f"{r['bytes_per_token']:.1f}", f"{r['grad_error']:.4f}", f"{r['tv']:.3f}"])
            if k in TARGETS_RENORM_ROWS:
                rows.append([f"topk {k}, renormalised", "(same cache)", f"{r['renorm_grad_error']:.4f}",
                             f"{r['renorm_tv']:.3f}"])
        else:
            what = (f"sampled {r['num_samples']}" if r["targets"] == "sampled"
                    else f"hybrid {r['top_k']} + {r['num_samples']}")
            rows.append([what, f"{r['bytes_per_token']:.1f}", f"{r['grad_error']:.4f}", f"{r['tv']:.3f}"])
    return header, rows


def _fault_cell(run: dict, kind: str, detail) -> str:
    """One run's outcome for one kind of case: verdict counts (and what they showed), '(discarded)' or 'not run'."""
    cases = [c for c in run.get("cases", []) if c["kind"] == kind]
    if not cases:
        return "(discarded)" if any(c["kind"] == kind for c in run.get("discarded", [])) else "not run"
    counts = {v: sum(c["verdict"] == v for c in cases) for v in ("survived", "lost", "stuck")}
    counts = {v: n for v, n in counts.items() if n}
    assert sum(counts.values()) == len(cases), kind
    text = ", ".join(f"{n} {v}" for v, n in counts.items())
    return text + (detail(cases) if detail and set(counts) == {"survived"} else "")


def _counts(cases: list[dict]) -> str:
    n = {v: sum(c["verdict"] == v for c in cases) for v in ("survived", "lost", "stuck")}
    return ", ".join(f"{k} {v}" for k, v in n.items() if v or k == "survived")


def fault_injection_42():
    """Runs 4 and 5 (issue 42): random kills over the whole tiny pipeline, eval included, and the eval kill."""
    r4, r5 = (load(p) for p in FAULT_RUNS_42)
    header = ["case", "run 4", "run 5"]

    def random(r):
        cs = [c for c in r["cases"] if c["kind"] == "random"]
        stuck = [c["stage"] for c in cs if c["verdict"] == "stuck"]
        return f"{len(cs)} kills: {_counts(cs)}" + (f" (at {', '.join(stuck)})" if stuck else "")

    def stages(r):
        cs = [c for c in r["cases"] if c["kind"] == "random"]
        order = ["prepare", "teacher-gpt2", "teacher-llama", "dump-logits", "distill", "baseline", "eval",
                 "(between stages)"]
        order += sorted({c["stage"] for c in cs} - set(order))
        n = {s: sum(c["stage"] == s for c in cs) for s in order}
        return ", ".join(f"{s} {k}" for s, k in n.items() if k)

    def evals(r):
        cs = [c for c in r["cases"] if c["kind"] == "eval-kill"]
        return f"{_counts(cs)} ({', '.join(c['rerun'] for c in cs)})" if cs else "not run"

    rows = [["random kill of `bbl pipeline --preset tiny` at U(1 s, straight wall time), then re-run until it "
             "finishes (3 tries): cache chunks byte-equal, every dev CE and eval number equal", random(r4), random(r5)],
            ["the stage each kill hit", stages(r4), stages(r5)],
            ["runs that finished before their kill time (no kill: drawn again, not counted)",
             str(len(r4["not_kills"])), str(len(r5["not_kills"]))],
            ["`bbl eval` killed once its first model's JSON exists, re-run as it was / with `--overwrite`",
             evals(r4), evals(r5)]]
    old, new = (load(f"docs/results/fault-injection/{f}.json") for f in ("run6-old-code", "run6"))
    rows.append(["the pipeline's `bbl dump-logits` killed U(0, 80 ms) after its store appears, re-run as it was "
                 "(run 6, `--only dump-create --kills 10 --seed 6`)",
                 f"on the code of run 4: {_counts(old['cases'])}", f"on the fixed code: {_counts(new['cases'])}"])
    return header, rows


def fault_injection():
    r1, r2, r3 = (load(p) for p in FAULT_RUNS)

    def sweep(cs):
        (c,) = cs
        return (f": the dead trial failed and retried with its settings, {c['finished']} finished, "
                f"{c['distinct_finished_settings']} distinct settings")

    def finetune(cs):
        (c,) = cs
        assert c["first_task_kept"] and c["finished"] and c["exit"] == 0
        return ": rte's predictions byte-equal, " + ("no temporary dir left" if c["leaked_temp_dirs"] == 0 else
                                                      f"{c['leaked_temp_dirs']} temporary dirs left")

    def writers(cs):
        assert all(sorted(c["exit_codes"]) == [0, 1] and c["refused_names_holder"] for c in cs)
        assert [c.get("dev_ce_equals_a_single_run") for c in cs if c["command"] == "distill"] == [True]
        return (": exit codes 0 and 1, the refusal names the holder; the distilled student's dev CE equals a "
                "single run's")

    def bad(cs):
        assert all(c["exit"] != 0 and c["error_lines"] == 1 and not c["traceback"] and not c["wrote"] for c in cs)
        secs = [c["seconds"] for c in cs]
        return f" ({min(secs):.1f}-{max(secs):.1f} s each: refused before any compute)"

    writes = [c for c in r2["cases"] if c["kind"] == "durable-write"]
    landed = sum(c["landed_in_write"] for c in writes)
    n_bad = sum(c["kind"] == "bad-input" for c in r2["cases"])
    header = ["case", "how", "run 1", "run 2", "run 3"]
    cases = [
        ("random", "random kill of `bbl pipeline --preset tiny` (SIGKILL to its process group at U(1 s, straight "
                   "wall time)), then re-run", "each kill in a fresh workdir", None),
        ("durable-write", "kill inside each stage's durable write (a `checkpoint-N` without `trainer_state.json` "
                          "in each of the 4 trainings; the dump after its first chunk), one workdir, then re-run",
         f"polled every ms; {'all ' if landed == len(writes) else ''}{landed} landed in run 2", None),
        ("sweep-worker", "a seeded `bbl sweep` killed in its second trial, re-run", "4 trials, heartbeat 1 s", sweep),
        ("finetune", "`bbl finetune` of 2 tasks killed once the first task's predictions exist, re-run",
         "rte + wsc, 2 epochs", finetune),
        ("two-writers", "two `bbl distill` / two `bbl dump-logits` started together on one output",
         "same command twice", writers),
        ("bad-input", f"the bad-input table ({n_bad} invocations: malformed YAML in `--set` and files, a config that "
                      "is a list / scalar / empty, `.inf` / `.nan`, zero-byte and truncated `zarr.json` / "
                      "`config.json` / `manifest.json`, `--out` under a file, unwritable `--out` in train, eval, "
                      "dump, prepare, finetune, sweep, `data verify` on an empty dir and with an empty manifest, "
                      "study with a bad cache or an arm's typo, eval with an unusable ensemble member or two models "
                      "of one name, a sweep space with an invalid choice)",
         "each must exit non-zero with one `error:` line, no traceback, nothing written", bad),
    ]
    rows = [[case, how, *(_fault_cell(r, kind, detail) for r in (r1, r2, r3))] for kind, case, how, detail in cases]
    return header, rows


FLOPS = "docs/results/benchmarks/flop-estimates.json"


def _sci(x: float) -> str:
    m, e = f"{x:.1e}".split("e")
    return f"{m}e{int(e)}"


class _Estimate:
    """FLOPs, minutes at the sustained rate and memory of the presets in the raw file's inputs."""

    def __init__(self):
        f = load(FLOPS)
        self.a, self.ps = f["assumptions"], f["presets"]
        self.tokens = self.a["tokens_per_epoch"]

    def params(self, name: str) -> int:
        return self.ps[name]["parameters"]

    def minutes(self, flops: float) -> str:
        return f"~{flops / self.a['sustained_flop_per_s'] / 60:.1f} min"

    def train(self, name: str) -> tuple[float, float]:
        """(FLOPs, tokens) of training `name` for its epochs."""
        tokens = self.ps[name]["epochs"] * self.tokens
        return self.a["train_flops_per_parameter_token"] * self.params(name) * tokens, tokens

    def forward(self, names) -> float:
        return self.a["forward_flops_per_parameter_token"] * sum(self.params(n) for n in names) * self.tokens

    def memory(self, name: str, note: str = "") -> str:
        per = self.a["train_bytes_per_parameter"]
        gib = self.params(name) * per / 2 ** 30
        return f"{self.params(name) / 1e6:.0f}M × {per} B ≈ {gib:.1f} GiB + activations{note}"

    def micro_batch(self, name: str) -> str:
        return f" (micro-batch {self.ps[name]['micro_batch_size']} × {self.ps[name]['seq_len']})"


VOCAB_CACHE = "docs/results/benchmarks/vocab-cache.json"
VOCAB_ROWS = {"paper 16,000": ("16,000 (the paper's)", 16_000),
              "Llama 3 128,256": ("128,256 (Llama 3)", 128_256),
              "Qwen 2.5 151,936 (151,665 ids)": ("151,936 outputs, 151,665 ids (Qwen 2.5, padding dropped)", 151_665)}


def vocab_cache_bytes():
    v = load(VOCAB_CACHE)
    header = ["vocabulary", "id dtype", "bytes / token"]
    rows = [[VOCAB_ROWS[key][0], "uint16" if VOCAB_ROWS[key][1] <= 65_536 else "int32",
             f"{r['bytes_per_token']:.1f}"] for key, r in v["results"].items()]
    return header, rows


VOCAB_CACHE_RERUN = "docs/results/benchmarks/vocab-cache-2026-12-07.json"


def vocab_cache_throughput():
    """bench_vocab_cache.py's dump and read throughput per vocabulary, sizes interleaved per repetition."""
    res = load(VOCAB_CACHE_RERUN)["results"]
    base = next(iter(res.values()))["dump_windows_per_s"]
    header = ["vocabulary", "dump (windows/s)", "dump ÷ 16,000's", "read (windows/s, `CacheDataset`)"]
    rows = [[VOCAB_ROWS[key][0], f"{r['dump_windows_per_s']:.2f}" if r["dump_windows_per_s"] < 10
             else f"{r['dump_windows_per_s']:.1f}", f"{r['dump_windows_per_s'] / base:.2f}",
             f"{r['read_windows_per_s']:,.0f}"] for key, r in res.items()]
    return header, rows


TEACHER_DTYPE = "docs/results/benchmarks/teacher-dtype-2026-12-07.json"


def teacher_dtype():
    """bench_teacher_dtype.py: how far bf16 teachers move the cache's top-k targets from fp32's, and the dump's
    wall time (median of the repetitions, fp32's repetitions run before bf16's in the same process)."""
    r = load(TEACHER_DTYPE)["results"]["bf16"]
    header = ["", "bf16 vs fp32"]
    rows = [["top-64 ids both keep", f"{100 * r['ids_in_common']:.2f}%"],
            ["positions with the same top-64 set",
             f"{100 * r['positions_same_topk']:.1f}% (the rest swap a near-tie at the boundary)"],
            ["max / mean |Δ log p| on the ids both keep",
             f"{r['max_abs_logprob_error']:.3f} / {r['mean_abs_logprob_error']:.4f} nats"],
            ["KL(fp32 ‖ bf16) of the 65-outcome coarsening, same-set positions: mean / max",
             f"{_sci(r['mean_kl_same_topk'])} / {_sci(r['max_kl_same_topk'])} nats"],
            ["dump wall time (median of 3)",
             f"{r['dump_s']:.2f} s vs {r['fp32_dump_s']:.2f} s fp32 ({r['dump_s'] / r['fp32_dump_s']:.2f}x)"]]
    return header, rows


EVAL_BENCH = "docs/results/benchmarks/eval-2026-12-07.json"
EVAL_MODELS = {"student/distilled": "student (distilled)", "teachers/gpt2": "teacher gpt2",
               "teachers/llama": "teacher llama"}


def eval_speed():
    """bench_eval.py: BLiMP pairs/s per model (median of the repetitions) and each against the student's, the
    models run one after another in one process."""
    m = load(EVAL_BENCH)["models"]
    base = m["student/distilled"]["pairs_per_s"]
    header = ["model", "parameters", "pairs/s", "÷ student's"]
    rows = [[label, f"{m[k]['parameters'] / 1e6:.2f}M", f"{m[k]['pairs_per_s']:,.0f}",
             f"{m[k]['pairs_per_s'] / base:.2f}"] for k, label in EVAL_MODELS.items()]
    return header, rows


ESTIMATE_HEADER = ["stage", "FLOPs", "estimate on one H100", "memory (weights + AdamW state, fp32 master)"]


def paper_estimate():
    e = _Estimate()
    rows = []
    for name, note in (("gpt2-705m", e.micro_batch("gpt2-705m")), ("llama-360m", "")):
        flops, tokens = e.train(name)
        rows.append([f"{name}, {e.ps[name]['epochs']:.0f} epochs ({tokens / 1e6:.0f}M tokens)", _sci(flops),
                     e.minutes(flops), e.memory(name, note)])
    teachers = ("gpt2-705m", "llama-360m")
    flops, n = e.forward(teachers), sum(e.params(t) for t in teachers)
    bf16, cache = e.a["bf16_bytes_per_parameter"], e.a["cache_bytes_per_token"]["paper"]
    rows.append([f"dump-logits, both teachers once ({e.tokens / 1e6:.1f}M tokens)", _sci(flops),
                 e.minutes(flops) + " (+ top-k work)",
                 f"{n / 1e9:.2f}B × {bf16} B (bf16) ≈ {n * bf16 / 2 ** 30:.1f} GiB; cache ≈ {cache} B/token × "
                 f"{e.tokens / 1e6:.1f}M ≈ {cache * e.tokens / 1e9:.1f} GB on disk"])
    s = "llama-58m"
    flops, tokens = e.train(s)
    rows.append([f"{s} distilled, {e.ps[s]['epochs']:.0f} epochs ({tokens / 1e6:.0f}M tokens)",
                 f"{_sci(flops)} (+ ~12% KD, measured on CPU)", e.minutes(flops), e.memory(s)])
    rows.append([f"{s} baseline", _sci(flops), e.minutes(flops), e.memory(s)])
    rows.append(["eval (BLiMP + supplement, 5 models incl. ensemble)", "small", "minutes", "—"])
    return ESTIMATE_HEADER, rows


def babyllama2_estimate():
    e = _Estimate()
    m = "smollama-345m"
    epochs = f"{e.ps[m]['epochs']:.0f} epochs"
    flops, _ = e.train(m)
    fwd = e.forward((m, m))
    bf16, cache = e.a["bf16_bytes_per_parameter"], e.a["cache_bytes_per_token"]["babyllama2"]
    per_model = "≈ " + e.memory(m).split(" ≈ ", 1)[1]
    rows = [
        [f"teacher a, teacher b (seeds 0, 1), {epochs} each", f"2 × {_sci(flops)}",
         e.minutes(flops).replace("~", "~2 × "), e.memory(m, e.micro_batch(m))],
        [f"dump-logits, both teachers once ({e.tokens / 1e6:.1f}M tokens), top-64 at T = 1", _sci(fwd),
         e.minutes(fwd) + " (+ top-k work)",
         f"2 × {e.params(m) / 1e6:.0f}M × {bf16} B (bf16) ≈ {2 * e.params(m) * bf16 / 2 ** 30:.1f} GiB; cache ≈ "
         f"{cache} B/token (top-64, measured at V 4,096) × {e.tokens / 1e6:.1f}M ≈ {cache * e.tokens / 1e9:.1f} GB"],
        [f"student distilled from the cache, {epochs}", f"{_sci(flops)} (+ the KD term)", e.minutes(flops),
         per_model],
        [f"student baseline, {epochs}", _sci(flops), e.minutes(flops), per_model],
        ["eval (BLiMP + supplement, 5 models incl. the ensemble)", "small", "minutes", "—"],
    ]
    return ESTIMATE_HEADER, rows


EQUAL_ARMS = ("cached", "hybrid-8s12", "hybrid-4s8", "hybrid-2s8", "hybrid-4s4", "hybrid-4s8-kd50", "hybrid-4s8-kd25",
              "hybrid-4s8-kd10")
CACHE_LABELS = {("topk", 64, 0): "top-64", ("hybrid", 4, 8): "hybrid: top-4 + 8 draws",
                ("hybrid", 8, 12): "hybrid: top-8 + 12 draws", ("hybrid", 2, 8): "hybrid: top-2 + 8 draws",
                ("hybrid", 4, 4): "hybrid: top-4 + 4 draws"}


def _cache_label(info: dict) -> str:
    """How a cache stores its targets, from its `bbl cache info --json` attributes."""
    a = info["attributes"]
    label = CACHE_LABELS.get((a.get("targets") or "topk", a["top_k"], a.get("num_samples") or 0), "?")
    extras = [f"log-prob step 2^{round(math.log2(a['logprob_step']))}"] + (["delta ids"] if a.get("delta_ids") else [])
    if a.get("kd_fraction"):
        extras.append(f"targets at {100 * a['kd_fraction']:.0f}% of positions")
    return f"{label}, {', '.join(extras)}"


def _equal_bytes(study: str, caches: str, arms) -> tuple[list[str], list[list]]:
    s, infos = load(study), load(caches)
    header = ["arm", "targets", "B/token", "best dev CE (nats)", "Δ vs baseline [95% CI]", "Δ vs top-64 [95% CI]",
              "BLiMP fast (%)", "supplement fast (%)"]
    base = runs(s, "baseline", "best_dev_ce")
    rows = [["baseline", "none (CE only)", "0", ms(base), "", "", ms(runs(s, "baseline", "blimp"), 100, 1),
             ms(runs(s, "baseline", "supplement"), 100, 1)]]
    for arm in arms:
        info, dev = infos[arm], runs(s, arm, "best_dev_ce")
        rows.append([arm, _cache_label(info), f"{info['bytes_per_token']:.1f}", ms(dev), ci(dev, base),
                     "" if arm == "cached" else ci(dev, runs(s, "cached", "best_dev_ce")),
                     ms(runs(s, arm, "blimp"), 100, 1), ms(runs(s, arm, "supplement"), 100, 1)])
    return header, rows


def equal_bytes():
    return _equal_bytes(EQUAL, EQUAL_CACHES, EQUAL_ARMS)


def equal_bytes_first_run():
    return _equal_bytes(EQUAL_FIRST, EQUAL_FIRST_CACHES, ("cached", "hybrid-4s8"))


CROSS_ARMS = ("xtok-exact", "xtok-uld", "xtok-gold")


def _gain_kept(s: dict, arm: str) -> str:
    """Share of the same-tokenizer KD gain (baseline - cached dev CE, its mean taken as exact) that `arm` keeps,
    with the interval of its paired difference to `cached` carried over: 1 - (arm - cached) / gain."""
    base, same, dev = (runs(s, a, "best_dev_ce") for a in ("baseline", "cached", arm))
    gain = mean(base) - mean(same)
    diff = paired_interval(dev, same)
    lo, hi = diff["ci95"]
    return f"{100 * (1 - diff['mean'] / gain):.0f}% [{100 * (1 - hi / gain):.0f}%, {100 * (1 - lo / gain):.0f}%]"


def _cross_study(study: str, bits_per_byte: str, arms: tuple, labels: dict, gain_kept: Callable, kept: str):
    """The cross-tokenizer study table: every arm's dev CE, its paired differences to plain training and to the
    same-tokenizer KD arm, the share of that gain it keeps (`gain_kept`), bits per byte, BLiMP and supplement."""
    s, bpb = load(study), load(bits_per_byte)
    header = ["arm", "KD from", "best dev CE (nats)", "Δ vs baseline [95% CI]", "Δ vs same-tokenizer KD [95% CI]",
              kept, "dev bits per byte", "BLiMP fast (%)", "supplement fast (%)"]
    base = runs(s, "baseline", "best_dev_ce")
    same = runs(s, "cached", "best_dev_ce")
    rows = []
    for arm in ("baseline", "cached", *arms):
        dev = runs(s, arm, "best_dev_ce")
        cross = arm in arms
        rows.append([arm, labels[arm], ms(dev), "" if arm == "baseline" else ci(dev, base),
                     ci(dev, same) if cross else "", gain_kept(s, arm) if cross else "",
                     ms(bpb["students"][arm], digits=4), ms(runs(s, arm, "blimp"), 100, 1),
                     ms(runs(s, arm, "supplement"), 100, 1)])
    return header, rows


def cross_tokenizer_study():
    labels = {"baseline": "none (CE only)", "cached": "top-64, the student's tokenizer (its own teacher)",
              "xtok-exact": "exact-match KL", "xtok-uld": "ULD", "xtok-gold": "GOLD (exact-match KL + ULD)"}
    return _cross_study(EQUAL, CROSS_BPB, CROSS_ARMS, labels, _gain_kept, "same-tokenizer gain kept")


CROSS5 = "docs/results/cross-tokenizer/study.json"
CROSS5_BPB = "docs/results/cross-tokenizer/bits-per-byte-5seeds.json"
CROSS5_ARMS = ("xtok-exact", "xtok-gold", "xtok-uld", "xtok-alm", "xtok-alm-gradmag", "two-teacher")
CROSS5_LABELS = {"baseline": "none (CE only)", "cached": "top-64, the student's tokenizer (its own teacher)",
                 "xtok-exact": "exact-match KL", "xtok-gold": "GOLD (exact-match KL + ULD)",
                 "xtok-uld": "ULD (CE + 1.5 ULD, T = 1)", "xtok-alm": "ALM (paper's settings), alpha 0.5",
                 "xtok-alm-gradmag": "ALM (paper's settings), GradMag weighting",
                 "two-teacher": "both teachers: top-64 + exact-match KL"}


def _gain_kept_fieller(s: dict, arm: str) -> str:
    """(baseline - arm) / (baseline - cached) over paired seeds, with Fieller's 95% interval
    (`paired_ratio_interval`): the share of the same-tokenizer KD gain that `arm` keeps."""
    base, same, dev = (runs(s, a, "best_dev_ce") for a in ("baseline", "cached", arm))
    r = paired_ratio_interval([b - d for b, d in zip(base, dev, strict=True)],
                              [b - c for b, c in zip(base, same, strict=True)])
    if r["ci95"] is None:
        return f"{100 * r['ratio']:.0f}% [unbounded]"
    lo, hi = r["ci95"]
    return f"{100 * r['ratio']:.0f}% [{100 * lo:.0f}%, {100 * hi:.0f}%]"


def cross_tokenizer_study_5seeds():
    return _cross_study(CROSS5, CROSS5_BPB, CROSS5_ARMS, CROSS5_LABELS, _gain_kept_fieller,
                        "same-tokenizer gain kept [95% Fieller]")


def cross_tokenizer_study_5seeds_pairs():
    """Paired differences between the cross-tokenizer arms themselves (which loss beats which)."""
    s = load(CROSS5)
    header = ["a − b (dev CE, nats)", "mean [95% CI]", "seeds with a < b"]
    pairs = [("xtok-alm", "baseline"), ("xtok-alm-gradmag", "xtok-alm"), ("xtok-alm-gradmag", "xtok-exact"),
             ("xtok-gold", "xtok-exact"), ("xtok-uld", "xtok-exact"), ("two-teacher", "cached"),
             ("two-teacher", "xtok-exact")]
    rows = []
    for a, b in pairs:
        x, y = runs(s, a, "best_dev_ce"), runs(s, b, "best_dev_ce")
        rows.append([f"{a} − {b}", ci(x, y), f"{sum(u < v for u, v in zip(x, y, strict=True))} of {len(x)}"])
    return header, rows


def cross_tokenizer_teachers_5seeds():
    return cross_tokenizer_teachers(CROSS5_BPB)


ALIGNMENT_PAIRS = {"tok-unigram": "Unigram, 4,096 ids, Metaspace, the same text (the study's teacher)",
                   "tok-bpe-dev": "byte-level BPE, 4,096 ids, no prefix space or NFKC, the dev text (no teacher)"}


def cross_tokenizer_alignment():
    a = load(CROSS_ALIGNMENT)
    header = ["teacher tokenizer", "aligned student positions", "teacher tokens per window",
              "teacher vocabulary with a student twin", "teacher tokens of the text with a twin"]
    rows = [[ALIGNMENT_PAIRS[name], f"{100 * p['aligned_fraction']:.1f}%", f"{p['teacher_tokens_per_window']:.1f}",
             f"{100 * p['vocabulary_with_student_twin']:.1f}%", f"{100 * p['text_tokens_with_student_twin']:.1f}%"]
            for name, p in a["pairs"].items()]
    return header, rows


QWEN_ALIGNMENT = "docs/results/benchmarks/tokenizer-alignment-qwen.json"
QWEN_ALIGNMENT_PAIRS = {"tok-unigram": "Unigram, 4,096 ids, Metaspace, trained on the same text",
                        "qwen2": "Qwen2's own: byte-level BPE, 151,646 ids, no prefix space, NFC"}


def tokenizer_alignment_qwen():
    a = load(QWEN_ALIGNMENT)
    header = ["teacher tokenizer", "aligned student positions", "teacher tokens per window",
              "teacher vocabulary with a student twin", "teacher tokens of the text with a twin",
              "aligned positions read space-shifted (+1 / -1)"]
    rows = [[QWEN_ALIGNMENT_PAIRS[name], f"{100 * p['aligned_fraction']:.1f}%", f"{p['teacher_tokens_per_window']:.1f}",
             f"{100 * p['vocabulary_with_student_twin']:.1f}%", f"{100 * p['text_tokens_with_student_twin']:.1f}%",
             f"{100 * p['aligned_with_student_prefix_space']:.2f}% / {100 * p['aligned_with_teacher_prefix_space']:.2f}%"]
            for name, p in a["pairs"].items()]
    return header, rows


def cross_tokenizer_teachers(bits_per_byte: str = CROSS_BPB):
    """Each teacher's dev CE on its own tokens and its dev bits per byte (`bbl eval --tasks perplexity`)."""
    bpb = load(bits_per_byte)
    header = ["teacher", "tokenizer", "dev CE (nats / own token)", "dev bits per byte"]
    rows = [[name, t["tokenizer"], f"{t['mean_ce']:.3f}", f"{t['bits_per_byte']:.4f}"]
            for name, t in bpb["teachers"].items()]
    return header, rows


STORAGE = "docs/results/benchmarks/storage-study-teacher.json"


def storage_study_teacher():
    b = load(STORAGE)
    header = ["config", "B/token", "KL mean", "KL max", "grad err mean", "grad err max", "dump ÷ forward",
              "fixed s"]
    rows = [[r["config"], f"{r['bytes_per_token']:.1f}", f"{r['kl_mean']:.1e}", f"{r['kl_max']:.1e}",
             f"{r['grad_mean']:.4f}", f"{r['grad_max']:.4f}", f"{r['dump_over_forward']:.2f}",
             f"{r['dump_fixed_s']:.1f}"] for r in b["results"]]
    return header, rows


CROSS = "docs/results/benchmarks/cross-tokenizer.json"
CROSS_TARGETS = {"dump": 1.3, "bytes": 1.5, "step": 1.15, "rss": 1.10}


def _verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f} (target ≤ {target:.2f}: {'met' if ratio <= target else 'missed'})"


def cross_tokenizer_bench():
    b = load(CROSS)
    r, sec, step, rss, m = b["ratios"], b["dump_seconds"], b["step_seconds"], b["peak_rss_mib"], b["measured"]
    header = ["measure", "same-tokenizer top-k", "cross-tokenizer", "cross ÷ same"]
    rows = [[f"dump of {b['windows']} windows (s)", f"{sec['same']:.1f}", f"{sec['cross']:.1f}",
             _verdict(r["dump_time_cross_over_same"], CROSS_TARGETS["dump"])],
            ["dump without left context (s)", f"{sec['same']:.1f}", f"{sec['cross, no context']:.1f}",
             f"{r['dump_time_cross_no_context_over_same']:.2f}"],
            ["bytes per student token", f"{m['same_bytes_per_student_token']:.1f}",
             f"{m['cross_bytes_per_student_token']:.1f}",
             _verdict(r["bytes_per_student_token_cross_over_same"], CROSS_TARGETS["bytes"])]]
    for mode in ("exact_match", "uld", "gold"):
        rows.append([f"distillation step, {mode} (ms)", f"{1000 * step['same']:.0f}", f"{1000 * step[mode]:.0f}",
                     _verdict(r[f"step_{mode}_over_same"], CROSS_TARGETS["step"])])
    for mode in ("exact_match", "uld", "gold"):
        rows.append([f"peak RSS, {mode} (MiB)", f"{rss['same']['peak']:.0f}", f"{rss[mode]['peak']:.0f}",
                     _verdict(r[f"rss_{mode}_over_same"], CROSS_TARGETS["rss"])])
    return header, rows


CROSS_RERUN = "docs/results/benchmarks/cross-tokenizer-2026-12-07.json"
CROSS_QUIET = "docs/results/benchmarks/cross-tokenizer-2026-12-07-quiet.json"
CROSS_MODES = {"same": "same-tokenizer top-k (`topk_tail`)", "exact_match": "cross, `exact_match`",
               "uld": "cross, `uld`", "gold": "cross, `gold`", "alm": "cross, `alm`",
               "alm_gradmag": "cross, `alm`, `alm_weighting=gradmag`"}


def cross_tokenizer_alm(path: str = CROSS_RERUN):
    """bench_cross_tokenizer.py with the alm mode: every reading's step and peak RSS against the same-tokenizer
    step and against exact-match KL, measured side by side in one run."""
    b = load(path)
    step, rss = b["step_seconds"], b["peak_rss_mib"]
    header = ["distillation reading", "step (ms)", "÷ same-tokenizer", "÷ exact_match", "peak RSS (MiB)",
              "÷ same-tokenizer", "÷ exact_match"]
    rows = [[label, f"{1000 * step[m]:.0f}", f"{step[m] / step['same']:.2f}", f"{step[m] / step['exact_match']:.2f}",
             f"{rss[m]['peak']:.0f}", f"{rss[m]['peak'] / rss['same']['peak']:.2f}",
             f"{rss[m]['peak'] / rss['exact_match']['peak']:.2f}"] for m, label in CROSS_MODES.items() if m in step]
    return header, rows


def cross_tokenizer_alm_quiet():
    """The same command on the quiet VM (nothing else running)."""
    return cross_tokenizer_alm(CROSS_QUIET)


CROSS_ALM_ONE_PASS = "docs/results/benchmarks/cross-tokenizer-2026-12-07-alm1pass.json"


def cross_tokenizer_alm_one_pass():
    """The same command after ALM's chunked loss projects each chunk once (issue 41)."""
    return cross_tokenizer_alm(CROSS_ALM_ONE_PASS)


CROSS_GRADMAG = "docs/results/benchmarks/cross-tokenizer-2026-12-07-gradmag.json"


def cross_tokenizer_alm_gradmag():
    """The same command with the alm_gradmag mode (ALM with distill.alm_weighting=gradmag) beside the others."""
    return cross_tokenizer_alm(CROSS_GRADMAG)


def cross_tokenizer_8b():
    e = load(CROSS)["estimate_8b"]
    header = ["teacher tokens", "forward FLOPs", "minutes at 400 TFLOP/s", "bf16 weights", "B / student token",
              "cache"]
    teacher_tokens = e["student_tokens"] * e["teacher_tokens_per_student_token"] * (1 + e["context_share"])
    rows = [[f"{teacher_tokens / 1e6:.1f}M", _sci(e["forward_flops"]), f"{e['minutes_at_sustained']:.1f}",
             f"{e['bf16_weights_gib']:.1f} GiB", f"{e['bytes_per_student_token']:.0f}", f"{e['cache_gb']:.1f} GB"]]
    return header, rows


DUMP_SHAPES = {"llama-58m": "docs/results/benchmarks/dump-shapes-58m.json",
               "llama-360m": "docs/results/benchmarks/dump-shapes-360m.json"}


def dump_shapes():
    header = ["teacher shape (random weights, V 16,000)", "windows", "config", "dump ÷ forward", "fixed s"]
    rows = []
    for name, path in DUMP_SHAPES.items():
        b = load(path)
        rows += [[name, b["args"]["windows"], r["config"], f"{r['dump_over_forward']:.2f}", f"{r['dump_fixed_s']:.1f}"]
                 for r in b["results"]]
    return header, rows


OBJECT_STORE = "docs/results/benchmarks/object-store-2026-12-07.json"
TORCH_COMPILE = "docs/results/benchmarks/torch-compile-2026-12-07.json"


def object_store():
    """bench_object_store.py: shuffled reads and a dump, local disk against s3:// on a local moto server, medians
    of the repetitions run side by side in one process."""
    b = load(OBJECT_STORE)
    w, ratio = b["windows_per_s"], b["s3_over_local"]
    header = ["", "local disk (windows/s)", "S3, moto on localhost (windows/s)", "S3 ÷ local"]
    rows = [["shuffled read (`CacheDataset`, chunk = 256 windows)", f"{w['read_local']:,.0f}", f"{w['read_s3']:,.0f}",
             f"{ratio['read']:.3f}"],
            ["dump (the demo's 2 CPU teachers)", f"{w['dump_local']:,.1f}", f"{w['dump_s3']:,.1f}", f"{ratio['dump']:.3f}"]]
    return header, rows


def torch_compile():
    """bench_torch_compile.py: the study student's distillation eager and with `training.torch_compile`, alternated,
    medians of the repetitions."""
    b = load(TORCH_COMPILE)
    header = ["", "eager", "`training.torch_compile=true`", "eager ÷ compiled"]
    rows = [["steady step (s, after the first 24 steps)", f"{b['eager_steady_s_per_step']:.3f}",
             f"{b['compiled_steady_s_per_step']:.3f}", f"{b['steady_step_speedup']:.2f}"],
            ["whole 96-step run, compilation included (s)", f"{b['eager_wall_s']:.1f}", f"{b['compiled_wall_s']:.1f}",
             f"{b['whole_run_speedup']:.2f}"],
            ["dev CE after 96 steps (nats)", f"{statistics.median(r['dev_ce'] for r in b['runs'] if not r['compiled']):.5f}",
             f"{statistics.median(r['dev_ce'] for r in b['runs'] if r['compiled']):.5f}", ""]]
    return header, rows


CHECKS: dict[str, Callable[[], tuple[list[str], list[list]]]] = {
    f.__name__: f for f in (cpu_study, cpu_study_runs, cpu_study_pairs, cpu_study_stages, sparse_targets,
                            sparse_targets_pairs, sparse_targets_runs, antlm_study, antlm_pairs,
                            antlm_supplement_runs, antlm_curves, antlm_entity_tracking, tuned_baseline,
                            tuned_baseline_pairs, tuned_both_swept, tuned_both_swept_pairs, finetune, readme_summary, divergence_steps, divergence_steps_rerun,
                            chunked_loss_step, cache_dump, cache_layouts, targets_bench,
                            fault_injection, fault_injection_42, paper_estimate, babyllama2_estimate,
                            vocab_cache_bytes, vocab_cache_throughput, teacher_dtype, eval_speed,
                            equal_bytes, equal_bytes_first_run, storage_study_teacher,
                            cross_tokenizer_bench, cross_tokenizer_study, cross_tokenizer_teachers,
                            cross_tokenizer_alignment, tokenizer_alignment_qwen, dump_shapes,
                            cross_tokenizer_8b, cross_tokenizer_alm, cross_tokenizer_alm_quiet, cross_tokenizer_alm_one_pass, cross_tokenizer_alm_gradmag,
                            cross_tokenizer_study_5seeds, cross_tokenizer_study_5seeds_pairs,
                            cross_tokenizer_teachers_5seeds,
                            object_store, torch_compile)}


# ---- reading the documents ----

def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())
    return [c.strip() for c in cells[1:-1]]


def tables(path: Path):
    """Yield (line number, mark or None, header, rows) for each markdown table of a file."""
    lines = path.read_text().splitlines()
    fenced = False
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):  # a table shown inside a code block is an example, not a table
            fenced = not fenced
            i += 1
        elif not fenced and lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|\s*:?-", lines[i + 1]):
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            mark = MARK.search(lines[j]) if j >= 0 else None
            k = i + 2
            while k < len(lines) and lines[k].startswith("|"):
                k += 1
            yield i + 1, mark.group(1) if mark else None, split_row(lines[i]), [split_row(x) for x in lines[i + 2:k]]
            i = k
        else:
            i += 1


def check_table(where: str, name: str, raws: list[str], header: list[str], rows: list[list[str]]) -> list[str]:
    for raw in raws:
        if not (ROOT / raw).exists():
            return [f"{where} table {name}: raw file {raw} not found"]
    try:
        want_header, want_rows = CHECKS[name]()
    except (AssertionError, KeyError, ValueError, TypeError) as e:  # the raw files disagree among themselves
        return [f"{where} table {name}: the raw file(s) fail a consistency check: {type(e).__name__} {e}"]
    errors = []
    if [norm(h) for h in header] != [norm(h) for h in want_header]:
        return [f"{where} table {name}: header {header} != {want_header}"]
    if len(rows) != len(want_rows):
        errors.append(f"{where} table {name}: {len(rows)} rows, the raw file gives {len(want_rows)}")
    for row, want in zip(rows, want_rows, strict=False):
        for col, (got, cell) in enumerate(zip(row, want, strict=False)):
            if not cell_matches(got, cell):
                errors.append(f"{where} table {name}: row '{norm(row[0])}', column '{header[col]}': "
                              f"the document has '{norm(got)}', the raw file gives '{norm(str(cell))}'")
        if len(row) != len(want):
            errors.append(f"{where} table {name}: row '{norm(row[0])}' has {len(row)} cells, expected {len(want)}")
    return errors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--print", dest="show", choices=sorted(CHECKS), help="print the table one check builds")
    args = ap.parse_args(argv)
    if args.show:
        header, rows = CHECKS[args.show]()
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            print("| " + " | ".join(str(c) for c in r) + " |")
        return 0
    docs = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "docs" / "results").glob("*.md"))]
    errors, checked, unbacked, unmarked, used = [], [], [], [], set()
    for doc in docs:
        rel = doc.relative_to(ROOT)
        for line, mark, header, rows in tables(doc):
            where = f"{rel}:{line}"
            fields = dict(part.split(":", 1) for part in re.split(r";(?![^()]*\))", mark or "") if ":" in part)
            fields = {k.strip(): v.strip() for k, v in fields.items()}
            if "check" in fields:
                name = fields["check"]
                if name not in CHECKS:
                    errors.append(f"{where}: unknown check '{name}' (known: {', '.join(sorted(CHECKS))})")
                    continue
                raws = [r.strip() for r in fields.get("raw", "").split(",") if r.strip()]
                errors += check_table(where, name, raws, header, rows)
                checked.append(f"{where} {name} ({len(rows)} rows) <- {', '.join(raws)}")
                used.add(name)
            elif "not a result" in (mark or ""):
                continue
            elif fields.get("raw", "").startswith("none"):
                unbacked.append(f"{where} '{norm(header[0])} | {norm(header[1]) if len(header) > 1 else ''}': "
                                f"{fields['raw']}")
            elif "raw" in fields:  # a raw file named but nothing recomputes the table from it
                errors.append(f"{where}: names raw file(s) {fields['raw']} but no `check:` that rebuilds the table")
            else:
                unmarked.append(f"{where} '{' | '.join(norm(h) for h in header[:3])}'")
    print(f"checked against raw files ({len(checked)}):")
    print("\n".join(f"  {c}" for c in checked))
    print(f"results tables with no raw file ({len(unbacked)}):")
    print("\n".join(f"  {u}" for u in unbacked))
    errors += [f"{u}: no mark; add `check: NAME; raw: PATH`, `raw: none (why; re-run: COMMAND)` or "
               f"`not a result`" for u in unmarked]
    for name in sorted(set(CHECKS) - used):
        errors.append(f"check '{name}' is used by no table")
    if errors:
        print(f"\n{len(errors)} mismatch(es):", file=sys.stderr)
        print("\n".join(f"  {e}" for e in errors), file=sys.stderr)
        return 1
    print("every checked table matches its raw file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
