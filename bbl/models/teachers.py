"""Teachers: loading checkpoints with their provenance (path, architecture, parameters, weight hashes), and their
forward pass for the dump (hidden states and LM head, so the ensemble never holds (B, S, V) per teacher).

A teacher's output may be wider than its tokenizer (Qwen pads `vocab_size` past its tokenizer's ids, e.g. 151,936
vs 151,665): the padding ids are dropped before any softmax (`teacher_forward`, `teacher_logits`), so no mass sits
on ids that cannot be tokens.

Shared by `dump-logits` (writes the cache), `cache verify` and `cache repair` (recompute windows) and the online
reference of `distill`, so every stage loads and checks teachers the same way; `bbl.models.ensemble` combines them.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from bbl.data.tokenizer import load_tokenizer, tokenizer_fingerprint
from bbl.errors import BblError
from bbl.io import sha256_file
from bbl.models.build import (
    check_model_dir,
    check_seq_len,
    count_parameters,
    forward_without_logits,
    load_causal_lm,
    max_positions,
)

PLAIN_HEAD_ARCHITECTURES = ("gpt2", "llama", "qwen2", "qwen3")
"""Architectures whose logits are exactly lm_head(last hidden state) (no soft-capping or logit scale), so the dump
may project their hidden states itself, a chunk at a time."""

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""`dump-logits --dtype`: the precision teachers are loaded and run in (the ensemble mean and log-softmax stay fp32)."""


class Head(NamedTuple):
    """An LM head's weight (V, H) and bias (V,) or None, cut to the tokenizer's V ids."""

    weight: object
    bias: object


def teacher_forward(model, input_ids, vocab_size: int | None = None):
    """(hidden (B, S, H) after the final norm, `Head`) for a plain-head architecture, else ((B, S, V) logits,
    None); V is `vocab_size` (the tokenizer's), the model's padding rows past it dropped.

    The hidden path asks the model for no logits at all (`bbl.models.build.forward_without_logits`).
    """
    if model.config.model_type in PLAIN_HEAD_ARCHITECTURES:
        head = model.get_output_embeddings()
        bias = getattr(head, "bias", None)
        return (forward_without_logits(model, input_ids).hidden_states[-1],
                Head(head.weight[:vocab_size], None if bias is None else bias[:vocab_size]))
    return teacher_logits(model, input_ids, vocab_size), None


def teacher_logits(model, input_ids, vocab_size: int | None = None, attention_mask=None):
    """(B, S, V) logits of a teacher over the tokenizer's `vocab_size` ids (padding columns dropped)."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[..., :vocab_size]


def weights_sha256(model_dir: Path) -> dict[str, str]:
    """{weight file name: sha256} of a model dir (its *.safetensors, else *.bin): a teacher's identity as a cache
    records it (`teachers[i].weights_sha256`)."""
    d = Path(model_dir)
    return {w.name: sha256_file(w) for w in sorted(d.glob("*.safetensors")) or sorted(d.glob("*.bin"))}


def teachers_match(recorded: list[dict], teacher_dirs) -> str | None:
    """Whether `teacher_dirs` are exactly the teachers a cache records (`recorded`: its `teachers` attribute), by
    their weights' sha256, in any order; read before any teacher is loaded. Returns None when they are, else a
    sentence naming what differs and the teachers to pass (a cache recording no hashes is not compared: None)."""
    if not recorded or any(not isinstance(r, dict) or not r.get("weights_sha256") for r in recorded):
        return None

    def key(hashes: dict) -> tuple:
        return tuple(sorted(hashes.values()))

    want = sorted(key(r["weights_sha256"]) for r in recorded)
    given = {str(d): key(weights_sha256(d)) for d in teacher_dirs}
    if sorted(given.values()) == want:
        return None
    strangers = [d for d, k in given.items() if k not in want]
    names = " ".join(f"--teacher {r.get('path')}" for r in recorded)
    what = (f"{', '.join(strangers)} {'is' if len(strangers) == 1 else 'are'} not among them" if strangers else
            f"{len(given)} given, {len(recorded)} recorded")
    return (f"the given teachers are not the ones the cache was dumped with (weights sha256: {what}); pass the "
            f"cache's own teachers: {names}")


def load_teachers(teacher_dirs: list[Path], device: str, *, seq_len: int | None = None, dtype: str = "fp32",
                  device_map: str | None = None):
    """Load teacher checkpoints (eval mode, in `dtype`: fp32, bf16 or fp16) and their provenance (path,
    architecture, parameters, hashes, tokenizer and output sizes).

    `device_map` (e.g. "auto"): place each teacher through transformers/accelerate's big-model loading
    (`from_pretrained(device_map=...)`, layers spread over the visible GPUs, then CPU) instead of moving it whole
    to `device`: a teacher larger than one GPU (Llama-3.1-8B in fp32). Feed it at `model.device` (its first
    layer's); its outputs come back on its last layer's device.

    A model whose output is wider than its tokenizer (padded, as Qwen's) is accepted: `vocab_size` is the
    tokenizer's, `output_size` the model's; `teacher_forward` drops the padding.

    Raises:
        BblError: a dir is not a model dir with its tokenizer, the teachers' tokenizers differ, a model's output is
            narrower than its tokenizer, or `seq_len` exceeds a teacher's positions (all dirs are checked before
            any model is loaded).
    """
    import torch

    if dtype not in DTYPES:
        raise BblError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    dirs = [Path(d) for d in teacher_dirs]
    for d in dirs:
        check_model_dir(d, written_by="`bbl train-teacher`")
    teachers, infos = [], []
    for d in dirs:
        fp = tokenizer_fingerprint(d)
        if device_map is None:
            model = load_causal_lm(d, dtype=getattr(torch, DTYPES[dtype])).to(device)
        else:
            model = load_causal_lm(d, dtype=getattr(torch, DTYPES[dtype]), device_map=device_map)
        model.eval()
        vocab = load_tokenizer(d).get_vocab_size()
        if model.config.vocab_size < vocab:
            raise BblError(f"{d}: model vocab {model.config.vocab_size} < tokenizer vocab {vocab}: ids past the model's "
                           f"outputs cannot be predicted; pass the tokenizer the model was trained with")
        if seq_len is not None:
            check_seq_len(seq_len, max_positions(model), option="--seq-len", subject=f"teacher {d}")
        info = {"path": str(d.resolve()), "architecture": model.config.model_type,
                "parameters": count_parameters(model), "tokenizer_fingerprint": fp,
                "weights_sha256": weights_sha256(d)}
        if model.config.vocab_size != vocab:  # recorded only when padded, so other caches keep their attributes
            info.update(vocab_size=vocab, output_size=int(model.config.vocab_size))
        if not (d / "bbl_run.json").is_file():  # a pretrained model bbl did not train (the ledger counts it apart)
            info["external"] = True
        infos.append(info)
        teachers.append(model)
    fps = {i["tokenizer_fingerprint"] for i in infos}
    if len(fps) > 1:
        names = ", ".join(f"{i['path']} ({i['tokenizer_fingerprint'][:12]})" for i in infos)
        raise BblError(f"teachers use different tokenizers: {names}; train every teacher on the same prepared data")
    return teachers, infos
