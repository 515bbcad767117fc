"""The pretoken-boundary ids of a tokenizer: what ALM's debiasing weighs (Minixhofer et al. 2025, "Universal
Cross-Tokenizer Distillation via Approximate Likelihood Matching", Section 3.1: "B is the set of pretoken-boundary
bytes ... the \\n, \\t and the space character"). An id is in the set when its byte string starts with a space,
newline or tab byte, or when it is a special token: tokenkit's `utils.get_space_mask` in its default mode
`space+tab+newline+special` (bminixhofer/tokenkit@bcacdef, tokenkit/utils.py:68-91). The byte strings are
`bbl.data.vocab.token_byte_strings`' (byte-level BPE through its byte alphabet, SentencePiece `▁` as a space and
`<0xNN>` as one byte).
"""

from __future__ import annotations

import numpy as np

from bbl.data.vocab import token_byte_strings

BOUNDARY_BYTES = frozenset(b" \n\t")
"""The first bytes that put a token in the boundary set: space (0x20), newline (0x0A), tab (0x09)."""


def boundary_mask(tokenizer, size: int | None = None) -> np.ndarray:
    """(size,) bool: the ids of `tokenizer` (a `tokenizers.Tokenizer`) whose byte string starts with a byte of
    `BOUNDARY_BYTES`, and its special tokens.

    Args:
        tokenizer: the tokenizer whose ids are marked.
        size: the length of the mask (the model's vocabulary, e.g. the prepared dir's `vocab_size`); ids past the
            tokenizer's are False, ids past `size` are dropped. None: the tokenizer's vocabulary size.
    Returns:
        (size,) bool numpy array, id-indexed. A token whose bytes cannot be told (a byte-level token holding a
        character outside the byte alphabet) is not in the set.
    """
    strings = token_byte_strings(tokenizer)
    n = len(strings) if size is None else int(size)
    mask = np.zeros(n, dtype=bool)
    for i, b in enumerate(strings[:n]):
        mask[i] = bool(b) and b[0] in BOUNDARY_BYTES
    for i, token in tokenizer.get_added_tokens_decoder().items():
        if token.special and i < n:
            mask[i] = True
    return mask


__all__ = ["BOUNDARY_BYTES", "boundary_mask"]
