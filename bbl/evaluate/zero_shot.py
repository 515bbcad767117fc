"""Zero-shot minimal-pair scoring (BLiMP and the BabyLM supplement) for causal LMs and their logit-mean ensembles.

Convention (as lm-evaluation-harness scores `loglikelihood("", sentence)` for a causal LM): each sentence is
tokenized without special tokens (our byte-level BPE adds its prefix space), the tokenizer's BOS token `<s>` is
the context of the first token, and the sentence's score is the sum over all its tokens of log p(token | BOS and
the tokens before it), in nats. A pair is correct when score(good) > score(bad) (a tie counts as wrong).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bbl.errors import BblError
from bbl.evaluate.batches import by_length, right_padded
from bbl.io import read_jsonl
from bbl.models.build import max_positions
from bbl.models.ensemble import ensemble_logits

REQUIRED = ("sentence_good", "sentence_bad")


def load_pairs(path: Path, *, max_pairs: int | None = None) -> list[dict]:
    """Rows of a minimal-pair JSONL file (first `max_pairs` if given).

    Raises:
        BblError: a malformed line (names file:line) or a row without sentence_good / sentence_bad.
    """
    rows = []
    for lineno, row in read_jsonl(path):
        missing = [k for k in REQUIRED if not isinstance(row.get(k), str)]
        if missing:
            raise BblError(f"{path}:{lineno}: missing field {missing[0]!r}; every row needs {', '.join(REQUIRED)}")
        rows.append(row)
        if max_pairs is not None and len(rows) >= max_pairs:
            break
    if not rows:
        raise BblError(f"{path}: no pairs; the file is empty")
    return rows


def task_files(directory: Path) -> list[Path]:
    """Sorted `*.jsonl` files of a task dir.

    Raises:
        BblError: the dir is missing or holds no `*.jsonl`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise BblError(f"{directory}: task directory not found; pass --blimp-dir / --supplement-dir")
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise BblError(f"{directory}: no *.jsonl files; pass the dir of the filtered task files")
    return files


def sentence_logprobs(models, tokenizer, sentences: list[str], *, batch_size: int = 64, device: str = "cpu",
                      progress=None) -> np.ndarray:
    """Total log-probability (nats, float64) of each sentence under a model or logit-mean ensemble.

    Batched by length (longest first) for speed; results come back in input order and do not depend on the
    batch composition beyond float rounding. Sentences longer than the models' positions are truncated.
    """
    import torch

    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    max_len = min(max_positions(m) for m in models)
    encoded = [[bos, *tokenizer(s, add_special_tokens=False)["input_ids"]][:max_len] for s in sentences]
    scores = np.zeros(len(sentences), dtype=np.float64)
    with torch.inference_mode():
        for idx in by_length([len(e) for e in encoded], batch_size):
            ids, mask = right_padded([encoded[i] for i in idx], pad)
            ids, mask = ids.to(device), mask.to(device)
            logp = torch.log_softmax(ensemble_logits(models, ids, mask, vocab_size=len(tokenizer))[:, :-1], dim=-1)
            tok = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
            scores[idx] = tok.sum(-1).double().cpu().numpy()
            if progress is not None:
                progress.update(len(idx))
    return scores


def score_pairs(models, tokenizer, rows: list[dict], **kw) -> np.ndarray:
    """(n,) bool: is each pair's good sentence more probable than its bad one."""
    sentences = [r["sentence_good"] for r in rows] + [r["sentence_bad"] for r in rows]
    s = sentence_logprobs(models, tokenizer, sentences, **kw)
    return s[:len(rows)] > s[len(rows):]


def blimp_accuracy(results: dict[str, tuple[list[dict], np.ndarray]]) -> dict:
    """Aggregate per-paradigm correctness into paradigm, phenomenon and overall accuracies.

    Args:
        results: {paradigm file stem: (rows, correct bool array)}.
    Returns:
        {"by_paradigm": {UID: acc}, "by_phenomenon": {linguistics_term: mean of its paradigms' accs},
         "overall": mean over paradigms, "pairs": total pairs}.
    """
    by_paradigm, phen = {}, {}
    for name, (rows, correct) in results.items():
        uid = rows[0].get("UID", name)
        by_paradigm[uid] = float(np.mean(correct))
        phen.setdefault(rows[0].get("linguistics_term", uid), []).append(by_paradigm[uid])
    return {"by_paradigm": by_paradigm, "by_phenomenon": {k: float(np.mean(v)) for k, v in sorted(phen.items())},
            "overall": float(np.mean(list(by_paradigm.values()))),
            "pairs": int(sum(len(c) for _, c in results.values()))}
