"""Parity with the BabyLM 2025 evaluation pipeline, by running its own code (issue 23).

`scores`: the pipeline's `sentence_zero_shot.run` and `reading.run` (causal backend, temperature 1, as its
eval_zero_shot*.sh run them) and `bbl eval --pair-scoring pipeline` on the same model and the same first --items
rows of each data file; every predictions.json compared item by item (ids and chosen completions equal, WUG
probabilities and reading surprisals within --rtol). EWoK rows are read from the organisers' zip and written only
to a temporary dir that is deleted on exit (its terms forbid plain-text copies).

`collate`: the pipeline's own `collate_preds` loaders and size checks (`_load_results`, `_check_size`) on every
predictions.json a bbl output tree holds (`bbl eval --out OUT` and `bbl finetune --out OUT` write
OUT/pipeline/<model>/main/...), full or fast sizes by the dataset folder's name.

Usage (a checkout of github.com/babylm/evaluation-pipeline-2025 and an environment with its requirements
(pandas, statsmodels, datasets, scipy) beside bbl's):
    python benchmarks/pipeline_parity.py scores MODEL_DIR --pipeline PATH [--items 20] [--data ../shared/data]
    python benchmarks/pipeline_parity.py collate OUT/pipeline/<model>/main --pipeline PATH
Exits 1 when anything disagrees or fails the pipeline's checks; prints a markdown table either way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# task: (the pipeline's --task, data folder under --data, bbl's --tasks name)
JSONL_TASKS = {"blimp_fast": ("blimp", "blimp_fast", "blimp"),
               "supplement_fast": ("blimp", "supplement_fast", "supplement"),
               "ewok_fast": ("ewok", "ewok_fast", "ewok"),
               "entity_tracking": ("entity_tracking", "entity_tracking", "entity_tracking"),
               "wug_adj_nominalization": ("wug_adj", "wug_adj_nominalization", "wug_adj")}
EWOK_PASSWORD = b"BabyLM2025"


def subset(data: Path, out: Path, items: int) -> dict[str, Path]:
    """The first `items` rows of every task file (and of the reading CSV) under `out`; {dataset: path}."""
    from bbl.evaluate.tasks import jsonl_sources

    paths = {}
    for dataset, (task, folder, _) in JSONL_TASKS.items():
        src = data / folder
        password = EWOK_PASSWORD if task == "ewok" else None
        dst = out / dataset
        dst.mkdir(parents=True)
        for stem, lines in jsonl_sources(src, option="--data", password=password):
            rows = [line for line in lines if line.strip()][:items]
            (dst / f"{stem}.jsonl").write_text("".join(r.rstrip("\n") + "\n" for r in rows))
        paths[dataset] = dst
    lines = (data / "reading" / "reading_data.csv").read_text().splitlines(keepends=True)
    (out / "reading").mkdir()
    paths["reading"] = out / "reading" / "reading_data.csv"
    paths["reading"].write_text("".join(lines[:items * 10 + 1]))
    return paths


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")


def official(pipeline: Path, model: Path, paths: dict[str, Path], out: Path) -> Path:
    env = {**os.environ, "PYTHONPATH": f"{pipeline}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for dataset, (task, _, _) in JSONL_TASKS.items():
        run([sys.executable, "-m", "evaluation_pipeline.sentence_zero_shot.run", "--model_path_or_name", str(model),
             "--backend", "causal", "--task", task, "--data_path", str(paths[dataset]), "--save_predictions",
             "--output_dir", str(out)], cwd=pipeline, env=env)
    run([sys.executable, "-m", "evaluation_pipeline.reading.run", "--model_path_or_name", str(model), "--backend",
         "causal", "--data_path", str(paths["reading"]), "--output_dir", str(out)], cwd=pipeline, env=env)
    return out / model.stem / "main" / "zero_shot" / "causal"


def bbl(model: Path, paths: dict[str, Path], out: Path) -> Path:
    tasks = [t for _, _, t in JSONL_TASKS.values()] + ["reading"]
    data = {t: paths[d] for d, (_, _, t) in JSONL_TASKS.items()}
    run([sys.executable, "-m", "bbl", "eval", str(model), "--tasks", ",".join(tasks), "--pair-scoring", "pipeline",
         "--blimp-dir", str(data.pop("blimp")), "--supplement-dir", str(data.pop("supplement")),
         *[a for t, p in data.items() for a in ("--task-data", f"{t}={p}")], "--task-data",
         f"reading={paths['reading']}", "--device", "cpu", "--out", str(out)])
    return out / "pipeline" / model.stem / "main" / "zero_shot" / "causal"


def compare(ours: dict, theirs: dict, rtol: float, *, show: bool = True) -> tuple[int, int, float, list[str]]:
    """(items, equal items, largest relative difference of numbers, first disagreements; only their ids when not
    `show`: EWoK's text may not be copied)."""
    n = same = 0
    worst, bad = 0.0, []
    if set(ours) != set(theirs):
        return 0, 0, math.inf, [f"keys differ: {sorted(set(ours) ^ set(theirs))[:5]}"]
    for key in theirs:
        a, b = ours[key]["predictions"], theirs[key]["predictions"]
        if len(a) != len(b):
            bad.append(f"{key}: {len(a)} predictions vs {len(b)}")
            continue
        for x, y in zip(a, b, strict=True):
            n += 1
            ok = x.keys() == y.keys() and x["id"] == y["id"]
            for field in set(x) & set(y) - {"id"}:
                u, v = x[field], y[field]
                if isinstance(v, float) or isinstance(u, float):
                    if (u is None or v is None or math.isnan(u) or math.isnan(v)):
                        ok &= (u is None or math.isnan(u)) == (v is None or math.isnan(v))
                    else:
                        rel = abs(u - v) / max(abs(v), 1e-12)
                        worst = max(worst, rel)
                        ok &= rel <= rtol
                else:
                    ok &= u == v
            same += ok
            if not ok and len(bad) < 5:
                bad.append(f"{key}: ours {x} vs theirs {y}" if show else f"{key}: {y.get('id')} differs")
    return n, same, worst, bad


def scores(args) -> int:
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="bbl-parity-") as tmp:
        tmp = Path(tmp)
        paths = subset(args.data, tmp / "data", args.items)
        theirs = official(args.pipeline.resolve(), args.model.resolve(), paths, tmp / "official")
        ours = bbl(args.model.resolve(), paths, tmp / "bbl")
        for dataset, (task, _, _) in {**JSONL_TASKS, "reading": ("reading", "", "")}.items():
            rel = Path(task) / dataset if task != "reading" else Path("reading")
            n, same, worst, bad = compare(json.loads((ours / rel / "predictions.json").read_text()),
                                          json.loads((theirs / rel / "predictions.json").read_text()), args.rtol,
                                          show=task != "ewok")
            failed |= bool(bad) or same != n or n == 0
            rows.append(f"| {dataset} | {n} | {same} | {worst:.1e} | {'; '.join(bad) or ''} |")
    print(f"model {args.model}, first {args.items} rows per file (reading: {args.items * 10} rows)\n")
    print("| dataset | items | equal | largest relative difference | disagreements |\n|---|---:|---:|---:|---|")
    print("\n".join(rows))
    return int(failed)


