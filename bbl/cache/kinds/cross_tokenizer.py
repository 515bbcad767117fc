"""The cross-tokenizer cache kind (`targets: cross_tokenizer`, issue 31; docs/cache-format.md): a teacher whose
tokenizer differs from the student's, its targets stored in its own vocabulary.

Per student window (row n): the teacher tokens of the window's text (`teacher_lengths[n]` of them, padded to
`teacher_tokens`), their ids and [start, end) byte spans relative to the window's first byte, the ensemble's top-k
ids, log-probs and tail mass at T per teacher token (stored as a top-k cache stores them), and `alignment[n, s]`:
the teacher position whose distribution predicts from the same byte as student position s (its token ends where
student token s ends, and neither token's successor overlaps it), or -1. `teacher_to_student` (static) maps each
teacher id to the student id with the same byte string, or -1. `exact_match_targets` turns a row into the
student-vocabulary top-k targets the (k+1)-outcome KL reads.

Dumps that record `alignment_rule: token_end_prefix_space` (all since issue 41) also store `prefix_space[n, s]`:
+1 where the student's next token begins with a space its tokenizer inserted before a line's first word and the
teacher's does not (GPT-2, LLaMA-3, Qwen: no prefix space), -1 the other way round, else 0; there the teacher's
ids are read through `teacher_to_student_spaced` (b -> the student's b" " + b) or `teacher_to_student_unspaced`
(b" " + b -> the student's b), both static. Caches written before hold neither and read as before.

Dumps that record `alm_targets: true` (all since ALM came in) also store, per teacher token, the teacher's T = 1
log-prob of that token and its T = 1 log-mass on the pretoken-boundary ids after it (`ALM_ARRAYS`), and the
student's boundary ids (`student_boundary`, static): what ALM reads (`alm_targets` turns a row into its chunks).
Caches written before hold neither and read as before.
"""

from __future__ import annotations

import numpy as np

from bbl.cache.format import DEFAULT_TOP_K, STORAGE_DEFAULTS, id_dtype
from bbl.cache.kinds.base import CacheKind
from bbl.errors import BblError

NAME = "cross_tokenizer"
ARRAYS = ("input_ids", "window_idx", "teacher_lengths", "teacher_ids", "teacher_spans", "alignment",
          "teacher_topk_ids", "teacher_topk_logprobs", "teacher_tail_logprob")
STATIC_ARRAYS = ("teacher_to_student",)
ALIGNMENT_RULE = "token_end_prefix_space"
"""The `alignment_rule` attribute of a dump since issue 41: tokens ending on one byte pair text token with text
token and inserted space with inserted space, and `PREFIX_SPACE_ARRAYS` / `PREFIX_SPACE_STATIC` are stored (a cache
recording `token_end`, the rule before, holds neither)."""
PREFIX_SPACE_ARRAYS = ("prefix_space",)
"""(N, S) int8 per student position: +1 / -1 / 0 (module docstring; docs/cache-format.md)."""
PREFIX_SPACE_STATIC = ("teacher_to_student_spaced", "teacher_to_student_unspaced")
"""(V_teacher,) int32 each: the student id of b" " + a teacher id's bytes b, and of the bytes after a teacher id's
leading space (`bbl.data.vocab.vocab_correspondence`'s prefix_space +1 / -1), -1 where none."""
ALM_ARRAYS = ("teacher_token_logprob", "teacher_boundary_logprob")
"""Per stored teacher token j, float16 on the cache's log-prob grid, both at temperature 1 whatever the dump's T:
log p_T(t_j | t_<j) from the distribution at position j - 1 (NaN for a first stored token no position predicts:
no left context), and log of p_T's mass on the teacher's boundary ids at position j (`bbl.data.boundary`)."""
ALM_STATIC = ("student_boundary",)
"""(V,) bool: the student ids in the student tokenizer's boundary set (`bbl.data.boundary.boundary_mask`)."""
ALM_ATTR = "alm_targets"
"""The attribute a dump that stores `ALM_ARRAYS` and `ALM_STATIC` records (true); absent in older caches."""
SETTING_KEYS = ("teacher_vocab_size", "teacher_tokenizer_fingerprint", "context_tokens", "teacher_tokens",
                "alignment_rule", ALM_ATTR)
