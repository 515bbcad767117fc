"""Words seen, counted exactly (issue 13; docs/commands.md, "Words seen"): per-token word starts, words per
window and per optimizer step, and the BabyLM checkpoint names `chck_{N}M`.

A word is a maximal run of non-whitespace characters (`str.split()`, as `wc -w` counts a corpus). `bbl prepare`
stores, beside each token stream, how many words *start* in each token (`word_starts`, uint8): the word belongs to
the token holding its first character. So the words of any window are the sum over its tokens, a word cut by a
window boundary counts once (in the window holding its start), and the whole stream sums to the cleaned text's
word count exactly (tested against `len(text.split())`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from bbl.errors import BblError

WHITESPACE = np.array([*range(0x09, 0x0E), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028,
                        0x2029, 0x202F, 0x205F, 0x3000], dtype=np.uint32)
"""Every code point `str.isspace()` is true for (tests/test_words.py checks the list against Python)."""



def word_start_positions(text: str) -> np.ndarray:
    """Character offsets where a word starts: non-whitespace after whitespace or at offset 0 (int64)."""
    if not text:
        return np.zeros(0, dtype=np.int64)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    space = np.isin(codes, WHITESPACE)
    prev_space = np.concatenate([[True], space[:-1]])
    return np.flatnonzero(~space & prev_space)


def word_starts_of_encodings(texts: list[str], encodings) -> list[np.ndarray]:
    """Per text, the words starting in each of its tokens ((tokens,) uint8), from the tokenizer's char offsets.

    A word start is given to the last token whose span begins at or before it (tokens sharing one offset, as
    byte-level pieces of one character do, get it once). Vectorised over the batch: the texts are joined, their
    token offsets shifted to match, and every word start is placed with one `searchsorted` (tokens cover every
    non-space character, so a word start always finds a token of its own text). Raises BblError past 255 word
    starts in one token.
    """
    if not texts:
        return []
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    text_base = np.cumsum(lengths) - lengths  # where each text starts in the joined string
    n_tokens = np.fromiter((len(e.offsets) for e in encodings), dtype=np.int64, count=len(encodings))
    starts = np.fromiter((s for e in encodings for s, _ in e.offsets), dtype=np.int64, count=int(n_tokens.sum()))
    starts += np.repeat(text_base, n_tokens)
    words = word_start_positions("".join(texts))
    counts = np.zeros(len(starts), dtype=np.int64)
    if len(words) and len(starts):
        np.add.at(counts, np.maximum(np.searchsorted(starts, words, side="right") - 1, 0), 1)
    if counts.size and counts.max() > 255:
        raise BblError(f"a token holds {counts.max()} word starts (> 255); use a tokenizer whose tokens do not span "
                       f"that many words")
    return np.split(counts.astype(np.uint8), np.cumsum(n_tokens)[:-1])


def window_words(word_starts: np.ndarray, seq_len: int, indices: np.ndarray) -> np.ndarray:
    """Words of each window `indices[i]` (window w = tokens [w * seq_len, (w + 1) * seq_len)), int64."""
    n = len(word_starts) // seq_len
    per_window = np.asarray(word_starts[: n * seq_len], dtype=np.int64).reshape(n, seq_len).sum(1)
    return per_window[np.asarray(indices, dtype=np.int64)]


def span_words(word_starts: np.ndarray, seq_len: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function giving the words of the windows of `seq_len` tokens that start at the tokens `starts` (any start:
    random-offset windows overlap or leave gaps, and a word starting in two windows' shared tokens counts in each),
    int64. The running sum of the word starts is taken once, here."""
    cum = np.concatenate([[0], np.cumsum(word_starts, dtype=np.int64)])

    def words(starts: np.ndarray) -> np.ndarray:
        starts = np.asarray(starts, dtype=np.int64)
        return cum[starts + seq_len] - cum[starts]

    return words


def words_per_step(words: np.ndarray | Callable[[int], np.ndarray], orders: Iterator[np.ndarray], batch_size: int,
                   max_steps: int) -> np.ndarray:
    """Cumulative words seen after each optimizer step 1..max_steps (int64, (max_steps,)).

    `words` holds the words of each dataset row, or is a function of the epoch giving them (random-offset windows
    hold other tokens each epoch). `orders` yields each epoch's order of dataset rows (the train sampler's); a step
    consumes the next
    `batch_size` rows of its epoch (the last step of an epoch may take fewer, as the Trainer's DataLoader does).
    Under DDP the ranks' micro-batches of one step are consecutive slices of that order, so the count is the same
    (tested with 2 processes). When an epoch's windows do not fill whole micro-batches on every rank, accelerate
    repeats a few of the epoch's first windows to even them out; those repeats are not counted.
    """
    steps: list[np.ndarray] = []
    total, done = 0, 0
    for epoch, order in enumerate(orders):
        per_row = (words(epoch) if callable(words) else words)[np.asarray(order, dtype=np.int64)]
        bounds = np.arange(batch_size, len(per_row) + batch_size, batch_size).clip(max=len(per_row))
        cum = np.cumsum(per_row)[bounds - 1] + total
        steps.append(cum)
        total = int(cum[-1]) if len(cum) else total
        done += len(cum)
        if done >= max_steps:
            break
    out = np.concatenate(steps) if steps else np.zeros(0, dtype=np.int64)
    return out[:max_steps]


def checkpoint_name(words: int) -> str:
    """`chck_{N}M` for whole millions (the BabyLM pipeline's names), `chck_{N}K` for whole thousands below or
    between them, else `chck_{N}` (plain words): 2_000_000 -> chck_2M, 500_000 -> chck_500K, 1_500_000 ->
    chck_1500K, 750 -> chck_750."""
    if words % 1_000_000 == 0:
        return f"chck_{words // 1_000_000}M"
    if words % 1_000 == 0:
        return f"chck_{words // 1_000}K"
    return f"chck_{words}"
