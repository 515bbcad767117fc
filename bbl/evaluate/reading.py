"""Reading (de Varda et al. 2023) as the BabyLM 2025 pipeline scores a causal LM: each word's surprisal given its
context, then how much it adds to linear regressions of eye-tracking and self-paced reading times.

Surprisal follows babylm/evaluation-pipeline-2025 `evaluation_pipeline/reading/evaluation_functions.py` (`get_p2`,
`get_p`); the scores follow `evaluation_pipeline/collate_preds.py` (`_calculate_reading_results`, the leaderboard's
numbers; `reading/run.py`'s report prints the same times 100).
"""

from __future__ import annotations

import math

import numpy as np

from bbl.evaluate.batches import by_length, right_padded
from bbl.models.build import common_scoring_positions
from bbl.models.ensemble import ensemble_logits

EYE_TRACKING = ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound")
BASE = ("Subtlex_log10", "length", "context_length")
SPILLOVER = ("Subtlex_log10", "length", "context_length", "prev_length", "prev_pred")


def surprisal_queries(tokenizer, context: str, word: str) -> list[tuple[str, int]]:
    """The (context text, target id) pairs whose probabilities multiply to p(word | context), as `get_p2`: the
    word's first token after the context; then each further token, decoded to text, appended to the context, and
    re-encoded alone (its first id is the target: the pipeline's way, kept even where a prefix-space tokenizer
    encodes a word-inner piece differently alone)."""
    target = tokenizer(word, add_special_tokens=False)["input_ids"]
    queries = [(context, target[0])]
    sentence = context + tokenizer.decode(target[0])
    for token in target[1:]:
        piece = tokenizer.decode(token)
        queries.append((sentence, tokenizer(piece, add_special_tokens=False)["input_ids"][0]))
        sentence = sentence + piece
    return queries


def word_surprisals(models, tokenizer, contexts: list[str | None], words: list[str | None], *, batch_size: int = 64,
                    device: str = "cpu", progress=None) -> tuple[np.ndarray, np.ndarray]:
    """-log p(word | context) in nats for each row (NaN where the context is None), under a model or logit-mean
    ensemble. The context is encoded with the tokenizer's default special tokens (bbl's add none) and the
    probability read at its last position, as `get_p`; a multi-token word multiplies its tokens' probabilities
    (`surprisal_queries`). Computed as a sum of log-softmax values, equal to the pipeline's -log(prod p) up to
    float rounding.

    A context longer than a learned position table (GPT-2; rotary models run whole, as the pipeline runs them)
    keeps its last tokens, where the pipeline would fail.

    Returns:
        (surprisal (n,) float64, truncated (n,) bool: the rows whose context was cut to its last tokens).
    """
    import torch

    rows, queries = [], []
    for r, (context, word) in enumerate(zip(contexts, words, strict=True)):
        if context is None:
            continue
        for q in surprisal_queries(tokenizer, context, word):
            rows.append(r)
            queries.append(q)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    max_len = common_scoring_positions(models)  # None: rotary positions run whole, as the pipeline runs them
    encoded = tokenizer([c for c, _ in queries])["input_ids"]
    truncated = np.zeros(len(contexts), dtype=bool)
    if max_len is not None:
        truncated[[r for r, ids in zip(rows, encoded, strict=True) if len(ids) > max_len]] = True
        encoded = [ids[-max_len:] for ids in encoded]
    logp = np.zeros(len(queries), dtype=np.float64)
    with torch.inference_mode():
        for idx in by_length([len(e) for e in encoded], batch_size):
            ids, attention = right_padded([encoded[i] for i in idx], pad)
            logits = ensemble_logits(models, ids.to(device), attention.to(device), vocab_size=len(tokenizer))
            last = torch.tensor([len(encoded[i]) - 1 for i in idx], device=logits.device)
            at_last = torch.log_softmax(logits[torch.arange(len(idx), device=logits.device), last], dim=-1)
            targets = torch.tensor([queries[i][1] for i in idx], device=logits.device)
            logp[idx] = at_last.gather(-1, targets.unsqueeze(-1)).squeeze(-1).double().cpu().numpy()
            if progress is not None:
                progress.update(len(idx))
    out = np.full(len(contexts), math.nan)
    for r in set(rows):
        out[r] = 0.0
    np.add.at(out, rows, -logp)
    return out, truncated


def ols_r2(y: np.ndarray, columns: list[np.ndarray]) -> float:
    """R² of an ordinary least-squares fit of y on an intercept and `columns` (statsmodels' `rsquared` for a model
    with a constant: 1 - RSS / centred TSS).

    Args:
        y: (n,) float64 response; columns: each (n,) float64, already free of NaN.
    """
    x = np.column_stack([np.ones(len(y)), *columns])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    centred = y - y.mean()
    return float(1.0 - (resid @ resid) / (centred @ centred))


def _design(data: dict[str, np.ndarray], predictors: tuple[str, ...], with_pred: bool):
    """The formula `dv ~ a + b + ... + a:b + ... (+ pred)` as columns: main effects, then every pairwise product
    (the pipeline's formulas list all pairs of their predictors)."""
    cols = [data[p] for p in predictors]
    cols += [data[a] * data[b] for i, a in enumerate(predictors) for b in predictors[i + 1:]]
    return cols + ([data["pred"]] if with_pred else [])


def gain(data: dict[str, np.ndarray], dv: str, predictors: tuple[str, ...]) -> dict:
    """R² of `dv` on the baseline predictors and on them plus `pred`, each fitted on its rows without NaN, and the
    gain (R²_model - R²_base) / (1 - R²_base): the share of the unexplained variance surprisal explains."""
    fits = {}
    for name, with_pred in (("base", False), ("model", True)):
        used = (dv, *predictors, *(("pred",) if with_pred else ()))
        keep = np.all([~np.isnan(data[c]) for c in used], axis=0)
        sub = {c: data[c][keep] for c in used}
        fits[name] = ols_r2(sub[dv], _design(sub, predictors, with_pred))
    return {"r2_base": fits["base"], "r2_model": fits["model"],
            "gain": (fits["model"] - fits["base"]) / (1 - fits["base"])}


def reading_scores(columns: dict[str, list], pred: np.ndarray, prev_pred: np.ndarray) -> dict:
    """The pipeline's two reading scores from the surprisals.

    Args:
        columns: `bbl.evaluate.tasks.read_reading`'s columns.
        pred, prev_pred: (n,) float64 surprisal (nats) of each word and of the word before it (NaN: none).
    Returns:
        {"eye_tracking": mean gain over RTfirstfix, RTfirstpass, RTgopast, RTrightbound with the baseline
        Subtlex_log10, length, context_length and their pairwise products; "self_paced_reading": the gain on
        self_paced_reading_time with the spill-over baseline (those plus prev_length and prev_pred, all pairwise
        products); "by_variable": each dv's r2_base, r2_model, gain}. Gains are fractions (the pipeline's report
        prints them times 100).
    """
    data = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()
            if k in (*EYE_TRACKING, *SPILLOVER, "self_paced_reading_time")}
    data["pred"], data["prev_pred"] = np.asarray(pred, np.float64), np.asarray(prev_pred, np.float64)
    by_var = {dv: gain(data, dv, BASE) for dv in EYE_TRACKING}
    by_var["self_paced_reading_time"] = gain(data, "self_paced_reading_time", SPILLOVER)
    return {"eye_tracking": float(np.mean([by_var[dv]["gain"] for dv in EYE_TRACKING])),
            "self_paced_reading": by_var["self_paced_reading_time"]["gain"], "by_variable": by_var}