DEFAULT_CONTEXT_TOKENS = 64
"""Student tokens of left context (from the stream, before the window) the teacher reads before the window's text,
so its first predictions are not made cold; their teacher tokens are input only, never stored."""


def has_prefix_space(attrs: dict) -> bool:
    """Whether a cache of these attributes stores the prefix-space arrays (`ALIGNMENT_RULE`)."""
    return attrs.get("alignment_rule") == ALIGNMENT_RULE


def has_alm(attrs: dict) -> bool:
    """Whether a cache of these attributes stores ALM's arrays (`ALM_ATTR`)."""
    return bool(attrs.get(ALM_ATTR))


def arrays(attrs: dict) -> tuple[str, ...]:
    """The per-window arrays of a cross-tokenizer cache: `ARRAYS`, plus `PREFIX_SPACE_ARRAYS` and `ALM_ARRAYS` where
    it records them."""
    return (ARRAYS + (PREFIX_SPACE_ARRAYS if has_prefix_space(attrs) else ())
            + (ALM_ARRAYS if has_alm(attrs) else ()))


def static_arrays(attrs: dict) -> tuple[str, ...]:
    """Its static arrays: `STATIC_ARRAYS`, plus `PREFIX_SPACE_STATIC` and `ALM_STATIC` where it records them."""
    return (STATIC_ARRAYS + (PREFIX_SPACE_STATIC if has_prefix_space(attrs) else ())
            + (ALM_STATIC if has_alm(attrs) else ()))


def array_specs(attrs: dict, n: int, chunk: int) -> dict:
    """{name: (shape, chunks, dtype, fill, shuffle)} of a cross-tokenizer cache's arrays (docs/cache-format.md)."""
    s, k, width = int(attrs["seq_len"]), int(attrs["top_k"]), int(attrs["teacher_tokens"])
    student, teacher = id_dtype(int(attrs["vocab_size"])), id_dtype(int(attrs["teacher_vocab_size"]))
    i32, vt = np.dtype(np.int32), int(attrs["teacher_vocab_size"])
    spaced = {} if not has_prefix_space(attrs) else {
        "prefix_space": ((n, s), (chunk, s), np.dtype(np.int8), 0, "shuffle"),
        **{name: ((vt,), (vt,), i32, -1, "shuffle") for name in PREFIX_SPACE_STATIC}}
    alm = {} if not has_alm(attrs) else {
        **{name: ((n, width), (chunk, width), np.dtype(np.float16), 0.0, "bitshuffle") for name in ALM_ARRAYS},
        "student_boundary": ((int(attrs["vocab_size"]),), (int(attrs["vocab_size"]),), np.dtype(bool), False, "shuffle"),
    }
    return {
        "input_ids": ((n, s), (chunk, s), student, 0, "shuffle"),
        "window_idx": ((n,), (chunk,), np.dtype(np.int64), -1, "shuffle"),
        "teacher_lengths": ((n,), (chunk,), i32, 0, "shuffle"),
        "teacher_ids": ((n, width), (chunk, width), teacher, 0, "shuffle"),
        "teacher_spans": ((n, width, 2), (chunk, width, 2), i32, 0, "shuffle"),
        "alignment": ((n, s), (chunk, s), i32, -1, "shuffle"),
        "teacher_topk_ids": ((n, width, k), (chunk, width, k), teacher, 0, "shuffle"),
        "teacher_topk_logprobs": ((n, width, k), (chunk, width, k), np.dtype(np.float16), 0.0, "bitshuffle"),
        "teacher_tail_logprob": ((n, width), (chunk, width), np.dtype(np.float32), 0.0, "bitshuffle"),
        "teacher_to_student": ((int(attrs["teacher_vocab_size"]),), (int(attrs["teacher_vocab_size"]),), i32, -1,
                               "shuffle"),
        **spaced,
        **alm,
    }


