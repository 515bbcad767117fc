"""Teachers: loading checkpoints with their provenance, and the logit-mean ensemble's top-k at a temperature.

Shared by `dump-logits` (writes the cache), `cache verify` and `cache repair` (recompute windows) and the online
reference of `distill`, so every stage loads, checks and ensembles teachers the same way.
"""

from __future__ import annotations

from pathlib import Path

from bbl.data import sha256_file
from bbl.errors import BblError


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
    import torch

    total = teacher_logits[0].float()
    for t in teacher_logits[1:]:
        total = total + t.float()  # a new tensor: the callers' logits are never modified
    scale = len(teacher_logits) * temperature
    mean = total.div_(scale) if len(teacher_logits) > 1 else total / scale  # logit mean / T, ours to modify
    log_z = torch.logsumexp(mean, dim=-1, keepdim=True)
    top_vals, top_ids = mean.topk(top_k, dim=-1)
    rest = mean.scatter_(-1, top_ids, float("-inf"))
    tail = (torch.logsumexp(rest, dim=-1, keepdim=True) - log_z).squeeze(-1)
    return top_ids, top_vals - log_z, tail


def max_positions(model) -> int:
    """Positions a transformers causal LM accepts (`max_position_embeddings`, GPT-2's `n_positions`)."""
    cfg = model.config
    return int(getattr(cfg, "max_position_embeddings", None) or cfg.n_positions)


def load_teachers(teacher_dirs: list[Path], device: str, *, seq_len: int | None = None):
    """Load teacher checkpoints (eval mode) and their provenance (path, architecture, parameters, hashes).

    Raises:
        BblError: a dir is not a model dir, the teachers' tokenizers differ, a model's vocab differs from its
            tokenizer's, or `seq_len` exceeds a teacher's positions.
    """
    from transformers import AutoModelForCausalLM

    from bbl.models import count_parameters
    from bbl.tokenizer import load_tokenizer, tokenizer_fingerprint

    teachers, infos = [], []
    for d in map(Path, teacher_dirs):
        if not (d / "config.json").is_file():
            raise BblError(f"{d}: not a model dir (no config.json); pass a dir written by `bbl train-teacher`")
        fp = tokenizer_fingerprint(d)
        model = AutoModelForCausalLM.from_pretrained(str(d)).to(device).eval()
        vocab = load_tokenizer(d).get_vocab_size()
        if model.config.vocab_size != vocab:
            raise BblError(f"{d}: model vocab {model.config.vocab_size} != tokenizer vocab {vocab}; retrain the teacher")
        if seq_len is not None and seq_len > max_positions(model):
            raise BblError(f"--seq-len {seq_len} exceeds the {max_positions(model)} positions of teacher {d}; "
                           f"use --seq-len <= {max_positions(model)}")
        weights = sorted(d.glob("*.safetensors")) or sorted(d.glob("*.bin"))
        infos.append({"path": str(d.resolve()), "architecture": model.config.model_type,
                      "parameters": count_parameters(model), "tokenizer_fingerprint": fp,
                      "weights_sha256": {w.name: sha256_file(w) for w in weights}})
        teachers.append(model)
    fps = {i["tokenizer_fingerprint"] for i in infos}
    if len(fps) > 1:
        names = ", ".join(f"{i['path']} ({i['tokenizer_fingerprint'][:12]})" for i in infos)
        raise BblError(f"teachers use different tokenizers: {names}; train every teacher on the same prepared data")
    return teachers, infos
