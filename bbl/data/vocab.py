"""The byte string each id of a tokenizer stands for, and the correspondence of two vocabularies by equal byte
strings (issue 31: a cross-tokenizer cache maps a teacher's ids to the student's ids with the same bytes).

Byte-level BPE (GPT-2, Qwen, LLaMA-3, bbl's own) writes bytes as printable characters (`byte_alphabet`);
SentencePiece-style models write a space as U+2581 and unknown bytes as `<0xNN>`; anything else is its UTF-8.
Special tokens stand for no text and match nothing.
"""

from __future__ import annotations

import json

import numpy as np

SENTENCEPIECE_SPACE = "\u2581"


def byte_alphabet() -> dict[str, int]:
    """{character: byte} of byte-level BPE (GPT-2's `bytes_to_unicode`, inverted): printable bytes stand for
    themselves, the others for 256 + their rank."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _is_byte_level(spec: dict) -> bool:
    def types(node):
        if isinstance(node, dict):
            yield node.get("type")
            for v in node.values():
                yield from types(v)
        elif isinstance(node, list):
            for v in node:
                yield from types(v)

    return "ByteLevel" in set(types(spec.get("pre_tokenizer"))) | set(types(spec.get("decoder")))


def token_byte_strings(tokenizer) -> list[bytes | None]:
    """Per id of a `tokenizers.Tokenizer` (index = id), the bytes the token stands for, None for special tokens
    and for tokens whose bytes cannot be told (a byte-level token holding a character outside the alphabet)."""
    spec = json.loads(tokenizer.to_str())
    byte_level = _is_byte_level(spec)
    alphabet = byte_alphabet()
    specials = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    out: list[bytes | None] = [None] * tokenizer.get_vocab_size()
    for token, i in tokenizer.get_vocab(with_added_tokens=True).items():
        if token in specials or i >= len(out):
            continue
        if byte_level:
            out[i] = bytes(alphabet[c] for c in token) if all(c in alphabet for c in token) else None
        elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            out[i] = bytes([int(token[3:5], 16)])
        else:
            out[i] = token.replace(SENTENCEPIECE_SPACE, " ").encode()
    return out


def vocab_correspondence(source, target, *, prefix_space: int = 0) -> np.ndarray:
    """(source vocab,) int32: for each id of the `source` tokenizer (a `tokenizers.Tokenizer`), the `target` id with
    the same byte string (`token_byte_strings`), or -1. Special tokens match the target's special of the same
    content only (so a tokenizer maps to itself id for id). Where several target ids share a byte string, the
    smallest; several source ids may map to one target id (a byte-fallback vocabulary holds both `A` and `<0x41>`).

    `prefix_space` shifts the match by the space a tokenizer inserts before a line's first word (the
    cross-tokenizer cache's `prefix_space`, docs/cache-format.md): +1 maps a source token b to the target's b" " + b
    (the target inserted the space, the source did not), -1 maps a source token b" " + b to the target's b (the
    source inserted it); special tokens match as with 0 (they stand for no text).
    """
    if prefix_space not in (-1, 0, 1):
        raise ValueError(f"prefix_space must be -1, 0 or 1, got {prefix_space}")

    def keys(tokenizer, shift: int = 0):
        out = token_byte_strings(tokenizer)
        if shift == 1:
            out = [None if b is None else b" " + b for b in out]
        elif shift == -1:
            out = [b[1:] if b is not None and len(b) > 1 and b[:1] == b" " else None for b in out]
        for t_id, t in tokenizer.get_added_tokens_decoder().items():
            if t.special and t_id < len(out):
                out[t_id] = ("special", t.content)
        return out

    index: dict = {}
    for i, key in enumerate(keys(target)):
        if key is not None:
            index.setdefault(key, i)
    return np.asarray([index.get(key, -1) if key is not None else -1 for key in keys(source, prefix_space)],
                      dtype=np.int32)


def starts_with_space(tokenizer) -> np.ndarray:
    """(vocab,) bool: the ids whose byte string (`token_byte_strings`) begins with a space (b" ")."""
    return np.asarray([b is not None and b[:1] == b" " for b in token_byte_strings(tokenizer)], dtype=bool)