def describe(attrs: dict) -> str:
    alm = " + T=1 token log-prob and boundary mass (ALM)" if has_alm(attrs) else ""
    return (f"top_k {attrs['top_k']} + tail mass{alm} per teacher token, teacher vocab {attrs['teacher_vocab_size']}, "
            f"{attrs['context_tokens']} tokens of context, <= {attrs['teacher_tokens']} teacher tokens per window")


def stats(reader, chunks) -> dict:
    """Aligned fraction (student positions with an aligned teacher position), teacher tokens per window, the
    teacher top-k mass over stored teacher tokens, and the share of teacher ids with a student twin."""
    cw = reader.chunk_windows
    aligned, lengths, tails = [], [], []
    for c in chunks:
        rows = reader.read(c * cw, (c + 1) * cw)
        aligned.append(rows["alignment"].ravel() >= 0)
        lengths.append(rows["teacher_lengths"])
        valid = np.arange(rows["teacher_tail_logprob"].shape[1])[None, :] < rows["teacher_lengths"][:, None]
        tails.append(rows["teacher_tail_logprob"][valid])
    mapping = reader.read_static("teacher_to_student")
    mass = -np.expm1(np.concatenate(tails).astype(np.float64)) if tails else np.zeros(0)
    out = {"aligned_fraction": float(np.concatenate(aligned).mean()) if aligned else 0.0,
           "teacher_tokens_per_window": float(np.concatenate(lengths).mean()) if lengths else 0.0,
           "teacher_topk_mass_mean": float(mass.mean()) if mass.size else 0.0,
           "teacher_ids_with_student_twin": float((mapping >= 0).mean())}
    if has_alm(reader.attrs):
        out.update(alm_stats(reader, chunks))
    return out


def alm_stats(reader, chunks) -> dict:
    """ALM's arrays over the stored teacher tokens: the teacher's mean T = 1 loss per own token (nats, over the
    tokens a position predicts) and its mean boundary mass."""
    cw = reader.chunk_windows
    token, boundary = [], []
    for c in chunks:
        first, stop = c * cw, min((c + 1) * cw, reader.num_windows)
        lengths = reader.read_array("teacher_lengths", first, stop)
        rows = {name: reader.read_array(name, first, stop) for name in ALM_ARRAYS}
        valid = np.arange(rows["teacher_token_logprob"].shape[1])[None, :] < lengths[:, None]
        token.append(rows["teacher_token_logprob"][valid].astype(np.float64))
        boundary.append(rows["teacher_boundary_logprob"][valid].astype(np.float64))
    token = np.concatenate(token) if token else np.zeros(0)
    token = token[np.isfinite(token)]
    boundary = np.concatenate(boundary) if boundary else np.zeros(0)
    return {"teacher_nats_per_token": float(-token.mean()) if token.size else 0.0,
            "teacher_boundary_mass_mean": float(np.exp(boundary).mean()) if boundary.size else 0.0}




