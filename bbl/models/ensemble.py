"""The teachers' ensemble: the logit mean (Baby Llama, Section 3.2), computed by one function (`logit_mean`)
wherever teachers are combined — the dump, `cache verify`, online distillation and the evaluation of an ensemble
— and the cache's sparse soft targets of its tempered distribution p_T (top-k, sampled, hybrid), and what ALM reads
of its untempered one (`ensemble_token_logprobs`).
"""

from __future__ import annotations

from bbl.models.teachers import teacher_logits


def logit_mean(logits: list, *, temperature: float = 1.0):
    """The ensemble's logits softened at `temperature`: (Σ_t logits_t) / (n T), summed in fp32 in the teachers'
    order (the order a cache records; `bbl cache repair` loads teachers in it), so every stage gets the same bits.

    Args:
        logits: one (..., V) float tensor per teacher (any float dtype; upcast to fp32).
        temperature: T > 0; 1 gives the plain logit mean.
    Returns:
        (..., V) float32, a new tensor (the callers' logits are never modified).
    """
    total = logits[0].float()
    for t in logits[1:]:
        total = total + t.float()
    scale = len(logits) * temperature
    return total.div_(scale) if len(logits) > 1 else total / scale


def ensemble_logits(models, input_ids, attention_mask=None, vocab_size: int | None = None):
    """(B, S, V) float32 `logit_mean` of `models`' logits on a batch (one model: its logits, upcast), over the
    first `vocab_size` ids (a padded model's extra outputs dropped; None: all)."""
    return logit_mean([teacher_logits(m, input_ids, vocab_size, attention_mask) for m in models])


def ensemble_topk(teacher_logits: list, *, temperature: float, top_k: int):
    """Top-k of the logit-mean ensemble softened at `temperature` (Baby Llama, Section 3.2).

    Args:
        teacher_logits: list of (B, S, V) float tensors, one per teacher.
        temperature: T > 0; p_T = softmax(mean_logits / T).
        top_k: K <= V.
    Returns:
        topk_ids (B, S, K) int64, sorted by decreasing probability; topk_logprobs (B, S, K) float32, log p_T in
        nats; tail_logprob (B, S) float32, log of the mass outside the top k computed as a logsumexp over the
        other V - K logits (-inf when K == V).
    """
    t = ensemble_targets(teacher_logits, temperature=temperature, top_k=top_k)
    return t["topk_ids"], t["topk_logprobs"], t["tail_logprob"]


def ensemble_targets(teacher_logits: list, *, temperature: float, targets: str = "topk", top_k: int = 0,
                     num_samples: int = 0, generator=None, entropy: bool = False) -> dict:
    """The cache's soft targets of the logit-mean ensemble at `temperature` (`sparse_targets` of its p_T).

    Args: teacher_logits: list of (B, S, V) float tensors; the rest as `sparse_targets`.
    Returns: as `sparse_targets`, shaped (B, S, ...).
    """
    mean = logit_mean(teacher_logits, temperature=temperature)  # a new tensor, ours to modify
    b, s, v = mean.shape
    out = sparse_targets(mean.reshape(b * s, v), targets=targets, top_k=top_k, num_samples=num_samples,
                         generator=generator, entropy=entropy)
    return {k: x.reshape(b, s, *x.shape[1:]) for k, x in out.items()}


def sparse_targets(scaled_mean, *, targets: str = "topk", top_k: int = 0, num_samples: int = 0,
                   generator=None, entropy: bool = False) -> dict:
    """One kind of the cache's targets from rows of logits already divided by T; overwrites `scaled_mean`.

    Kinds (issue 15; Anshumann et al. 2025, "Sparse Logit Sampling", Section 3, for the sampled estimator):
    - topk: topk_ids (n, K) int64 by decreasing probability, topk_logprobs (n, K) float32 log p_T, tail_logprob
      (n,) float32 log of the mass outside the top k (-inf when K == V).
    - sampled: sample_ids (n, S) int64, S ids drawn with replacement from p_T (so id i appears c_i times with
      E[c_i / S] = p_T(i)), sorted ascending.
    - hybrid: topk's three arrays plus sample_ids (n, S) drawn with replacement from the tail renormalised,
      p_T(j) / tail mass for j outside the top k, sorted ascending (all 0 when K == V: there is no tail).

    Args:
        scaled_mean: (n, V) float32, the ensemble's logit mean / T.
        generator: the `torch.Generator` the draws use (seeded per cache chunk by the dump, so a resumed or
            repaired chunk is byte-identical).
        entropy: also return `entropy` (n,) float32, H(p_T) = -Σ p log p in nats (the dump's `--kd-fraction`
            selects positions by it); the draws do not change.
    """
    import torch

    extra = {"entropy": _entropy(scaled_mean)} if entropy else {}
    if targets == "sampled":
        probs = torch.softmax(scaled_mean, dim=-1)
        return {"sample_ids": _draw(probs, num_samples, generator), **extra}
    log_z = torch.logsumexp(scaled_mean, dim=-1, keepdim=True)
    top_vals, top_ids = scaled_mean.topk(top_k, dim=-1)
    rest = scaled_mean.scatter_(-1, top_ids, float("-inf"))
    tail = (torch.logsumexp(rest, dim=-1, keepdim=True) - log_z).squeeze(-1)
    out = {"topk_ids": top_ids, "topk_logprobs": top_vals - log_z, "tail_logprob": tail, **extra}
    if targets == "hybrid":
        if top_k == scaled_mean.shape[-1] or num_samples == 0:  # no tail to draw from, or no draws
            out["sample_ids"] = torch.zeros(rest.shape[0], num_samples, dtype=torch.long, device=rest.device)
        else:
            out["sample_ids"] = _draw(torch.softmax(rest, dim=-1), num_samples, generator)
    return out


