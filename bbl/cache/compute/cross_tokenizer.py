"""Computing a cross-tokenizer cache (`bbl dump-logits --targets cross_tokenizer`, or `--cross-tokenizer`): its
settings (`CrossTokenizerConfig`), its chunks (`CrossChunkComputer`), the recomputation `bbl cache verify` compares
against, and its operations (`CrossTokenizerOperations`, format: `bbl.cache.kinds.cross_tokenizer`).

For each student window: its text is recovered from the prepared dir's offsets (`bbl.data.offsets`), with
`context_tokens` student tokens of left context; the whole lines holding it are tokenized by the teacher's own
fast tokenizer line by line (as `bbl prepare` encodes the stream, so a teacher sharing the student's tokenizer sees
exactly the student's tokens); the teacher tokens from the context's first byte to the window's last byte are the
teacher's input; those ending inside the window are stored. Batches are padded on the right (a causal model's
real positions never see the padding) and go through the plain dump's forward pass and stored form
(`bbl.cache.compute.ensemble.EnsembleChunkComputer`), so an identity dump equals a plain one bit for bit. The same
forward pass gives ALM's arrays at temperature 1 (`CrossChunkComputer.alm_values`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bbl.cache.compute.base import ChunkComputer, KindOperations, dump_attrs, dump_windows, teacher_dtype
from bbl.cache.compute.ensemble import EnsembleChunkComputer
from bbl.cache.compute.fidelity import topk_fidelity
from bbl.cache.dump_config import DumpConfig
from bbl.cache.format import LOGPROB_STEP, STORAGE_DEFAULTS, quantize_logprobs, sort_by_id
from bbl.cache.kinds.cross_tokenizer import ALIGNMENT_RULE, ALM_ATTR, DEFAULT_CONTEXT_TOKENS, NAME, has_alm
from bbl.data.boundary import boundary_mask
from bbl.data.offsets import char_to_byte, check_spans, token_char_spans
from bbl.data.prepared import PreparedData
from bbl.data.tokenizer import TOKENIZER_FILE, load_tokenizer, tokenizer_fingerprint
from bbl.data.vocab import starts_with_space, vocab_correspondence
from bbl.errors import BblError
from bbl.models.build import common_scoring_positions
from bbl.models.teachers import load_teachers

__all__ = ["CrossChunkComputer", "CrossTokenizerConfig", "CrossTokenizerOperations", "recompute_sample"]
PROBE_WINDOWS = 4
"""Windows the teacher's tokenizer is checked on before anything is written (its offsets recover their text)."""
SEARCH_BLOCK = 1 << 16
"""Bytes read at a time when looking for the line around a window."""


@dataclass
class CrossTokenizerConfig(DumpConfig):
    """The settings of a cross-tokenizer dump: `DumpConfig`'s (targets cross_tokenizer; top-k only, in the default
    stored form: `bbl.cache.kinds.cross_tokenizer.check_config`) plus its own, recorded in `dump_config`.

    Raises:
        BblError: an invalid value, naming the dump-logits option.
    """

    targets: str = NAME
    """Always cross_tokenizer (`--cross-tokenizer` is `--targets cross_tokenizer`)."""
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    """--targets cross_tokenizer: student tokens of left context whose text the teacher reads before each window
    (input only, never stored; 0: none)."""
    teacher_tokens: int | None = None
    """--targets cross_tokenizer: teacher tokens stored per window at most (the padded width); None = 2 x seq_len. A
    window holding more is refused with a line naming --teacher-tokens."""

    def __post_init__(self):
        if self.targets != NAME:
            raise BblError(f"--targets {self.targets}: a cross-tokenizer config stores --targets {NAME}")
        if self.teacher_tokens is None:
            self.teacher_tokens = 2 * self.seq_len
        if self.teacher_tokens < 1:
            raise BblError(f"--teacher-tokens {self.teacher_tokens} must be >= 1")
        if self.context_tokens < 0:
            raise BblError(f"--context-tokens {self.context_tokens} must be >= 0")
        super().__post_init__()

    def plain(self) -> DumpConfig:
        """The top-k `DumpConfig` the teachers' forward pass and the stored form share with a plain dump."""
        return DumpConfig(targets="topk", top_k=self.top_k, temperature=self.temperature, split=self.split,
                          seq_len=self.seq_len, batch_size=self.batch_size, max_windows=self.max_windows,
                          seed=self.seed, chunk_windows=self.chunk_windows, dtype=self.dtype)

    def to_dict(self) -> dict:
        """The settings as the cache records them: those that apply to this kind (no targets, draws or storage
        options), as every cross-tokenizer cache has recorded them."""
        skip = {"targets", "num_samples", *STORAGE_DEFAULTS}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def teacher_tokenizer(teacher_dirs) -> Path:
    """The teachers' fast tokenizer file (teachers share one; `load_teachers` checks that).

    Raises:
        BblError: a teacher without tokenizer.json (a slow tokenizer has no offsets, so its tokens' byte spans
            are unknown).
    """
    for d in map(Path, teacher_dirs):
        if not (d / TOKENIZER_FILE).is_file():
            raise BblError(f"--teacher {d}: no fast tokenizer ({TOKENIZER_FILE}), so its tokens' byte spans are "
                           f"unknown and --cross-tokenizer cannot align them; save one with "
                           f"AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR) (transformers converts most "
                           f"slow tokenizers)")
    return Path(teacher_dirs[0]) / TOKENIZER_FILE


