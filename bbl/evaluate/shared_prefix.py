"""Completion scores for items whose sentences share a long prefix (entity tracking: a ~100-200 token box
description, then 5 short options), with the prefix run once per item and its key/value cache reused for every
option.

The same sums as `bbl.evaluate.ranking.completion_logprobs` (every token after the first predicted from all the
tokens before it, summed over the completion's tokens), so the same predictions up to float rounding; the prefix
is the longest run of token ids the item's sentences have in common (token ids, not characters, so a BPE merge
across the prefix/option boundary never changes what is scored). Cost: one prefix forward per item instead of one
per option (entity tracking: ~5x fewer token forwards). Uses transformers' `DynamicCache.batch_select_indices` to
give each option its item's cache (transformers >= 4.46).
"""

from __future__ import annotations

import numpy as np


def common_prefix(rows: list[list[int]]) -> int:
    """Length of the longest prefix all `rows` share, cut so every row keeps at least one token after it."""
    shortest = min(len(r) for r in rows)
    n = 0
    while n < shortest - 1 and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def _batches(prefix: list[int], sizes: list[int], batch_size: int):
    """Index arrays of items with the same prefix length, at most `batch_size` sentences each (at least one
    item)."""
    order = np.argsort(prefix, kind="stable")
    batch, count = [], 0
    for i in order:
        if batch and (prefix[i] != prefix[batch[0]] or count + sizes[i] > batch_size):
            yield batch
            batch, count = [], 0
        batch.append(int(i))
        count += sizes[i]
    if batch:
        yield batch


def _cache_argument(model) -> str:
    """The forward argument that takes a key/value cache: `cache` (transformers >= 5.2x), else `past_key_values`."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _forward(models, input_ids, vocab_size, caches=None):
    """(logit-mean logits (B, S, V) float32, each model's cache) of `models` on `input_ids`, continuing `caches`."""
    from bbl.models.ensemble import logit_mean

    outs = [m(input_ids=input_ids, use_cache=True, **({} if caches is None else {_cache_argument(m): caches[k]}))
            for k, m in enumerate(models)]
    return (logit_mean([o.logits[..., :vocab_size] for o in outs]),
            [o.cache if hasattr(o, "cache") else o.past_key_values for o in outs])


def shared_prefix_logprobs(models, tokenizer, encoded: list[list[tuple[list[int], list[int]]]], *,
                           batch_size: int = 64, device: str = "cpu", progress=None) -> list[np.ndarray]:
    """Each item's completion log-probabilities, its shared prefix run once.

    Args:
        encoded: per item, each sentence's (token ids, phrase mask) as `ranking.encode_completions` gives them;
            every sentence at least 2 tokens, none longer than the models' positions, and the item's
            `common_prefix` at least 1 (the caller sends other items down the plain path).
        batch_size: sentences per suffix forward (items of equal prefix length are grouped).
    Returns:
        per item, a (k,) float64 array of summed log-probabilities in nats, at temperature 1.
    """
    import torch

    from bbl.evaluate.batches import right_padded

    vocab = len(tokenizer)
    prefix = [common_prefix([ids for ids, _ in item]) for item in encoded]
    sizes = [len(item) for item in encoded]
    out = [np.zeros(k, dtype=np.float64) for k in sizes]
    with torch.inference_mode():
        for batch in _batches(prefix, sizes, batch_size):
            p = prefix[batch[0]]
            heads = torch.tensor([encoded[i][0][0][:p] for i in batch], device=device)
            head_logits, caches = _forward(models, heads, vocab)
            head_lp = torch.log_softmax(head_logits, dim=-1)
            owner = torch.tensor([b for b, i in enumerate(batch) for _ in range(sizes[i])], device=device)
            for cache in caches:
                cache.batch_select_indices(owner)
            rows = [(b, ids, mask) for b, i in enumerate(batch) for ids, mask in encoded[i]]
            tails, _ = right_padded([ids[p:] for _, ids, _ in rows], 0)
            tail_lp = torch.log_softmax(_forward(models, tails.to(device), vocab, caches)[0], dim=-1)
            r = 0
            for b, i in enumerate(batch):
                for j, (ids, mask) in enumerate(encoded[i]):
                    target = torch.tensor(ids[1:], device=device)
                    lp = torch.cat([head_lp[b].gather(-1, target[:p - 1, None]).squeeze(-1),
                                    head_lp[b, p - 1, target[p - 1]].reshape(1),
                                    tail_lp[r, :len(ids) - p - 1].gather(-1, target[p:, None]).squeeze(-1)])
                    weight = torch.tensor(mask[1:], dtype=lp.dtype, device=device)
                    out[i][j] = float((lp * weight).sum())
                    r += 1
            if progress is not None:
                progress.update(len(rows))
    return out