def collate(args) -> int:
    sys.path.insert(0, str(args.pipeline.resolve()))
    from evaluation_pipeline import collate_preds as cp

    root = args.results
    found = {"zero_shot/causal/blimp/blimp_filtered": ("blimp", False),
             "zero_shot/causal/blimp/blimp_fast": ("blimp", True),
             "zero_shot/causal/blimp/supplement_filtered": ("blimp_supplement", False),
             "zero_shot/causal/blimp/supplement_fast": ("blimp_supplement", True),
             "zero_shot/causal/ewok/ewok_filtered": ("ewok", False), "zero_shot/causal/ewok/ewok_fast": ("ewok", True),
             "zero_shot/causal/entity_tracking/entity_tracking": ("entity_tracking", False),
             "zero_shot/causal/wug_adj/wug_adj_nominalization": ("wug_adj", False),
             "zero_shot/causal/reading": ("reading", False),
             **{f"finetune/{t}": (t, False) for t in ("boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc")}}
    rows, failed = [], False
    for rel, (task, fast) in found.items():
        file = root / rel / "predictions.json"
        if not file.is_file():
            continue
        ok = cp._check_size(task, cp._load_results(file), fast)
        failed |= not ok
        rows.append(f"| {rel} | {task} ({'fast' if fast else 'full'} sizes) | {'accepted' if ok else 'REJECTED'} |")
    print(f"{root}: the pipeline's collate_preds `_load_results` + `_check_size`\n")
    print("| predictions | checked as | result |\n|---|---|---|")
    print("\n".join(rows) or "| (no predictions.json found) | | |")
    return int(failed or not rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scores")
    s.add_argument("model", type=Path)
    s.add_argument("--pipeline", type=Path, required=True, help="checkout of babylm/evaluation-pipeline-2025")
    s.add_argument("--data", type=Path, default=Path("../shared/data"))
    s.add_argument("--items", type=int, default=20, help="rows per data file (reading: 10x as many rows)")
    s.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance on probabilities, surprisals")
    c = sub.add_parser("collate")
    c.add_argument("results", type=Path, help="OUT/pipeline/<model>/main of bbl eval / bbl finetune")
    c.add_argument("--pipeline", type=Path, required=True)
    args = ap.parse_args()
    sys.exit(scores(args) if args.command == "scores" else collate(args))


if __name__ == "__main__":
    main()