def _line_start(text: np.ndarray, pos: int) -> int:
    """The first byte of the line holding byte `pos` (just after the previous newline, or 0)."""
    while pos > 0:
        lo = max(0, pos - SEARCH_BLOCK)
        k = bytes(text[lo:pos]).rfind(b"\n")
        if k >= 0:
            return lo + k + 1
        pos = lo
    return 0


def _line_end(text: np.ndarray, end: int) -> int:
    """The end (after its newline, or the text's end) of the line holding byte `end - 1`."""
    pos = max(end - 1, 0)
    while pos < len(text):
        hi = min(len(text), pos + SEARCH_BLOCK)
        k = bytes(text[pos:hi]).find(b"\n")
        if k >= 0:
            return pos + k + 1
        pos = hi
    return len(text)


@dataclass
class CrossChunk:
    """One chunk of a cross-tokenizer cache, numpy, ready to write (`CacheWriter.write_chunk` reads the arrays of
    `cross_tokenizer.ARRAYS` by name)."""

    index: int
    input_ids: np.ndarray
    window_idx: np.ndarray
    teacher_lengths: np.ndarray
    teacher_ids: np.ndarray
    teacher_spans: np.ndarray
    alignment: np.ndarray
    teacher_topk_ids: np.ndarray
    teacher_topk_logprobs: np.ndarray
    teacher_tail_logprob: np.ndarray
    prefix_space: np.ndarray
    teacher_token_logprob: np.ndarray | None = None
    teacher_boundary_logprob: np.ndarray | None = None


