"""Teachers: loading checkpoints with their provenance (path, architecture, parameters, weight hashes), and their
forward pass for the dump (hidden states and LM head, so the ensemble never holds (B, S, V) per teacher).

Shared by `dump-logits` (writes the cache), `cache verify` and `cache repair` (recompute windows) and the online
reference of `distill`, so every stage loads and checks teachers the same way; `bbl.models.ensemble` combines them.
"""

from __future__ import annotations

from pathlib import Path

from bbl.data.tokenizer import load_tokenizer, tokenizer_fingerprint
from bbl.errors import BblError
from bbl.io import sha256_file
from bbl.models.build import (
    check_model_dir,
    check_seq_len,
    count_parameters,
    forward_without_logits,
    max_positions,
)

PLAIN_HEAD_ARCHITECTURES = ("gpt2", "llama")
"""Architectures whose logits are exactly lm_head(last hidden state) (no soft-capping or logit scale), so the dump
may project their hidden states itself, a chunk at a time."""


def teacher_forward(model, input_ids):
    """(hidden (B, S, H) after the final norm, LM head) for a plain-head architecture, else ((B, S, V) logits, None).

    The hidden path asks the model for no logits at all (`bbl.models.build.forward_without_logits`).
    """
    if model.config.model_type in PLAIN_HEAD_ARCHITECTURES:
        return forward_without_logits(model, input_ids).hidden_states[-1], model.get_output_embeddings()
    return model(input_ids=input_ids).logits, None


def load_teachers(teacher_dirs: list[Path], device: str, *, seq_len: int | None = None):
    """Load teacher checkpoints (eval mode) and their provenance (path, architecture, parameters, hashes).

    Raises:
        BblError: a dir is not a model dir with its tokenizer, the teachers' tokenizers differ, a model's vocab
            differs from its tokenizer's, or `seq_len` exceeds a teacher's positions (all dirs are checked before
            any model is loaded).
    """
    from transformers import AutoModelForCausalLM

    dirs = [Path(d) for d in teacher_dirs]
    for d in dirs:
        check_model_dir(d, written_by="`bbl train-teacher`")
    teachers, infos = [], []
    for d in dirs:
        fp = tokenizer_fingerprint(d)
        model = AutoModelForCausalLM.from_pretrained(str(d)).to(device).eval()
        vocab = load_tokenizer(d).get_vocab_size()
        if model.config.vocab_size != vocab:
            raise BblError(f"{d}: model vocab {model.config.vocab_size} != tokenizer vocab {vocab}; retrain the teacher")
        if seq_len is not None:
            check_seq_len(seq_len, max_positions(model), option="--seq-len", subject=f"teacher {d}")
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
