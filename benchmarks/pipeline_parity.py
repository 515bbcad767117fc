"""Parity with the BabyLM 2025 evaluation pipeline, by running its own code (issue 23).

`scores`: the pipeline's `sentence_zero_shot.run` and `reading.run` (causal backend, temperature 1, as its
eval_zero_shot*.sh run them) and `bbl eval --pair-scoring pipeline` on the same model and the same first --items
rows of each data file; every predictions.json compared item by item (ids and chosen completions equal, WUG
probabilities and reading surprisals within --rtol). EWoK rows are read from the organisers' zip and written only
to a temporary dir that is deleted on exit (its terms forbid plain-text copies).

`--python` runs the pipeline's code under another interpreter: the venv of the pipeline's own pinned requirements
(transformers 4.51.3; `benchmarks/pipeline_env.py` builds it), where a bbl model dir must load and score the same.

`tokens`: each model dir's tokenizer loaded as the pipeline loads it (`AutoProcessor`, padding right) under bbl's
interpreter and under `--python`, on hand-made edge cases and every text field of the first --items rows of every
task file (and the reading items and words): ids with and without specials, offsets, special-token ids, compared.

`collate`: the pipeline's own `collate_preds` loaders and size checks (`_load_results`, `_check_size`) on every
predictions.json a bbl output tree holds (`bbl eval --out OUT` and `bbl finetune --out OUT` write
OUT/pipeline/<model>/main/...), full or fast sizes by the dataset folder's name.

Usage (a checkout of github.com/babylm/evaluation-pipeline-2025 and an environment with its requirements
(pandas, statsmodels, datasets, scipy) beside bbl's):
    python benchmarks/pipeline_parity.py scores MODEL_DIR --pipeline PATH [--items 20] [--data ../shared/data]
        [--python "$(python benchmarks/pipeline_env.py | tail -1)"]
    python benchmarks/pipeline_parity.py tokens MODEL_DIR... --python PATH [--items 20] [--data ../shared/data]
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


def official(pipeline: Path, model: Path, paths: dict[str, Path], out: Path, python: str = sys.executable) -> Path:
    # only the pipeline on the path: another interpreter must not see bbl's checkout (or its PYTHONPATH)
    env = {**os.environ, "PYTHONPATH": str(pipeline)}
    for dataset, (task, _, _) in JSONL_TASKS.items():
        run([python, "-m", "evaluation_pipeline.sentence_zero_shot.run", "--model_path_or_name", str(model),
             "--backend", "causal", "--task", task, "--data_path", str(paths[dataset]), "--save_predictions",
             "--output_dir", str(out)], cwd=pipeline, env=env)
    run([python, "-m", "evaluation_pipeline.reading.run", "--model_path_or_name", str(model), "--backend",
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
        theirs = official(args.pipeline.resolve(), args.model.resolve(), paths, tmp / "official", args.python)
        ours = bbl(args.model.resolve(), paths, tmp / "bbl")
        for dataset, (task, _, _) in {**JSONL_TASKS, "reading": ("reading", "", "")}.items():
            rel = Path(task) / dataset if task != "reading" else Path("reading")
            n, same, worst, bad = compare(json.loads((ours / rel / "predictions.json").read_text()),
                                          json.loads((theirs / rel / "predictions.json").read_text()), args.rtol,
                                          show=task != "ewok")
            failed |= bool(bad) or same != n or n == 0
            rows.append(f"| {dataset} | {n} | {same} | {worst:.1e} | {'; '.join(bad) or ''} |")
    print(f"model {args.model}, first {args.items} rows per file (reading: {args.items * 10} rows); the pipeline "
          f"under {args.python}\n")
    print("| dataset | items | equal | largest relative difference | disagreements |\n|---|---:|---:|---:|---|")
    print("\n".join(rows))
    return int(failed)


EDGE_CASES = ["The cat sat.", " the dog", "  two spaces", "Hello world", "", "x", "\u00e9t\u00e9 na\u00efve caf\u00e9",
              "line one\nline two", "tabs\tand  gaps ", "<s> a literal special </s>", "Who is it? -- 'quoted' \"too\"",
              "1,234.5 and 42%", "\uff21\uff22 fullwidth (NFKC)", "emoji \U0001f600 end"]
"""Texts where tokenizers differ most: a leading space or none, the empty string, accents, newlines, specials
written as text, Unicode that NFKC changes, bytes outside the BMP."""


def task_texts(data: Path, items: int) -> list[str]:
    """Every string field of the first `items` rows of every task file (EWoK read in memory), then the reading
    items and words of the first 10 x `items` rows; `items` 0: all rows."""
    import csv

    from bbl.evaluate.tasks import jsonl_sources

    texts = []
    for task, folder, _ in JSONL_TASKS.values():
        password = EWOK_PASSWORD if task == "ewok" else None
        for _, lines in jsonl_sources(data / folder, option="--data", password=password):
            rows = [json.loads(line) for line in lines if line.strip()]
            for row in rows[:items or None]:
                texts += [v for v in row.values() if isinstance(v, str)]
    with open(data / "reading" / "reading_data.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:items * 10 or None]
    texts += [row[k] for row in rows for k in ("item", "word", "prev_item", "prev_word") if row.get(k)]
    return list(dict.fromkeys(texts))


def tokenize_here(dirs: list[str], texts: list[str]) -> dict:
    """What this interpreter's transformers makes of each dir's tokenizer, loaded as the pipeline loads it."""
    import transformers
    from transformers import AutoProcessor

    out = {"transformers": transformers.__version__}
    for d in dirs:
        try:
            processor = AutoProcessor.from_pretrained(d, padding_side="right", trust_remote_code=True)
        except Exception as e:  # the point of the check: report the failure, do not crash
            out[d] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
            continue
        tok = getattr(processor, "tokenizer", processor)
        out[d] = {"specials": {name: getattr(tok, f"{name}_token_id", None)
                               for name in ("bos", "eos", "pad", "unk", "mask", "cls", "sep")},
                  "padding_side": tok.padding_side,
                  "texts": [[enc["input_ids"], [list(o) for o in enc["offset_mapping"]],
                             tok(t, add_special_tokens=False)["input_ids"]]
                            for t in texts for enc in [processor(text=t, return_offsets_mapping=True)]]}
    return out


def tokens(args) -> int:
    """Tokenization of `args.models` under bbl's interpreter and under `args.python`, compared text by text."""
    texts = EDGE_CASES + task_texts(args.data, args.items)
    dirs = [str(m.resolve()) for m in args.models]
    sides = []
    for python in (sys.executable, args.python):
        done = subprocess.run([python, __file__, "tokens-child"], input=json.dumps({"dirs": dirs, "texts": texts}),
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
        if done.returncode:
            sys.exit(f"failed ({done.returncode}) under {python}:\n{done.stderr[-3000:]}")
        sides.append(json.loads(done.stdout.splitlines()[-1]))
    ours, theirs = sides
    failed = False
    rows = []
    for d in dirs:
        a, b = ours[d], theirs[d]
        if "error" in a or "error" in b:
            rows.append(f"| {d} | {len(texts)} | 0 | {a.get('error', '')} / {b.get('error', '')} |")
            failed = True
            continue
        same = sum(x == y for x, y in zip(a["texts"], b["texts"], strict=True))
        bad = [f"{texts[i][:40]!r}: {x[0][:8]} vs {y[0][:8]}" for i, (x, y) in enumerate(zip(a["texts"], b["texts"],
                                                                                           strict=True)) if x != y][:3]
        if a["specials"] != b["specials"] or a["padding_side"] != b["padding_side"]:
            bad.insert(0, f"specials {a['specials']} vs {b['specials']}")
        failed |= bool(bad)
        rows.append(f"| {d} | {len(texts)} | {same} | {'; '.join(bad)} |")
    print(f"transformers {ours['transformers']} ({sys.executable}) vs {theirs['transformers']} ({args.python}); "
          f"{len(EDGE_CASES)} edge cases + the first {args.items or 'all'} rows of every task file\n")
    print("| model dir | texts | identical | differences |\n|---|---:|---:|---|\n" + "\n".join(rows))
    return int(failed)


def tokens_child() -> None:
    """`tokens-child`: read {dirs, texts} from stdin, print `tokenize_here` as one JSON line (no bbl import)."""
    request = json.loads(sys.stdin.read())
    print(json.dumps(tokenize_here(request["dirs"], request["texts"])))


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
    s.add_argument("--python", default=sys.executable,
                   help="interpreter that runs the pipeline's code (default: this one); e.g. the pipeline env's")
    t = sub.add_parser("tokens")
    t.add_argument("models", type=Path, nargs="+")
    t.add_argument("--python", required=True, help="the other interpreter, e.g. the pipeline env's")
    t.add_argument("--data", type=Path, default=Path("../shared/data"))
    t.add_argument("--items", type=int, default=20, help="rows per task file (0: all)")
    sub.add_parser("tokens-child")
    c = sub.add_parser("collate")
    c.add_argument("results", type=Path, help="OUT/pipeline/<model>/main of bbl eval / bbl finetune")
    c.add_argument("--pipeline", type=Path, required=True)
    args = ap.parse_args()
    if args.command == "tokens-child":
        return tokens_child()
    sys.exit({"scores": scores, "tokens": tokens, "collate": collate}[args.command](args))


if __name__ == "__main__":
    main()