class TeacherText:
    """The teacher's side of the student's windows, from the prepared text alone (no model): `window(w)`.

    Args:
        positions: the teachers' position limit (None: none checked).
    """

    def __init__(self, data: PreparedData, config: CrossTokenizerConfig, tokenizer, *, positions: int | None = None):
        need = "a cross-tokenizer dump (--cross-tokenizer)"
        self.config, self.tokenizer, self.positions = config, tokenizer, positions
        self.offsets = np.asarray(data.offsets(config.split, needed_by=need))
        self.text = data.text(config.split, needed_by=need)
        self.stream = data.stream(config.split)
        self.teacher_space = starts_with_space(tokenizer)
        self.student_space = starts_with_space(load_tokenizer(data.tokenizer_dir))

    def inserted_space(self, starts_with: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """(n,) bool: tokens whose bytes begin with a space the text does not hold there, at a line's first byte
        (the prefix space a tokenizer inserts before a line's first word), from `starts_with` (n,) bool (the
        token's bytes begin with b" ") and `starts` (n,) int64 (its first byte in the text)."""
        text, n = self.text, len(self.text)
        inside = np.clip(starts, 0, max(n - 1, 0))
        line_start = (starts == 0) | ((starts > 0) & (starts <= n) & (text[np.clip(starts - 1, 0, None)] == 0x0A))
        return starts_with & line_start & (starts < n) & (text[inside] != 0x20)

    def window(self, w: int) -> dict:
        """Window `w`'s teacher side: input ids, where the stored tokens start in them, and the stored tokens' ids,
        byte spans (relative to the window's first byte), the alignment of the student's positions and its
        prefix-space differences (`align_by_end`).

        Raises:
            BblError: the teacher's offsets cannot recover a line, the input exceeds the teacher's positions
                (names --context-tokens), or more than `teacher_tokens` teacher tokens (names --teacher-tokens).
        """
        cfg, off = self.config, self.offsets
        first, stop = w * cfg.seq_len, (w + 1) * cfg.seq_len
        win_start, win_end = int(off[first, 0]), int(off[stop - 1, 1])
        ctx_start = int(off[max(0, first - cfg.context_tokens), 0])
        seg_start, seg_end = _line_start(self.text, ctx_start), _line_end(self.text, win_end)
        lines = bytes(self.text[seg_start:seg_end]).decode("utf-8").splitlines(keepends=True)
        ids, spans = self._encode(lines, seg_start, w)
        starts, ends = spans[:, 0], spans[:, 1]
        i0 = int(np.searchsorted(starts, ctx_start, side="left"))
        inside = np.flatnonzero((np.arange(len(ids)) >= i0) & (ends <= win_end))
        i1 = int(inside[-1]) + 1 if len(inside) else i0
        later = np.flatnonzero(ends[i0:i1] > win_start)
        j0 = i0 + int(later[0]) if len(later) else i1
        if self.positions is not None and i1 - i0 > self.positions:
            raise BblError(f"{cfg.split} window {w}: {i1 - i0} teacher tokens (with context) exceed the teacher's "
                           f"{self.positions} positions; lower --context-tokens {cfg.context_tokens} or --seq-len")
        if i1 - j0 > cfg.teacher_tokens:
            raise BblError(f"{cfg.split} window {w} holds {i1 - j0} teacher tokens, more than --teacher-tokens "
                           f"{cfg.teacher_tokens}; raise --teacher-tokens")
        # a boundary after a token: the next token does not start inside it
        t_bound = np.append(starts[1:], np.iinfo(np.int64).max) >= ends
        nxt = off[first + 1:stop + 1, 0].astype(np.int64)
        s_spans = off[first:stop].astype(np.int64)
        s_bound = np.append(nxt, np.iinfo(np.int64).max)[:cfg.seq_len] >= s_spans[:, 1]
        # whether each side's next token begins with a space its tokenizer inserted (the token after the window's
        # last: the stream's next token; the teacher's, from the next line when the stored ones reach the lines' end)
        s_next = np.asarray(self.stream[first + 1:stop + 1], dtype=np.int64)
        s_next_space = np.zeros(cfg.seq_len, dtype=bool)
        s_next_space[:len(s_next)] = self.inserted_space(self.student_space[s_next], nxt)
        t_next_ids, t_next_starts = ids[j0 + 1:i1 + 1], starts[j0 + 1:i1 + 1]
        if i1 - j0 and i1 == len(ids) and seg_end < len(self.text):
            line = bytes(self.text[seg_end:_line_end(self.text, seg_end + 1)]).decode("utf-8")
            more_ids, more_spans = self._encode([line], seg_end, w)
            t_next_ids, t_next_starts = np.append(t_next_ids, more_ids[:1]), np.append(t_next_starts, more_spans[:1, 0])
        t_next_space = np.zeros(i1 - j0, dtype=bool)
        t_next_space[:len(t_next_ids)] = self.inserted_space(self.teacher_space[t_next_ids], t_next_starts)
        alignment, prefix_space = align_by_end(s_spans, s_bound, s_next_space, spans[j0:i1], t_bound[j0:i1],
                                               t_next_space)
        return {"input": ids[i0:i1], "offset": j0 - i0, "length": i1 - j0, "ids": ids[j0:i1],
                "spans": (spans[j0:i1] - win_start).astype(np.int32), "alignment": alignment,
                "prefix_space": prefix_space}

    def _encode(self, lines: list[str], base: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """The teacher's ids (n,) int64 and absolute byte spans (n, 2) int64 of `lines`, which start at byte `base`
        of the text, encoded line by line. Raises `BblError` (`check_spans`) naming window `w`."""
        ids, spans = [], []
        for line, enc in zip(lines, self.tokenizer.encode_batch(lines, add_special_tokens=False), strict=True):
            chars = token_char_spans(line, enc, self.tokenizer.normalizer)
            check_spans(line, chars, where=f"teacher tokenizer on {self.config.split} window {w}")
            ids += enc.ids
            spans.append(char_to_byte(line)[chars] + base)
            base += len(line.encode())
        return (np.asarray(ids, dtype=np.int64),
                np.concatenate(spans) if spans else np.zeros((0, 2), dtype=np.int64))


class CrossChunkComputer(ChunkComputer):
    """Computes a chunk of a cross-tokenizer cache; deterministic for given (teachers, data, config, device), so a
    resumed dump, any rank and `cache repair` write the same bytes. The whole chunk is made on the dump's main
    thread (`compute_targets`); its stored form is the chunk itself."""

    def __init__(self, teachers, infos, windows, config: CrossTokenizerConfig, *, data: PreparedData, tokenizer,
                 device: str, teacher_vocab: int, student_dtype=np.int64, teacher_dtype=np.int64):
        self.config, self.windows, self.tokenizer = config, windows, tokenizer
        self.plain = EnsembleChunkComputer(teachers, infos, windows, config.plain(), device=device,
                                           id_dtype=np.int64, vocab_size=teacher_vocab)
        self.side = TeacherText(data, config, tokenizer, positions=common_scoring_positions(teachers))
        self.student_dtype, self.teacher_dtype = student_dtype, teacher_dtype
        self.student_tokenizer = load_tokenizer(data.tokenizer_dir)
        self.student_vocab = data.vocab_size
        self.teacher_boundary = boundary_mask(tokenizer, teacher_vocab)

    def num_windows(self) -> int:
        return len(self.windows)

    def with_config(self, config: CrossTokenizerConfig) -> None:
        self.config = config
        self.plain.with_config(config.plain())

    def use_store(self, arrays: dict) -> None:
        self.student_dtype, self.teacher_dtype = arrays["input_ids"].dtype, arrays["teacher_ids"].dtype

    def static_arrays(self) -> dict:
        """The cache's static arrays: `teacher_to_student` (ids of equal byte strings, `vocab_correspondence`), the
        maps read where one side inserted a prefix space (`teacher_to_student_spaced` / `_unspaced`), and
        `student_boundary` (the student's boundary ids, `boundary_mask`; written where the cache records ALM's
        arrays)."""
        return {"teacher_to_student": vocab_correspondence(self.tokenizer, self.student_tokenizer),
                "teacher_to_student_spaced": vocab_correspondence(self.tokenizer, self.student_tokenizer,
                                                                  prefix_space=1),
                "teacher_to_student_unspaced": vocab_correspondence(self.tokenizer, self.student_tokenizer,
                                                                    prefix_space=-1),
                "student_boundary": boundary_mask(self.student_tokenizer, self.student_vocab)}

    def teacher_window(self, w: int) -> dict:
        return self.side.window(w)

    def compute_targets(self, c: int) -> CrossChunk:
        """Chunk `c` (teacher top-k ids sorted by id, log-probs on the `LOGPROB_STEP` grid, as a top-k cache)."""
        import torch

        cfg, rows = self.config, self.rows(c)
        n, width, k = len(rows), cfg.teacher_tokens, cfg.top_k
        windows = [int(self.windows.indices[i]) for i in rows]
        sides = [self.teacher_window(w) for w in windows]
        out = CrossChunk(
            index=c, input_ids=np.stack([self.windows.window(i) for i in rows]).astype(self.student_dtype),
            window_idx=np.asarray(windows, dtype=np.int64),
            teacher_lengths=np.asarray([t["length"] for t in sides], dtype=np.int32),
            teacher_ids=np.zeros((n, width), dtype=self.teacher_dtype), teacher_spans=np.zeros((n, width, 2), np.int32),
            alignment=np.stack([t["alignment"] for t in sides]),
            prefix_space=np.stack([t["prefix_space"] for t in sides]),
            teacher_topk_ids=np.zeros((n, width, k), dtype=np.int64),
            teacher_topk_logprobs=np.zeros((n, width, k), dtype=np.float32),
            teacher_tail_logprob=np.zeros((n, width), dtype=np.float32),
            teacher_token_logprob=np.zeros((n, width), dtype=np.float32),
            teacher_boundary_logprob=np.zeros((n, width), dtype=np.float32))
        kind = self.plain.draw_settings(c)
        for b in range(0, n, cfg.batch_size):
            group = sides[b:b + cfg.batch_size]
            padded = np.zeros((len(group), max(1, *(len(t["input"]) for t in group))), dtype=np.int64)
            for i, t in enumerate(group):
                padded[i, :len(t["input"])] = t["input"]
            outputs, heads = self.plain.batch_forward(torch.from_numpy(padded), first_row=rows[b])
            # the targets of the stored positions only: not of the left context nor of the padding
            stored = [torch.cat([x[i, t["offset"]:t["offset"] + t["length"]] for i, t in enumerate(group)])[None]
                      for x in outputs]
            got = {key: v[0].numpy() for key, v in self.plain.batch_ensemble((stored, heads), kind).items()}
            token, boundary = self.alm_values(group, outputs, heads)
            start = 0
            for i, t in enumerate(group):
                r, length = b + i, t["length"]
                out.teacher_ids[r, :length] = t["ids"]
                out.teacher_spans[r, :length] = t["spans"]
                out.teacher_topk_ids[r, :length] = got["topk_ids"][start:start + length]
                out.teacher_topk_logprobs[r, :length] = got["topk_logprobs"][start:start + length]
                out.teacher_tail_logprob[r, :length] = got["tail_logprob"][start:start + length]
                out.teacher_token_logprob[r, :length] = token[i]
                out.teacher_boundary_logprob[r, :length] = boundary[i]
                start += length
        ids, logprobs = sort_by_id(out.teacher_topk_ids, out.teacher_topk_logprobs)
        out.teacher_topk_ids, out.teacher_topk_logprobs = ids.astype(self.teacher_dtype), quantize_logprobs(logprobs)
        out.teacher_token_logprob = quantize_logprobs(out.teacher_token_logprob)
        out.teacher_boundary_logprob = quantize_logprobs(out.teacher_boundary_logprob)
        return out

    def alm_values(self, group: list[dict], outputs: list, heads: list) -> tuple[list, list]:
        """ALM's teacher values of a batch of windows (`ALM_ARRAYS`, before rounding): per window, (L,) float32
        log p_T(t_j | t_<j) of each stored token j at temperature 1, read at input position offset + j - 1 (NaN
        where that is before the input: no left context), and (L,) float32 boundary log-mass at offset + j.

        Args:
            group: the windows' `TeacherText.window` dicts, in batch order.
            outputs, heads: `batch_forward`'s result for the padded batch of their inputs.
        """
        import torch

        picks, next_ids, spans = [], [], []
        for i, t in enumerate(group):
            first = max(t["offset"] - 1, 0)  # the position predicting the first stored token, if any
            last = t["offset"] + t["length"]
            picks.append((i, first, last))
            next_ids.append(np.append(t["input"][first + 1:last], 0)[:last - first])  # the last predicts nothing stored
            spans.append(last - first)
        rows = [torch.cat([x[i, lo:hi] for i, lo, hi in picks]) for x in outputs]
        ids = torch.from_numpy(np.concatenate(next_ids).astype(np.int64))
        token, mass = self.plain.batch_token_logprobs(rows, heads, ids, torch.from_numpy(self.teacher_boundary))
        token, mass = token.numpy(), mass.numpy()
        tokens, masses, at = [], [], 0
        for t, (_, first, _), n in zip(group, picks, spans, strict=True):
            lp, bm = token[at:at + n], mass[at:at + n]
            skip = t["offset"] - first  # 1 when a context position predicts the first stored token, else 0
            tokens.append(np.concatenate([np.full(1 - skip, np.nan, np.float32), lp[:n - 1]])[:t["length"]]
                          if t["length"] else np.zeros(0, np.float32))
            masses.append(bm[skip:skip + t["length"]])
            at += n
        return tokens, masses


def align_by_end(student_spans, student_bound, student_next_space, teacher_spans, teacher_bound,
                 teacher_next_space) -> tuple[np.ndarray, np.ndarray]:
    """For each student position, the teacher position predicting from the same byte (or -1), and the prefix-space
    difference of what the two predict there.

    Both sides' tokens must end on that byte with no successor starting inside them (a boundary). Several tokens
    end on one byte where a tokenizer inserted a prefix space before a line's first word as a token of its own (a
    lone `Ġ` / `▁`, of empty span, `bbl.data.offsets.token_char_spans`): the text token before it predicts the
    line's first token, space included; the lone space predicts it without the space. So text tokens pair with
    text tokens and lone spaces with lone spaces, each from the last backwards; a student's lone space with no
    teacher one pairs with the teacher's text token when the teacher's next token has no inserted space (both then
    predict the line's first token without one). Others stay -1.

    Args:
        student_spans: (S, 2) int64 [start, end) bytes; student_bound: (S,) bool; student_next_space: (S,) bool,
            whether the token after each begins with an inserted prefix space (`TeacherText.inserted_space`).
        teacher_spans, teacher_bound, teacher_next_space: the same for the (L,) stored teacher tokens.
    Returns:
        alignment (S,) int32; prefix_space (S,) int8: student_next_space - teacher_next_space at aligned positions
        (+1: only the student's next token carries the inserted space, -1: only the teacher's), 0 elsewhere.
    """
    def by_end(spans, bound) -> dict[int, tuple[list[int], list[int]]]:
        out: dict[int, tuple[list[int], list[int]]] = {}
        for i in np.flatnonzero(bound):
            text, space = out.setdefault(int(spans[i, 1]), ([], []))
            (space if spans[i, 0] == spans[i, 1] else text).append(int(i))
        return out

    teacher = by_end(np.asarray(teacher_spans), np.asarray(teacher_bound, dtype=bool))
    alignment = np.full(len(student_spans), -1, dtype=np.int32)
    for e, (s_text, s_space) in by_end(np.asarray(student_spans), np.asarray(student_bound, dtype=bool)).items():
        t_text, t_space = teacher.get(e, ([], []))
        for ours, theirs in ((s_text, t_text), (s_space, t_space)):  # from the last backwards, while both have one
            for s, j in zip(reversed(ours), reversed(theirs), strict=False):
                alignment[s] = j
        if s_space and not t_space and t_text and not teacher_next_space[t_text[-1]]:
            alignment[s_space[-1]] = t_text[-1]
    prefix_space = np.zeros(len(student_spans), dtype=np.int8)
    at = alignment >= 0
    prefix_space[at] = (np.asarray(student_next_space, dtype=np.int8)[at]
                        - np.asarray(teacher_next_space, dtype=np.int8)[alignment[at]])
    return alignment, prefix_space


def recompute_sample(reader, teacher_dirs, *, sample: int = 16, seed: int = 0, device: str = "cpu") -> dict:
    """`sample` random rows recomputed from the recorded prepared dir and the teachers, one window at a time.

    Returns windows_checked; `pairs`: per row (exact log p_T at the stored ids, exact tail, stored log-probs,
    stored tail) over its stored teacher tokens, for `bbl.cache.verify`'s (k+1)-outcome KL; `problems`: lines for
    every row whose tokens, spans, alignment or student ids differ from the recomputation (these are exact);
    aligned_fraction over the sampled rows.

    Raises:
        BblError: the teachers' tokenizer is not the cache's, or the recorded prepared dir is gone or differs.
    """
    import torch

    from bbl.models.ensemble import logit_mean
    from bbl.models.teachers import teacher_logits

    attrs = reader.attrs
    config = CrossTokenizerConfig.from_attrs(attrs)
    data_dir = Path(attrs.get("data_dir", ""))
    if not (data_dir / "manifest.json").is_file():
        raise BblError(f"{data_dir}: the prepared dir this cache was dumped from is gone; verify where it exists")
    data = PreparedData(data_dir)
    if data.stream_sha256(config.split) != attrs.get("train_stream_sha256"):
        raise BblError(f"{data_dir}: {config.split} stream differs from the cache's")
    teachers, infos = load_teachers(list(teacher_dirs), device, dtype=teacher_dtype(config.plain()))
    windows = dump_windows(data, config.plain())
    OPERATIONS.check_teachers(teacher_dirs, infos, data, config, recorded=attrs)
    computer = OPERATIONS.computer(teachers, infos, windows, config.resolved(1), data=data,
                                   teacher_dirs=teacher_dirs, device=device)
    computer.use_store(reader.arrays)
    vocab = int(attrs["teacher_vocab_size"])
    rows = np.sort(np.random.default_rng(seed).choice(reader.num_windows, min(sample, reader.num_windows),
                                                      replace=False))
    pairs, problems, aligned, alm_errors = [], [], [], []
    alm_tolerance = LOGPROB_STEP
    with torch.inference_mode():
        for r in map(int, rows):
            row = {k: v[0] for k, v in reader.read(r, r + 1).items()}
            w = int(row["window_idx"])
            side = computer.teacher_window(w)
            length = int(row["teacher_lengths"])
            same = (length == side["length"] and np.array_equal(row["teacher_ids"][:length], side["ids"])
                    and np.array_equal(row["teacher_spans"][:length], side["spans"])
                    and np.array_equal(row["alignment"], side["alignment"])
                    and np.array_equal(row["prefix_space"], side["prefix_space"])
                    and np.array_equal(row["input_ids"], windows.window(r)))
            if not same:
                problems.append(f"row {r} (window {w}): teacher tokens, spans or alignment differ from a "
                                f"recomputation")
                continue
            aligned.append(row["alignment"] >= 0)
            ids = torch.from_numpy(side["input"][None]).to(device)
            logits = [teacher_logits(m, ids, vocab) for m in teachers]
            if has_alm(attrs):
                error = alm_error(row, side, logits, computer.teacher_boundary)
                alm_errors.append(error)
                if error > alm_tolerance:
                    problems.append(f"row {r} (window {w}): teacher token log-probs or boundary masses differ from "
                                    f"a recomputation by {error:.2e} nats (> {alm_tolerance:.2e})")
            mean = logit_mean(logits, temperature=config.temperature)
            logp = torch.log_softmax(mean, -1)[0, side["offset"]:side["offset"] + length]
            stored = torch.from_numpy(row["teacher_topk_ids"][:length].astype(np.int64)).to(logp.device)
            exact_at = logp.gather(-1, stored).cpu().numpy()
            exact_tail = torch.logsumexp(logp.scatter(-1, stored, float("-inf")), -1).cpu().numpy()
            pairs.append((exact_at, exact_tail, row["teacher_topk_logprobs"][:length].astype(np.float32),
                          row["teacher_tail_logprob"][:length]))
    out = {"windows_checked": len(rows), "pairs": pairs, "problems": problems,
           "aligned_fraction": float(np.concatenate(aligned).mean()) if aligned else 0.0}
    if alm_errors:
        out["max_abs_alm_error"] = max(alm_errors)
    return out


def alm_error(row: dict, side: dict, logits: list, boundary: np.ndarray) -> float:
    """The largest |stored - recomputed| of a row's ALM arrays (nats), beyond the fp16 rounding of the stored value
    (2^-11 of its size: the grid is finer than fp16 past 32 nats); NaN (no predicting position) must match."""
    import torch

    from bbl.models.ensemble import logit_mean

    length, offset = int(row["teacher_lengths"]), side["offset"]
    logp = torch.log_softmax(logit_mean(logits, temperature=1.0), -1)[0].double().cpu().numpy()
    positions = np.arange(length)
    token = np.full(length, np.nan)
    has = offset + positions - 1 >= 0
    token[has] = logp[offset + positions[has] - 1, side["ids"][has]]
    mass = np.logaddexp.reduce(np.where(boundary[None, :], logp[offset:offset + length], -np.inf), axis=-1)
    worst = 0.0
    for exact, name in ((token, "teacher_token_logprob"), (mass, "teacher_boundary_logprob")):
        stored = row[name][:length].astype(np.float64)
        if not np.array_equal(np.isnan(exact), np.isnan(stored)):
            return float("inf")
        ok = ~np.isnan(exact)
        excess = np.abs(exact[ok] - stored[ok]) - np.abs(exact[ok]) * 2.0 ** -11
        worst = max(worst, float(excess.max(initial=0.0)))
    return worst


class CrossTokenizerOperations(KindOperations):
    """The operations of the cross_tokenizer kind: teachers of their own tokenizer, aligned by bytes."""

    name = NAME
    config_class = CrossTokenizerConfig

    def check_inputs(self, teacher_dirs, data_dir: Path, config: CrossTokenizerConfig) -> None:
        """Before anything is written: a prepared dir with offsets, a fast teacher tokenizer, --topk within the
        teacher's vocabulary, and a tokenizer whose offsets recover the first windows' text."""
        data = PreparedData(data_dir)
        data.offsets(config.split, needed_by="a cross-tokenizer dump (--cross-tokenizer)")
        tokenizer = load_tokenizer(teacher_tokenizer(teacher_dirs))
        vocab = tokenizer.get_vocab_size()
        if config.top_k > vocab:
            raise BblError(f"--topk {config.top_k} exceeds the teacher's vocabulary ({vocab}); use --topk <= {vocab}")
        side = TeacherText(data, config, tokenizer)
        for w in dump_windows(data, config).indices[:PROBE_WINDOWS]:  # a tokenizer that drops text, at once
            side.window(int(w))

    def teacher_seq_len(self, config: CrossTokenizerConfig) -> None:
        return None  # the teacher's positions are checked per window (`TeacherText`), in its own tokens

    def check_teachers(self, teacher_dirs, infos, data, config, *, recorded: dict | None = None) -> None:
        if recorded is not None:
            fingerprint = tokenizer_fingerprint(teacher_tokenizer(teacher_dirs))
            if fingerprint != recorded.get("teacher_tokenizer_fingerprint"):
                raise BblError(f"{teacher_dirs[0]}: teacher tokenizer differs from the cache's; pass the cache's "
                               f"teachers")
            rule = recorded.get("alignment_rule")
            if rule != ALIGNMENT_RULE:
                raise BblError(f"the cache was dumped with alignment_rule {rule} (before bbl paired line starts and "
                               f"inserted prefix spaces as it does now, {ALIGNMENT_RULE}), so its rows cannot be "
                               f"recomputed; re-dump it (bbl dump-logits --cross-tokenizer ... --overwrite)")

    def computer(self, teachers, infos, windows, config: CrossTokenizerConfig, *, data: PreparedData, teacher_dirs,
                 device: str) -> CrossChunkComputer:
        tokenizer = load_tokenizer(teacher_tokenizer(teacher_dirs))
        return CrossChunkComputer(teachers, infos, windows, config, data=data, tokenizer=tokenizer, device=device,
                                  teacher_vocab=tokenizer.get_vocab_size())

    def attrs(self, config: CrossTokenizerConfig, data: PreparedData, infos: list[dict], *, teacher_dirs,
              device: str, data_dir: Path) -> dict:
        """The plain dump's attributes (`dump_attrs` of the top-k config) plus the cross-tokenizer ones."""
        tok_file = teacher_tokenizer(teacher_dirs)
        tokenizer = load_tokenizer(tok_file)
        attrs = dump_attrs(config.plain(), data, infos, device=device, data_dir=data_dir)
        attrs.update(targets=NAME, teacher_vocab_size=int(tokenizer.get_vocab_size()),
                     teacher_tokenizer_fingerprint=tokenizer_fingerprint(tok_file),
                     context_tokens=int(config.context_tokens), teacher_tokens=int(config.teacher_tokens),
                     dump_config=config.to_dict(), alignment_rule=ALIGNMENT_RULE, **{ALM_ATTR: True})
        return attrs

    def done_line(self, out, summary: dict) -> str:
        return (f"dumped {out}: {summary['windows']:,} windows, {summary['bytes']:,} bytes "
                f"({summary['bytes_per_token']:.1f} B/token), {summary['teacher_tokens_per_window']:.1f} teacher "
                f"tokens per window, aligned fraction {summary['aligned_fraction']:.4f} (student positions whose "
                f"token ends where a teacher token ends), {summary['seconds']:.1f}s")

    def recompute_sample(self, reader, teacher_dirs, *, sample: int, seed: int, device: str) -> dict:
        """`recompute_sample`'s rows, their top-k compared as a top-k cache's (`topk_fidelity`)."""
        r = recompute_sample(reader, teacher_dirs, sample=sample, seed=seed, device=device)
        return {**{k: v for k, v in r.items() if k != "pairs"}, **topk_fidelity(r["pairs"])}


OPERATIONS = CrossTokenizerOperations()

