"""`bbl eval`: BLiMP, the BabyLM supplement and dev perplexity for HF causal-LM dirs and logit-mean ensembles.

Writes one JSON per model (all numbers, path, parameters, data hashes), `results.md` (phenomena x models) and
`blimp.png` (the paper's parallel-coordinates figure) into the output dir.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from bbl.blimp import blimp_accuracy, ensemble_logits, load_pairs, score_pairs, task_files
from bbl.data import PreparedData, sha256_file
from bbl.errors import BblError

TASKS = ("blimp", "supplement", "perplexity")


def load_model(model_dir: Path, device: str):
    """(model in eval mode, HF tokenizer, info) for a model dir.

    Raises:
        BblError: not a model dir, or no tokenizer saved with it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bbl.models import count_parameters
    from bbl.tokenizer import tokenizer_fingerprint

    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise BblError(f"{d}: not a model dir (no config.json); pass a dir written by bbl or save_pretrained")
    if not (d / "tokenizer.json").is_file():
        raise BblError(f"{d}: no tokenizer (tokenizer.json) in the model dir; save the tokenizer with the model")
    model = AutoModelForCausalLM.from_pretrained(str(d)).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(d))
    run = json.loads((d / "bbl_run.json").read_text()) if (d / "bbl_run.json").is_file() else {}
    info = {"path": str(d.resolve()), "parameters": count_parameters(model), "architecture": model.config.model_type,
            "tokenizer_fingerprint": tokenizer_fingerprint(d), "ledger": run.get("ledger")}
    return model, tokenizer, info