def training_item(row: dict, static: dict) -> dict:
    """What distillation reads from one row (`bbl.losses.cross_tokenizer`): the exact-match targets (topk_ids
    (S, K) int64, topk_logprobs (S, K) float32, tail_logprob (S,) float32, `exact_match_targets`), `aligned` (S,)
    bool, the aligned teacher position's own top-k log-probs and tail for ULD (uld_topk_logprobs,
    uld_tail_logprob; zeros where not aligned) and which of those ids has a student twin for GOLD (uld_matched
    (S, K) bool, read through the position's map as the exact-match targets are; false where not aligned); where the
    cache stores ALM's arrays, ALM's chunks (`alm_targets`)."""
    rows = {k: v[None] for k, v in row.items()}
    exact = exact_match_targets(rows, static["teacher_to_student"], **_line_start_maps(static))
    aligned = exact["aligned"][0]
    j = np.where(aligned, row["alignment"], 0)
    uld_top = np.where(aligned[:, None], row["teacher_topk_logprobs"][j].astype(np.float32), np.float32(-np.inf))
    twins = student_ids(row["teacher_topk_ids"][j], row.get("prefix_space"), static["teacher_to_student"],
                        **_line_start_maps(static))
    return {"topk_ids": exact["topk_ids"][0], "topk_logprobs": exact["topk_logprobs"][0].astype(np.float32),
            "tail_logprob": exact["tail_logprob"][0], "aligned": aligned, "uld_topk_logprobs": uld_top,
            "uld_tail_logprob": np.where(aligned, row["teacher_tail_logprob"][j], 0).astype(np.float32),
            "uld_matched": aligned[:, None] & (twins >= 0), **(alm_targets(row) if ALM_ARRAYS[0] in row else {})}


def alm_targets(row: dict) -> dict:
    """ALM's chunks of one cross-tokenizer row, as (S,) arrays at the student position that ends each chunk.

    The chunks are the stored alignment's (ALM's shared boundaries, Minixhofer et al. 2025, Section 3; tokenkit
    `align.get_unconstrained_alignments`): between consecutive aligned pairs (s', j') < (s, j), chunk k holds the
    student tokens s'+1..s and the teacher tokens j'+1..j, which cover the same bytes. The chunk before the first
    aligned pair is left out (the student's first token has no log-prob in its window), and so is any chunk whose
    teacher side holds a token without a log-prob (NaN) or no token.

    Args:
        row: one row of the arrays (`CacheReader.read`), with `ALM_ARRAYS`.
    Returns:
        alm_next_ids (S,) int64: the student token position s predicts (input_ids[s + 1]; 0 at the last);
        alm_start (S,) int64: at a chunk's last student position s, the previous aligned position s' (the chunk's
        student tokens are s'+1..s, their log-probs read at positions s'..s-1); -1 elsewhere;
        alm_teacher_logprob (S,) float32: there, the chunk's teacher log-likelihood Σ_j log p_T(t_j | t_<j),
        clamped to <= 0 (nats, T = 1); 0 elsewhere;
        alm_teacher_boundary (S,) float32: there, the teacher's boundary log-mass after the chunk's last teacher
        token (clamped to <= 0); 0 elsewhere.
    """
    ids = row["input_ids"].astype(np.int64)
    s_len = len(ids)
    align = row["alignment"].astype(np.int64)
    token = row["teacher_token_logprob"].astype(np.float64)
    boundary = row["teacher_boundary_logprob"].astype(np.float64)
    start = np.full(s_len, -1, dtype=np.int64)
    teacher = np.zeros(s_len, dtype=np.float32)
    debias = np.zeros(s_len, dtype=np.float32)
    ends = np.flatnonzero(align >= 0)
    if len(ends) >= 2:
        js = align[ends]
        missing = np.concatenate([[0], np.cumsum(np.isnan(token))])
        summed = np.concatenate([[0.0], np.cumsum(np.nan_to_num(np.minimum(token, 0.0), nan=0.0))])
        lo, hi = js[:-1] + 1, js[1:] + 1  # teacher tokens [lo, hi) of each chunk after the first
        ok = (hi > lo) & (missing[hi] == missing[lo])
        at = ends[1:]
        start[at] = np.where(ok, ends[:-1], -1)
        teacher[at] = np.where(ok, np.minimum(summed[hi] - summed[lo], 0.0), 0.0)
        debias[at] = np.where(ok, np.minimum(boundary[js[1:]], 0.0), 0.0)
    return {"alm_next_ids": np.append(ids[1:], 0), "alm_start": start, "alm_teacher_logprob": teacher,
            "alm_teacher_boundary": debias}