def _entropy(scaled_mean):
    """(n,) float32 entropy -Σ p log p of p = softmax(scaled_mean) per row, nats (terms with p = 0 count 0)."""
    import torch

    log_p = torch.log_softmax(scaled_mean, dim=-1)
    return -(log_p.exp() * log_p.nan_to_num(neginf=0.0)).sum(-1)


def _draw(probs, num_samples: int, generator):
    """(n, S) ids drawn with replacement from each row of `probs`, sorted ascending (they compress best so)."""
    import torch

    return torch.multinomial(probs, num_samples, replacement=True, generator=generator).sort(dim=-1).values


def ensemble_topk_from_hidden(hiddens: list, heads: list, *, temperature: float, top_k: int,
                              chunk_rows: int | None = None):
    """`ensemble_topk` from the teachers' last hidden states, a chunk of positions at a time (issue 11).

    Returns the tuple `ensemble_topk` returns; see `ensemble_targets_from_hidden`.
    """
    t = ensemble_targets_from_hidden(hiddens, heads, temperature=temperature, top_k=top_k, chunk_rows=chunk_rows)
    return t["topk_ids"], t["topk_logprobs"], t["tail_logprob"]


def ensemble_targets_from_hidden(hiddens: list, heads: list, *, temperature: float, targets: str = "topk",
                                 top_k: int = 0, num_samples: int = 0, generator=None,
                                 chunk_rows: int | None = None, entropy: bool = False) -> dict:
    """`ensemble_targets` from the teachers' last hidden states, a chunk of positions at a time (issue 11).

    Each chunk's logits are averaged over the teachers by `logit_mean` (never one (B, S, V) tensor per teacher), and its targets (top-k and the two logsumexps, and/or the draws) are taken while the chunk
    is in cache. Equal to `ensemble_targets` on the teachers' logits up to fp32 rounding of the sums (the draws
    are equal too when the rows are: one generator, consumed row chunk by row chunk in order).

    Args:
        hiddens: one (B, S, H_t) float tensor per teacher, the hidden states after its final norm.
        heads: the teachers' LM heads (`nn.Linear` (V, H_t), bias allowed), in the same order.
        temperature, targets, top_k, num_samples, generator, entropy: as `ensemble_targets`.
        chunk_rows: positions per chunk (default: `bbl.losses.chunked.default_chunk_rows`).
    Returns:
        As `sparse_targets`, shaped (B, S, ...).
    """
    import torch
    import torch.nn.functional as F

    from bbl.losses.chunked import default_chunk_rows

    b, s = hiddens[0].shape[:2]
    n = b * s
    flat = [h.reshape(n, -1) for h in hiddens]
    v = heads[0].weight.shape[0]
    step = chunk_rows or default_chunk_rows(v)
    parts = []
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        logits = [F.linear(h[r0:r1], head.weight, head.bias) for h, head in zip(flat, heads, strict=True)]
        parts.append(sparse_targets(logit_mean(logits, temperature=temperature), targets=targets, top_k=top_k,
                                    num_samples=num_samples, generator=generator, entropy=entropy))
    return {k: torch.cat([p[k] for p in parts]).reshape(b, s, *parts[0][k].shape[1:]) for k in parts[0]}


def ensemble_token_logprobs(outputs: list, heads: list, next_ids, boundary, *, chunk_rows: int | None = None):
    """What ALM reads of the logit-mean ensemble at temperature 1, for R chosen positions (rows): the log-prob of
    one token at each and the log of its mass on a set of ids (Minixhofer et al. 2025, Sections 3 and 3.1).

    p = softmax(`logit_mean`(logits, temperature=1)) per row, whatever temperature the cache's top-k targets use.
    The boundary mass is logsumexp over the set's logits minus logsumexp over all (never log of a sum of
    probabilities, which underflows to -inf), as tokenkit computes it (tokenkit@bcacdef, losses.py:393-406).

    Args:
        outputs: per teacher, its rows' hidden states (R, H_t) after the final norm with `heads[t]` its LM head
            (`bbl.models.teachers.Head`), or its rows' logits (R, V) with `heads[t]` None.
        heads: as `outputs`, one per teacher.
        next_ids: (R,) int64, the token each row is scored at (any valid id where the caller ignores it).
        boundary: (V,) bool, the ids whose mass is returned (`bbl.data.boundary.boundary_mask`).
        chunk_rows: rows whose (rows, V) logits are made at once (default `bbl.losses.chunked.default_chunk_rows`).
    Returns:
        (token_logprob (R,), boundary_logprob (R,)): float32 nats, on the rows' device.
    """
    import torch
    import torch.nn.functional as F

    from bbl.losses.chunked import default_chunk_rows

    n = outputs[0].shape[0]
    v = boundary.shape[0]
    step = chunk_rows or default_chunk_rows(v)
    off = ~boundary.to(outputs[0].device)
    token, mass = [], []
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        logits = [o[r0:r1] if h is None else F.linear(o[r0:r1], h.weight, h.bias)
                  for o, h in zip(outputs, heads, strict=True)]
        mean = logit_mean(logits, temperature=1.0)
        log_z = torch.logsumexp(mean, dim=-1)
        token.append(mean.gather(-1, next_ids[r0:r1, None].to(mean.device)).squeeze(-1) - log_z)
        mass.append(torch.logsumexp(mean.masked_fill_(off, float("-inf")), dim=-1) - log_z)
    empty = outputs[0].new_zeros(0, dtype=torch.float32)
    return (torch.cat(token) if token else empty), (torch.cat(mass) if mass else empty)
