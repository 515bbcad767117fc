"""Where each token of a prepared stream sits in the cleaned text (issue 31): per-token byte spans, so the exact
text of any window is recoverable (decoding is not: the default tokenizer's decode adds a prefix space and returns
NFKC-normalised text), for cross-tokenizer dumps and bits per byte.

`bbl prepare` writes, per split, `OUT/{split}.text` (the cleaned text the stream was encoded from: every cleaned
file of the split, in manifest order, as UTF-8) and `OUT/{split}.offsets.npy` ((tokens, 2) [start, end) byte
offsets into it, uint32, int64 past 4 GiB). Spans come from the fast tokenizer's offsets (characters of the
original, un-normalised text), turned into bytes. Pieces of one character (byte-level BPE) share its span, and so
may a prefix space and the first piece of a line; a character the normaliser composed into the one before it (NFKC:
`e` + U+0301 -> `é`) is covered by that one's tokens (`cover_composed`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bbl.data.words import WHITESPACE, word_starts_of_encodings
from bbl.errors import BblError

PROBE_LINES = 200
"""Lines of each train source a given `--tokenizer` is checked on before `bbl prepare` writes anything."""


def char_to_byte(text: str) -> np.ndarray:
    """(len(text) + 1,) int64: the UTF-8 byte offset of each character offset of `text` (and of its end)."""
    if text.isascii():
        return np.arange(len(text) + 1, dtype=np.int64)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    sizes = 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def uncovered_char(text: str, char_spans: np.ndarray) -> int:
    """The first non-whitespace character of `text` that no token's [start, end) char span covers, or -1.

    A tokenizer whose spans leave a visible character uncovered (a normalizer that deletes it, a pre-tokenizer that
    drops it) cannot recover the text from its tokens."""
    covered = np.zeros(len(text) + 1, dtype=np.int64)
    if len(char_spans):
        np.add.at(covered, char_spans[:, 0], 1)
        np.add.at(covered, char_spans[:, 1], -1)
    covered = np.cumsum(covered)[:-1] > 0
    if covered.all():
        return -1
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    missing = np.flatnonzero(~covered & ~np.isin(codes, WHITESPACE))
    return int(missing[0]) if len(missing) else -1


def check_spans(text: str, char_spans: np.ndarray, *, where: str) -> None:
    """Refuse spans that cannot recover `text`: out of order, outside it, or leaving a visible character uncovered.

    Raises:
        BblError: one line naming `where`, the character and the fix.
    """
    n = len(text)
    if len(char_spans) and ((np.diff(char_spans[:, 0]) < 0).any() or (char_spans[:, 0] > char_spans[:, 1]).any()
                            or char_spans.min() < 0 or char_spans.max() > n):
        raise BblError(f"{where}: the tokenizer's offsets are out of order or outside the text, so they cannot "
                       f"recover it; use a fast tokenizer whose offsets map each token to its span of the text")
    bad = uncovered_char(text, char_spans)
    if bad >= 0:
        raise BblError(f"{where}: the tokenizer drops {text[bad]!r} (character {bad} of {text[:40]!r}): no token's "
                       f"offsets cover it, so its tokens cannot recover the text; use a tokenizer that keeps every "
                       f"character (e.g. bbl's byte-level BPE)")


INSERTED_SPACES = ("\u0120", "\u2581")
"""A lone byte-level space (Ġ) or SentencePiece space (▁): a tokenizer's prefix space, which it inserts before a
line's first word and whose offsets it reports as that word's first character."""


def token_char_spans(line: str, encoding, normalizer=None) -> np.ndarray:
    """(tokens, 2) int64 [start, end) character spans of a `tokenizers.Encoding` of `line`, with an inserted prefix
    space (`INSERTED_SPACES` over a non-space character) given an empty span at its start: it covers no text, so
    the token before it and it both end where the line starts, and the next token's boundary stays exact. With
    the tokenizer's `normalizer`, characters it composed into the one before them get that one's span too
    (`cover_composed`)."""
    chars = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
    for i, token in enumerate(encoding.tokens):
        if token in INSERTED_SPACES and chars[i, 1] > chars[i, 0] and not line[chars[i, 0]].isspace():
            chars[i, 1] = chars[i, 0]
    return chars if normalizer is None else cover_composed(line, chars, normalizer)


def cover_composed(line: str, char_spans: np.ndarray, normalizer) -> np.ndarray:
    """Spans extended over the characters a normalizer composed into the character before them.

    NFC / NFKC compose `e` + U+0301 into `é`, halfwidth `ｶ` + `ﾞ` into `ガ`, Hangul jamo into a syllable; the
    tokenizer's offsets then give the composed character the first one's span and leave the others uncovered, so
    the text could not be recovered from the spans. A character is taken into the tokens whose (nonempty) span
    ends just before it when it is uncovered, not whitespace, and adding it changes the normalised text of their
    span: a character the normalizer deletes changes nothing and stays uncovered (`check_spans` refuses it).

    Args:
        line: the encoded text. char_spans: (tokens, 2) int64 [start, end) character spans, in order.
        normalizer: the tokenizer's `tokenizers.normalizers.Normalizer` (`normalize_str`).
    Returns:
        (tokens, 2) int64, a copy when a span changed (else `char_spans` itself).
    """
    if uncovered_char(line, char_spans) < 0:
        return char_spans
    out = char_spans.copy()
    covered = np.zeros(len(line) + 1, dtype=np.int64)
    np.add.at(covered, out[:, 0], 1)
    np.add.at(covered, out[:, 1], -1)
    for c in np.flatnonzero(np.cumsum(covered)[:-1] == 0):
        if line[c].isspace():
            continue
        before = np.flatnonzero((out[:, 1] == c) & (out[:, 0] < c))
        if not len(before):
            continue
        start = int(out[before[0], 0])
        if normalizer.normalize_str(line[start:c + 1]) != normalizer.normalize_str(line[start:c]):
            out[before, 1] = c + 1
    return out


def encode_lines_with_spans(tokenizer, lines: list[str], *, where: str, first_line: int = 1,
                            batch_size: int = 8192) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
    """As `bbl.data.tokenizer.encode_lines_with_word_starts`, yielding per line (ids, word starts (uint8), byte
    spans (tokens, 2) int64 relative to the line's first byte).

    Raises:
        BblError: a line the tokenizer's offsets cannot recover (`check_spans`; names `where`:line).
    """
    for start in range(0, len(lines), batch_size):
        batch = lines[start:start + batch_size]
        encodings = tokenizer.encode_batch(batch, add_special_tokens=False)
        starts = word_starts_of_encodings(batch, encodings)
        for i, (line, enc, ws) in enumerate(zip(batch, encodings, starts, strict=True)):
            chars = token_char_spans(line, enc, tokenizer.normalizer)
            check_spans(line, chars, where=f"{where}:{first_line + start + i}")
            yield enc.ids, ws, char_to_byte(line)[chars]


def offsets_dtype(text_bytes: int) -> np.dtype:
    """uint32 for texts under 4 GiB, else int64."""
    return np.dtype(np.uint32) if text_bytes < 2 ** 32 else np.dtype(np.int64)


def window_bytes(offsets: np.ndarray, first: int, stop: int) -> tuple[int, int]:
    """[start, end) bytes of tokens [first, stop) of a stream: from the first token's start to the last's end."""
    return int(offsets[first, 0]), int(offsets[stop - 1, 1])


def scored_bytes(offsets: np.ndarray, first: int, stop: int) -> int:
    """UTF-8 bytes of the text tokens first + 1 .. stop - 1 cover: what a causal LM scores on the window [first,
    stop) (every token but the first is predicted), from the first token's end to the last token's end."""
    return int(offsets[stop - 1, 1]) - int(offsets[first, 1])