def _line_start_maps(static: dict) -> dict:
    return {"spaced": static.get("teacher_to_student_spaced"), "unspaced": static.get("teacher_to_student_unspaced")}


def check_config(config) -> None:
    """A cross-tokenizer dump stores top-k targets at every position in the default stored form: settle top_k and
    refuse the options that do not apply to it (one line naming each)."""
    config.top_k = DEFAULT_TOP_K if config.top_k is None else config.top_k
    if config.top_k < 1:
        raise BblError(f"--topk {config.top_k} must be >= 1")
    if config.num_samples:
        raise BblError(f"--samples {config.num_samples} does not apply to --targets {NAME} (it stores top-k "
                       f"targets); drop --samples")
    config.num_samples = 0
    for name, default in STORAGE_DEFAULTS.items():
        if getattr(config, name) != default:
            raise BblError(f"--{name.replace('_', '-')} does not apply to --targets {NAME} yet; drop it")


KIND = CacheKind(name=NAME, arrays=arrays, static_arrays=static_arrays, setting_keys=SETTING_KEYS,
                 array_specs=array_specs, describe=describe, stats=stats, training_item=training_item,
                 kd_variants=("exact_match", "uld", "gold", "alm"), check_config=check_config)


def student_ids(teacher_ids: np.ndarray, prefix_space, teacher_to_student: np.ndarray, *, spaced=None,
                unspaced=None) -> np.ndarray:
    """The student id each teacher id stands for at its position, -1 where none: through `teacher_to_student`, and
    where `prefix_space` is +1 / -1 through `spaced` / `unspaced` (the static maps of `PREFIX_SPACE_STATIC`).

    Args:
        teacher_ids: (..., K) int teacher ids. prefix_space: (...) int8 (or None: every position 0).
        teacher_to_student, spaced, unspaced: (V_teacher,) int32.
    Returns:
        (..., K) int64.
    Raises:
        BblError: a position of prefix_space +1 / -1 without its map (a cache missing its static arrays).
    """
    ids = np.asarray(teacher_ids).astype(np.int64)
    out = teacher_to_student[ids].astype(np.int64)
    if prefix_space is None or not np.any(prefix_space):
        return out
    flag = np.asarray(prefix_space)[..., None]
    for value, table, name in ((1, spaced, PREFIX_SPACE_STATIC[0]), (-1, unspaced, PREFIX_SPACE_STATIC[1])):
        if (flag == value).any():
            if table is None:
                raise BblError(f"prefix_space {value:+d} needs the static array {name}, which is missing")
            out = np.where(flag == value, table[ids].astype(np.int64), out)
    return out


