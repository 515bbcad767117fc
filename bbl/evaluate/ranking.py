"""Completion ranking as the BabyLM 2025 pipeline scores a causal LM (BLiMP under `--pair-scoring pipeline`, EWoK,
entity tracking, WUG): which sentence of an item gets the highest log-probability on its completion's tokens.

Follows babylm/evaluation-pipeline-2025 `evaluation_pipeline/sentence_zero_shot/dataset.py`
(`process_causal_sentences`, `get_causal_collate_fn`) and `compute_results.py` (`compute_causal_results`,
`rank_and_evaluate`), at temperature 1 (its scripts' default), and `run.py` (`process_results`) for the averages.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from bbl.evaluate.batches import by_length, right_padded
from bbl.evaluate.shared_prefix import common_prefix, shared_prefix_logprobs
from bbl.evaluate.tasks import RankingItem
from bbl.models.build import common_scoring_positions
from bbl.models.ensemble import ensemble_logits


def encode_completions(tokenizer, sentences: list[str], completions: list[str]) -> list[tuple[list[int], list[int]]]:
    """(token ids, phrase mask) of each sentence, as the pipeline's `process_causal_sentences`.

    The sentence is tokenized as the tokenizer does by default (its own special tokens: bbl's tokenizer adds none,
    so no BOS). A token is in the phrase when its character span ends after `len(sentence) - len(completion) +
    offsets[0][0]`. The first token is never scored (it has no context).

    Returns:
        one (ids, mask) per sentence, both lists of int of one length.
    """
    enc = tokenizer(list(sentences), return_offsets_mapping=True)
    out = []
    for sentence, completion, ids, offsets in zip(sentences, completions, enc["input_ids"], enc["offset_mapping"], strict=True):
        if not ids:
            out.append(([], []))
            continue
        start_char = len(sentence) - len(completion) + offsets[0][0]
        out.append((list(ids), [int(end > start_char) for _, end in offsets]))
    return out


def completion_logprobs(models, tokenizer, sentences: list[str], completions: list[str], *, batch_size: int = 64,
                        device: str = "cpu", progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Sum of log p(token | tokens before it) over each sentence's completion tokens, under a model or logit-mean
    ensemble (`bbl.models.ensemble.ensemble_logits`), at temperature 1.

    Batched by length with right padding (the pipeline pads right too, so the scores do not depend on the batch
    beyond float rounding). A sentence longer than the models' positions runs whole on models with rotary
    positions (LLaMA, Qwen: as the pipeline runs them, past the trained length); where a model has a learned
    position table (GPT-2), on which the pipeline would fail, it keeps its last tokens (the completion is at the
    end) and is counted (`bbl.models.build.scoring_positions`).

    Returns:
        (scores (n,) float64 in nats, truncated (n,) bool: the sentences cut to their last tokens).
    """
    import torch

    if not sentences:
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=bool)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    max_len = common_scoring_positions(models)
    encoded = encode_completions(tokenizer, sentences, completions)
    truncated = np.array([max_len is not None and len(ids) > max_len for ids, _ in encoded], dtype=bool)
    if max_len is not None:
        encoded = [(ids[-max_len:], mask[-max_len:]) for ids, mask in encoded]
    scores = np.zeros(len(sentences), dtype=np.float64)
    with torch.inference_mode():
        for batch in by_length([len(ids) for ids, _ in encoded], batch_size):
            idx = [i for i in batch if len(encoded[i][0]) > 1]
            if idx:
                ids, attention = right_padded([encoded[i][0] for i in idx], pad if pad is not None else 0)
                phrase, _ = right_padded([encoded[i][1] for i in idx], 0, torch.float32)
                ids, attention, phrase = ids.to(device), attention.to(device), phrase.to(device)
                logits = ensemble_logits(models, ids[:, :-1], attention[:, :-1], vocab_size=len(tokenizer))
                logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                scores[idx] = (logp * phrase[:, 1:]).sum(-1).double().cpu().numpy()
            if progress is not None:
                progress.update(len(batch))
    return scores, truncated


def rank_items(models, tokenizer, items: list[RankingItem], *, share_prefix: bool = False,
               **kw) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Score every sentence of every item and pick each item's best.

    Args:
        items: the task's items; each may have any number of sentences.
        share_prefix: run the token prefix an item's sentences share once and reuse its cache for each
            sentence (`bbl.evaluate.shared_prefix`; entity tracking); the same sums up to float rounding. Items
            with no shared token, a one-token sentence or a sentence longer than a learned position table take the
            plain path.
        kw: `completion_logprobs`'s batch_size, device, progress.
    Returns:
        (per-item scores, a list of (k_i,) float64 arrays in nats; chosen (n,) int64, the index of the highest
        score, the first on a tie as the pipeline's `torch.max`; truncated (n,) bool, the items of which a sentence
        was cut to its last tokens, `completion_logprobs`).
    """
    per_item: list[np.ndarray | None] = [None] * len(items)
    plain = list(range(len(items)))
    if share_prefix:
        max_len = common_scoring_positions(models) or float("inf")
        encoded = [encode_completions(tokenizer, list(it.sentences), list(it.completions)) for it in items]
        shared = [i for i, enc in enumerate(encoded)
                  if all(1 < len(ids) <= max_len for ids, _ in enc) and common_prefix([ids for ids, _ in enc]) > 0]
        scores = shared_prefix_logprobs(models, tokenizer, [encoded[i] for i in shared], **kw)
        for i, s in zip(shared, scores, strict=True):
            per_item[i] = s
        plain = sorted(set(plain) - set(shared))
    sentences = [s for i in plain for s in items[i].sentences]
    completions = [c for i in plain for c in items[i].completions]
    flat, cut = completion_logprobs(models, tokenizer, sentences, completions, **kw)
    bounds = np.cumsum([0] + [len(items[i].sentences) for i in plain])
    truncated = np.zeros(len(items), dtype=bool)  # a shared-prefix item fits the positions by its selection
    for i, a, b in zip(plain, bounds[:-1], bounds[1:], strict=True):
        per_item[i], truncated[i] = flat[a:b], cut[a:b].any()
    chosen = np.array([int(np.argmax(s)) for s in per_item], dtype=np.int64)
    return per_item, chosen, truncated


def accuracy_by_metadata(items: list[RankingItem], correct: np.ndarray) -> dict[str, dict[str, float]]:
    """{metadata key: {value: accuracy}} pooled over items, as the pipeline's `process_results` (which prints
    percent; these are fractions in [0, 1])."""
    total: dict[str, Counter] = {}
    right: dict[str, Counter] = {}
    for item, ok in zip(items, correct, strict=True):
        for key, value in item.metadata.items():
            total.setdefault(key, Counter())[value] += 1
            right.setdefault(key, Counter())[value] += int(ok)
    return {key: {v: right[key][v] / n for v, n in sorted(counts.items())} for key, counts in total.items()}


def entity_tracking_average(by_uid: dict[str, float]) -> tuple[dict[str, float], float]:
    """(accuracy of each split, mean over splits) as the pipeline's `process_results` for entity_tracking: a split's
    accuracy is the mean over its `<split>_<n>_ops` subsets; splits without subsets are skipped.

    Raises:
        ValueError: no subset belongs to a known split.
    """
    splits = {}
    for split in ("regular", "ambiref", "move_contents"):
        keys = [k for k in by_uid if k.startswith(split)]
        if keys:
            splits[split] = float(np.mean([by_uid[k] for k in keys]))
    if not splits:
        raise ValueError(f"no entity-tracking split among {sorted(by_uid)}")
    return splits, float(np.mean(list(splits.values())))