def dev_perplexity(models, data: PreparedData, *, seq_len: int = 128, dev_windows: int = 8192, seed: int = 0,
                   batch_size: int = 32, device: str = "cpu") -> dict:
    """Mean token CE (nats) and perplexity on the fixed dev subset the trainers evaluate on (same seed rule)."""
    import torch

    from bbl.windows import TokenWindows, window_subset

    stream = data.stream("dev")
    windows = TokenWindows(stream, seq_len, window_subset(len(stream) // seq_len, dev_windows, seed=seed + 1))
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            ids = torch.stack([torch.from_numpy(windows.window(i)) for i in
                               range(start, min(start + batch_size, len(windows)))]).to(device)
            logits = ensemble_logits(models, ids, torch.ones_like(ids))[:, :-1]
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                   reduction="sum")
            total, count = total + float(ce), count + ids[:, 1:].numel()
    mean = total / max(count, 1)
    return {"mean_ce": mean, "perplexity": math.exp(mean), "windows": len(windows), "tokens": count}


def _files_hash(files: list[Path]) -> dict:
    return {f.name: sha256_file(f) for f in files}


def evaluate_models(models, tokenizer, *, tasks, blimp_dir=None, supplement_dir=None, data: PreparedData | None = None,
                    batch_size: int = 64, device: str = "cpu", max_pairs: int | None = None, seq_len: int = 128,
                    dev_windows: int = 8192, seed: int = 0, progress: bool = True) -> dict:
    """Every requested task for one model (or ensemble, a list of several); returns the task results."""
    from tqdm.auto import tqdm

    out: dict = {}
    for task, directory in (("blimp", blimp_dir), ("supplement", supplement_dir)):
        if task not in tasks:
            continue
        files = task_files(directory)
        pairs = {f.stem: load_pairs(f, max_pairs=max_pairs) for f in files}
        bar = tqdm(total=2 * sum(len(r) for r in pairs.values()), unit="sent", desc=task, disable=not progress)
        results = {name: (rows, score_pairs(models, tokenizer, rows, batch_size=batch_size, device=device,
                                            progress=bar)) for name, rows in pairs.items()}
        bar.close()
        if task == "blimp":
            out[task] = blimp_accuracy(results)
        else:
            by_file = {name: float(np.mean(c)) for name, (_, c) in results.items()}
            out[task] = {"by_file": by_file, "overall": float(np.mean(list(by_file.values()))),
                         "pairs": int(sum(len(c) for _, c in results.values()))}
        out[task]["files_sha256"] = _files_hash(files)
        out[task]["max_pairs_per_file"] = max_pairs
    if "perplexity" in tasks:
        if data is None:
            raise BblError("--tasks perplexity needs --data PREPARED_DIR (the dev windows to score)")
        out["perplexity"] = dev_perplexity(models, data, seq_len=seq_len, dev_windows=dev_windows, seed=seed,
                                           batch_size=min(batch_size, 32), device=device)
    return out


def run_eval(model_dirs: list[Path], *, ensembles: list[list[Path]] = (), tasks=TASKS, blimp_dir=None,
             supplement_dir=None, data_dir=None, out: Path, batch_size: int = 64, device: str = "cpu",
             max_pairs: int | None = None, seq_len: int = 128, dev_windows: int = 8192, progress: bool = True,
             log=print) -> list[dict]:
    """Evaluate models and ensembles, write JSON per model, `results.md` and `blimp.png`; returns the results.

    Raises:
        BblError: unknown task, bad task files or model dirs, ensemble members with different tokenizers.
    """
    from bbl.report import write_report

    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise BblError(f"unknown task(s) {', '.join(bad)}; use {', '.join(TASKS)}")
    data = PreparedData(data_dir) if data_dir else None
    for d in [*model_dirs, *[m for e in ensembles for m in e]]:
        _check_model_dir(Path(d), seq_len if "perplexity" in tasks else None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    loaded: dict[str, tuple] = {}

    def get(d):
        key = str(Path(d).resolve())
        if key not in loaded:
            loaded[key] = load_model(d, device)
        return loaded[key]

    jobs = [([d], Path(d).name) for d in model_dirs]
    jobs += [(list(members), "ensemble(" + "+".join(Path(m).name for m in members) + ")") for members in ensembles]
    for members, name in jobs:
        parts = [get(m) for m in members]
        if len({p[2]["tokenizer_fingerprint"] for p in parts}) > 1:
            raise BblError(f"ensemble {name}: members use different tokenizers; ensemble models of one tokenizer")
        log(f"eval {name}")
        r = evaluate_models([p[0] for p in parts], parts[0][1], tasks=tasks, blimp_dir=blimp_dir,
                            supplement_dir=supplement_dir, data=data, batch_size=batch_size, device=device,
                            max_pairs=max_pairs, seq_len=seq_len, dev_windows=dev_windows, progress=progress)
        record = {"model": name, "paths": [p[2]["path"] for p in parts],
                  "parameters": sum(p[2]["parameters"] for p in parts), "ensemble": len(parts) > 1,
                  "tokenizer_fingerprint": parts[0][2]["tokenizer_fingerprint"],
                  "dev_stream_sha256": data.stream_sha256("dev") if data else None, "tasks": r,
                  **budget_of([p[2].get("ledger") for p in parts])}
        (out / f"{_safe(name)}.json").write_text(json.dumps(record, indent=2) + "\n")
        results.append(record)
    write_report(results, out)
    return results


def budget_of(ledgers: list[dict | None]) -> dict:
    """words_seen and words_seen_with_teachers of a model (an ensemble: the sum over its members), None where a
    member has no ledger (not trained by bbl, or before bbl counted words)."""

    def total(key):
        values = [(led or {}).get(key) for led in ledgers]
        return None if any(v is None for v in values) else int(sum(values))

    with_teachers = [(led or {}).get("words_seen_with_teachers", (led or {}).get("words_seen")) for led in ledgers]
    return {"words_seen": total("words_seen"),
            "words_seen_with_teachers": None if any(v is None for v in with_teachers) else int(sum(with_teachers))}


def _check_model_dir(d: Path, seq_len: int | None) -> None:
    """Before anything is written: a model dir with a tokenizer, whose positions hold `seq_len` dev tokens.

    Raises:
        BblError: naming the dir (or --seq-len) and the fix.
    """
    if not (d / "config.json").is_file():
        raise BblError(f"{d}: not a model dir (no config.json); pass a dir written by bbl or save_pretrained")
    if not (d / "tokenizer.json").is_file():
        raise BblError(f"{d}: no tokenizer (tokenizer.json) in the model dir; save the tokenizer with the model")
    config = json.loads((d / "config.json").read_text())
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    if seq_len is not None and positions and seq_len > positions:
        raise BblError(f"--seq-len {seq_len} exceeds the {positions} positions of {d}; use --seq-len <= {positions}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