def exact_match_targets(rows: dict, teacher_to_student: np.ndarray, *, spaced=None, unspaced=None) -> dict:
    """The student-vocabulary top-k targets of a cross-tokenizer row at its aligned positions (exact-match KL).

    At student position s aligned to teacher position j, each of the teacher's top-k ids with a student twin (same
    byte string, `teacher_to_student`; at a line start where only one side inserted a prefix space, the space-shifted
    twin: `student_ids`) keeps its log-prob under the twin's id; the mass of the others joins the tail (logsumexp,
    as the dump computes the tail). Teacher ids sharing a twin (a byte-fallback vocabulary's `A` and `<0x41>`) are
    merged into one slot holding their summed mass (logaddexp), so every student id appears once, as the
    (k+1)-outcome KL's rest mass assumes (`bbl.losses.coarse.student_rest_logprob`). Ids are re-sorted ascending
    (the cache's `TOPK_ORDER`); an unmapped or merged-away slot holds id 0 and log-prob -inf (no mass), after the
    others. With the student's own tokenizer as the teacher's, every id maps to itself and this equals the ordinary
    top-k cache bit for bit.

    Args:
        rows: the cache's arrays for (N, ...) windows (`CacheReader.read`); `prefix_space` (N, S) is read when
            present.
        teacher_to_student: (V_teacher,) int32. spaced, unspaced: the `PREFIX_SPACE_STATIC` maps (needed where
            `prefix_space` is nonzero).
    Returns:
        topk_ids (N, S, K) int64, topk_logprobs (N, S, K) float16 (-inf where unmapped, merged away or not
        aligned), tail_logprob (N, S) float32 (0 where not aligned), aligned (N, S) bool.
    Raises:
        BblError: as `student_ids`.
    """
    align = rows["alignment"].astype(np.int64)
    aligned = align >= 0
    j = np.where(aligned, align, 0)
    at = np.arange(len(align))[:, None]
    ids = rows["teacher_topk_ids"][at, j].astype(np.int64)              # (N, S, K) teacher ids
    logp = rows["teacher_topk_logprobs"][at, j]                         # (N, S, K) float16
    tail = rows["teacher_tail_logprob"][at, j].astype(np.float32)       # (N, S)
    flags = rows.get("prefix_space")
    flags = None if flags is None else np.where(aligned, flags, 0)
    student = student_ids(ids, flags, teacher_to_student, spaced=spaced, unspaced=unspaced)
    mapped = student >= 0
    if not mapped.all():
        lost = np.where(mapped, -np.inf, logp.astype(np.float32))
        with np.errstate(divide="ignore"):
            tail = np.logaddexp(tail, np.logaddexp.reduce(lost, axis=-1)).astype(np.float32)
    student = np.where(mapped, student, 0)
    logp = np.where(mapped, logp, np.float16(-np.inf)).astype(np.float16)
    key = np.where(mapped, student, np.iinfo(np.int64).max)
    order = np.argsort(key, axis=-1, kind="stable")
    student, logp, key = (np.take_along_axis(x, order, -1) for x in (student, logp, key))
    repeat = np.zeros_like(mapped)
    repeat[..., 1:] = (key[..., 1:] == key[..., :-1]) & (key[..., 1:] != np.iinfo(np.int64).max)
    if repeat.any():
        student, logp = _merge_repeats(student, logp, repeat)
    logp = np.where(aligned[..., None], logp, np.float16(-np.inf)).astype(np.float16)
    return {"topk_ids": student, "topk_logprobs": logp, "tail_logprob": np.where(aligned, tail, 0).astype(np.float32),
            "aligned": aligned}


def _merge_repeats(student: np.ndarray, logp: np.ndarray, repeat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slots sorted by student id, `repeat` marking a slot whose id equals the one before: each run's log-probs
    summed (logaddexp, in float32) into its first slot, the repeats freed (id 0, -inf) and moved after the rest."""
    k = student.shape[-1]
    run = np.cumsum(~repeat, axis=-1) - 1                              # run index of each slot within its row
    flat_rows = np.arange(student.size // k).reshape(student.shape[:-1])[..., None] * k
    merged = np.full(student.size, -np.inf, dtype=np.float32)
    np.logaddexp.at(merged, (flat_rows + run).ravel(), logp.astype(np.float32).ravel())
    merged = merged.reshape(student.shape)
    first = ~repeat
    logp = np.where(first, np.take_along_axis(merged, run, -1), -np.inf).astype(np.float16)
    student = np.where(first, student, 0)
    order = np.argsort(repeat, axis=-1, kind="stable")                # kept slots first, in id order
    return np.take_along_axis(student, order, -1), np.take_along_axis(logp, order, -1)


__all__ = ["ALIGNMENT_RULE", "ALM_ARRAYS", "ALM_ATTR", "ALM_STATIC", "ARRAYS", "KIND", "NAME", "PREFIX_SPACE_ARRAYS",
           "PREFIX_SPACE_STATIC", "STATIC_ARRAYS", "alm_targets", "exact_match_targets", "has_alm", "student_ids"]
