"""`bbl cache verify`: every chunk present and passing its checksum, and, with the teachers, the stored targets
against a recomputation (log-prob error and KL for top-k targets, a z-score of the draws for sampled ones).

`verify_cache` is the whole policy (what passes, what the user is told); the CLI prints its lines and exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bbl.cache.integrity import repair_command
from bbl.cache.kinds.operations import kind_operations
from bbl.cache.reader import CacheReader
from bbl.data.tokenizer import check_same_tokenizer
from bbl.models.ensemble import logit_mean
from bbl.models.teachers import load_teachers, teacher_logits, teachers_match

MAX_DRAWS_Z = 5.0
"""`cache verify --teacher` fails a sampled/hybrid cache whose draws' coverage z-score passes this (honest draws:
|z| > 5 with probability ~6e-7)."""
DEFAULT_MAX_KL = 1e-3
"""`cache verify --teacher` fails a top-k cache whose mean KL to the recomputed targets passes this (nats)."""
MAX_LOGPROB_ERROR = {"float32": 0.05, "other": 0.3}
"""`cache verify --teacher` fails a cache whose largest |stored - recomputed| log-prob passes this (nats), by the
dump's teacher precision (`dump_dtype`): a float32 dump's error is the grid's half step (2^-7) plus float16's spacing
at the lowest stored log-probs (2^-6 below -32); a bf16/fp16 dump adds the teachers' own rounding. The wrong teachers
give 0.1-1 nats."""


def max_logprob_error(attrs: dict) -> float:
    """The default `--max-logprob-error` of a cache (`MAX_LOGPROB_ERROR` by its recorded `dump_dtype`)."""
    return MAX_LOGPROB_ERROR["float32" if attrs.get("dump_dtype") in (None, "float32", "fp32") else "other"]


@dataclass
class VerifyReport:
    """What `bbl cache verify` found: `ok`, the lines for stdout (`info`) and for stderr (`problems`)."""

    ok: bool = True
    info: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    fidelity: dict = field(default_factory=dict)

    def fail(self, line: str) -> None:
        self.ok = False
        self.problems.append(line)


def verify_cache(path, *, teacher_dirs=(), sample: int = 16, max_kl: float = DEFAULT_MAX_KL,
                 max_error: float | None = None, progress: bool = True) -> VerifyReport:
    """Check a cache: every chunk of every array present and passing its crc32c, the store marked complete, and,
    with `teacher_dirs` (on an undamaged cache): first that they are the teachers the cache records (weights
    sha256, `teachers_match`; no number is computed with others), then `verify_against_teachers` within `max_kl`
    (mean KL, nats), `max_error` (max |log-prob error|, nats; None: `max_logprob_error` of the cache) and
    `MAX_DRAWS_Z`. A damaged cache's report names each problem and the `bbl cache repair` command.

    Raises:
        BblError: no cache at `path`; the teachers' tokenizer differs from the cache's.
    """
    report = VerifyReport()
    reader = CacheReader(path, allow_incomplete=True)
    problems = reader.scan(progress=progress)
    for p in problems:
        report.fail(f"bad: {path}: {p}")
    if problems:
        report.problems.append(f"fix: {repair_command(path, reader.attrs)}")
    else:
        report.info.append(f"chunks: all {reader.num_chunks} chunks of every array of {path} present, checksums OK")
    if not reader.attrs.get("complete"):
        report.fail(f"bad: {path}: not marked complete; re-run dump-logits to finish it")
    if not teacher_dirs or problems:
        return report
    mismatch = teachers_match(reader.attrs.get("teachers") or [], teacher_dirs)
    if mismatch:
        report.fail(f"bad: {path}: {mismatch}")
        return report
    r = report.fidelity = verify_against_teachers(reader, list(teacher_dirs), sample=sample)
    for line in r.pop("problems", []):
        report.fail(f"bad: {path}: {line}")
    if "aligned_fraction" in r:
        report.info.append(f"alignment over {r['windows_checked']} windows: tokens, spans and alignment equal a "
                           f"recomputation; aligned fraction {r['aligned_fraction']:.4f}")
    if "mean_kl" in r:
        report.info.append(
            f"fidelity over {r['windows_checked']} windows: max |log-prob error| {r['max_abs_logprob_error']:.2e} "
            f"nats, KL after renormalising the k+1 outcomes: mean {r['mean_kl']:.2e} nats (max {r['max_kl']:.2e}), "
            f"mass defect mean {r['mean_mass_defect']:.2e} (max {r['max_mass_defect']:.2e})")
        if r["mean_kl"] > max_kl:
            report.fail(f"bad: {path}: mean KL {r['mean_kl']:.2e} nats exceeds --max-kl {max_kl:g}")
        tolerance = max_logprob_error(reader.attrs) if max_error is None else max_error
        if r["max_abs_logprob_error"] > tolerance:
            report.fail(f"bad: {path}: max |log-prob error| {r['max_abs_logprob_error']:.2e} nats exceeds "
                        f"--max-logprob-error {tolerance:g}")
    if "kd_mask_errors" in r:
        report.info.append(f"kd_mask over {r['windows_checked']} windows: the {reader.kd_fraction:g} of positions of "
                           f"highest teacher entropy, {r['kd_mask_errors']} position(s) otherwise")
        if r["kd_mask_errors"]:
            report.fail(f"bad: {path}: kd_mask differs from the highest-entropy positions at {r['kd_mask_errors']} "
                        f"position(s)")
    if "draws_z" in r:
        report.info.append(
            f"draws over {r['windows_checked']} windows: distinct drawn ids cover {r['mean_covered_mass']:.4f} of "
            f"the mass (honest draws: {r['mean_expected_mass']:.4f}, z = {r['draws_z']:+.2f}; fails beyond |z| > "
            f"{MAX_DRAWS_Z:g}); total variation to p_T {r['mean_total_variation']:.4f}")
        if abs(r["draws_z"]) > MAX_DRAWS_Z:
            report.fail(f"bad: {path}: the draws' z-score {r['draws_z']:+.2f} is beyond {MAX_DRAWS_Z:g}")
    return report


def verify_chunks(reader: CacheReader) -> list[str]:
    """Decode every chunk of every array (crc32c is checked on decode); one problem string per missing, corrupt
    or unfinished chunk."""
    return [str(p) for p in reader.scan()]


def _coarse_logprobs(logprobs_at_ids: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """(..., K+1) float64 log-probabilities of {top-k ids, rest}, renormalised to sum to exactly 1."""
    lp = np.concatenate([logprobs_at_ids.astype(np.float64), tail.astype(np.float64)[..., None]], -1)
    top = lp.max(-1, keepdims=True)
    return lp - (top + np.log(np.exp(lp - top).sum(-1, keepdims=True)))


def coarse_kl(exact_logprobs_at_ids, exact_tail, stored_logprobs, stored_tail) -> np.ndarray:
    """KL(exact ‖ stored) of the (k+1)-outcome distributions {top-k ids, rest}, per position (nats, >= 0).

    Both sides are renormalised over their k+1 outcomes first: the stored log-probs are rounded (float16 on the
    `LOGPROB_STEP` grid), so they do not sum to exactly 1, and a "KL" against an unnormalised vector can be
    negative. After renormalising this is a true KL between distributions, hence never negative (float64 rounding
    below 1e-15 is clipped at 0). The mass the rounding adds or removes is reported by `mass_defect`.

    Computed in float64 by the KD loss's own (k+1) KL (`bbl.losses.divergences.coarse_kl`).

    Args: (..., K) and (...) float arrays of log-probabilities; -inf tails (K == V) contribute 0.
    Returns: (...) float64 array, nats.
    """
    import torch

    from bbl.losses.divergences import coarse_kl as kl_of_coarsenings

    pe = torch.from_numpy(_coarse_logprobs(exact_logprobs_at_ids, exact_tail))
    ps = torch.from_numpy(_coarse_logprobs(stored_logprobs, stored_tail))
    kl = kl_of_coarsenings(pe[..., :-1], pe[..., -1], ps[..., :-1], ps[..., -1]).numpy()
    return np.maximum(kl, 0.0)


def mass_defect(stored_logprobs, stored_tail) -> np.ndarray:
    """|1 - (Σ stored top-k probabilities + stored tail mass)| per position: what quantisation adds or removes."""
    lp = np.concatenate([stored_logprobs.astype(np.float64), stored_tail.astype(np.float64)[..., None]], -1)
    return np.abs(1.0 - np.exp(lp).sum(-1))


def verify_against_teachers(reader: CacheReader, teacher_dirs: list[Path], *, sample: int = 16, seed: int = 0,
                            device: str = "cpu") -> dict:
    """Recompute `sample` random windows with the teachers and compare with what the cache stores.

    Returns windows_checked and, for top-k and hybrid caches, max_abs_logprob_error (nats, over the stored top-k
    ids), mean_kl / max_kl (`coarse_kl`, nats, never negative) and mean / max mass_defect (`mass_defect`); for
    sampled and hybrid caches, `draws_z` (`draws_check`: are the stored draws distributed as the teachers' p_T?)
    and mean_total_variation (½ Σ |p_T - r| between the teachers' p_T and the target r the loss uses).

    Raises:
        BblError: the teachers' tokenizer differs from the cache's.
    """
    import torch

    ops = kind_operations(reader.targets)
    if ops is not None:  # a registered kind recomputes its own rows; their top-k are compared as a top-k cache's
        r = ops.recompute_sample(reader, teacher_dirs, sample=sample, seed=seed, device=device)
        return {**{k: v for k, v in r.items() if k != "pairs"}, **topk_fidelity(r.pop("pairs"))}
    teachers, infos = load_teachers(teacher_dirs, device)
    check_same_tokenizer(infos[0]["tokenizer_fingerprint"], reader.attrs.get("tokenizer_fingerprint"),
                         subject=f"{teacher_dirs[0]}: teacher", reference="the cache's", fix="pass the cache's teachers")
    rows = np.sort(np.random.default_rng(seed).choice(reader.num_windows, min(sample, reader.num_windows),
                                                      replace=False))
    max_err, kls, defects, coverage, tvs, mask_errors = 0.0, [], [], [], [], 0
    with torch.inference_mode():
        for r in rows:
            row = reader.read(int(r), int(r) + 1)
            ids = torch.from_numpy(row["input_ids"].astype(np.int64)).to(device)
            mean = logit_mean([teacher_logits(m, ids, reader.vocab_size) for m in teachers],
                              temperature=reader.temperature)
            logp = torch.log_softmax(mean, -1)[0]
            if "kd_mask" in row:  # --kd-fraction: the mask is the documented selection; targets checked where kept
                keep = row.pop("kd_mask")[0].astype(bool)
                entropy = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1).double().cpu().numpy()
                mask_errors += kd_mask_errors(keep, entropy, reader.kd_fraction)
                logp = logp[torch.from_numpy(keep).to(logp.device)]
                row = {k: v if k == "window_idx" else v[:, keep] for k, v in row.items()}
            if "sample_ids" in row:  # one window's (S, V) p_T at a time, never all windows' at once
                p, flat = logp.exp().double().cpu().numpy(), {k: v[0] for k, v in row.items() if k != "window_idx"}
                coverage.append(drawn_coverage(p, flat))
                tvs.append(total_variation(p, flat))
            if "topk_ids" not in row:
                continue
            stored_ids = torch.from_numpy(row["topk_ids"][0].astype(np.int64)).to(logp.device)
            exact_at = logp.gather(-1, stored_ids).cpu().numpy()
            # exact mass outside the *stored* ids, by logsumexp over the rest, as the dump computes it
            exact_tail = torch.logsumexp(logp.scatter(-1, stored_ids, float("-inf")), -1).cpu().numpy()
            stored_lp = row["topk_logprobs"][0].astype(np.float32)
            max_err = max(max_err, float(np.abs(exact_at - stored_lp).max()))
            kls.append(coarse_kl(exact_at, exact_tail, stored_lp, row["tail_logprob"][0]))
            defects.append(mass_defect(stored_lp, row["tail_logprob"][0]))
    out: dict = {"windows_checked": len(rows)}
    if "kd_mask" in reader.arrays:
        out["kd_mask_errors"] = mask_errors
    if kls:
        kl, defect = np.concatenate(kls), np.concatenate(defects)
        out.update({"max_abs_logprob_error": max_err, "mean_kl": float(kl.mean()), "max_kl": float(kl.max()),
                    "mean_mass_defect": float(defect.mean()), "max_mass_defect": float(defect.max())})
    if coverage:
        out.update(coverage_z(np.concatenate([c for c, _ in coverage]), np.concatenate([e for _, e in coverage])))
        out["mean_total_variation"] = float(np.concatenate(tvs).mean())
    return out


def topk_fidelity(pairs) -> dict:
    """`verify_against_teachers`'s top-k figures (max_abs_logprob_error, mean/max `coarse_kl`, mean/max
    `mass_defect`) over (exact log-probs at the stored ids, exact tail, stored log-probs, stored tail) per row."""
    if not pairs:
        return {}
    kl = np.concatenate([coarse_kl(*p) for p in pairs])
    defect = np.concatenate([mass_defect(p[2], p[3]) for p in pairs])
    return {"max_abs_logprob_error": max(float(np.abs(p[0] - p[2]).max(initial=0.0)) for p in pairs),
            "mean_kl": float(kl.mean()), "max_kl": float(kl.max()), "mean_mass_defect": float(defect.mean()),
            "max_mass_defect": float(defect.max())}


KD_MASK_ENTROPY_TOLERANCE = 1e-4
"""nats: a position whose entropy is this close to its window's selection threshold may fall either side of it
(the dump's chunked fp32 sums and this recomputation differ in rounding), so it is not counted as an error."""


def kd_mask_errors(stored: np.ndarray, entropy: np.ndarray, fraction: float) -> int:
    """Positions of one window whose stored `kd_mask` differs from `select_positions` of the recomputed entropy
    (S,) by more than rounding (`KD_MASK_ENTROPY_TOLERANCE` around the threshold)."""
    from bbl.cache.format import select_positions

    want = select_positions(entropy[None], fraction)[0]
    threshold = np.sort(entropy)[::-1][want.sum() - 1]
    wrong = (stored != want) & (np.abs(entropy - threshold) > KD_MASK_ENTROPY_TOLERANCE)
    return int(wrong.sum()) + int(stored.sum() != want.sum())


def target_distribution(rows: dict, vocab_size: int) -> np.ndarray:
    """(positions, V) float64: the distribution r the KD loss pulls a sampled or hybrid cache's student toward.

    sampled: c_i / N on the drawn ids; hybrid: exp(top-k log-probs) on the k ids plus tail mass * c_j / N on the
    drawn tail ids; top-k: the k ids' probabilities and nothing elsewhere (the tail is one lumped outcome, its
    shape inside the vocabulary is the student's own). Rows: the cache's arrays, flattened to positions.
    """
    n = len(rows["input_ids"].reshape(-1))
    r = np.zeros((n, vocab_size))
    at = np.arange(n)[:, None]
    if "topk_ids" in rows:
        np.add.at(r, (at, rows["topk_ids"].reshape(n, -1).astype(np.int64)),
                  np.exp(rows["topk_logprobs"].reshape(n, -1).astype(np.float64)))
    if "sample_ids" in rows:
        draws = rows["sample_ids"].reshape(n, -1).astype(np.int64)
        mass = np.exp(rows["tail_logprob"].reshape(n, 1).astype(np.float64)) if "topk_ids" in rows else 1.0
        np.add.at(r, (at, draws), np.broadcast_to(mass / draws.shape[1], draws.shape))
    return r


def total_variation(p: np.ndarray, rows: dict) -> np.ndarray:
    """½ Σ_i |p_i - r_i| per position between the teachers' p_T (positions, V) and `target_distribution`."""
    return 0.5 * np.abs(p - target_distribution(rows, p.shape[-1])).sum(-1)


def draws_check(p: np.ndarray, rows: dict) -> dict:
    """Are the stored draws distributed as p_T says? A z-score of the mass the distinct drawn ids cover.

    Per position the distinct ids among N draws from a distribution d cover X = Σ_i d_i 1[i drawn], whose
    expectation is Σ_i d_i (1 - (1 - d_i)^N) exactly; d = p_T (sampled) or the renormalised tail (hybrid). The
    mean of X - E[X] over the checked positions divided by its standard error is ~N(0, 1) for honest draws and
    far from 0 for draws from another distribution (say uniform, or another temperature). Returns draws_z and
    the mean covered and expected masses (`coverage_z` of `drawn_coverage`).
    """
    return coverage_z(*drawn_coverage(p, rows))


def coverage_z(covered: np.ndarray, expected: np.ndarray) -> dict:
    """`draws_check`'s result from per-position covered and expected masses."""
    n = len(covered)
    dev = covered - expected
    z = dev.mean() / max(dev.std(ddof=1) / np.sqrt(n), 1e-12) if n > 1 else 0.0
    return {"draws_z": float(z), "mean_covered_mass": float(covered.mean()), "mean_expected_mass": float(expected.mean())}


def drawn_coverage(p: np.ndarray, rows: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per position (covered, expected): the mass of d the distinct drawn ids cover, and its expectation."""
    n = p.shape[0]
    d = p.copy()
    if "topk_ids" in rows:
        np.put_along_axis(d, rows["topk_ids"].reshape(n, -1).astype(np.int64), 0.0, axis=-1)
        d /= np.maximum(d.sum(-1, keepdims=True), 1e-300)
    draws = rows["sample_ids"].reshape(n, -1).astype(np.int64)
    drawn = np.zeros_like(d, dtype=bool)
    np.put_along_axis(drawn, draws, True, axis=-1)
    covered = (d * drawn).sum(-1)
    expected = (d * -np.expm1(draws.shape[1] * np.log1p(-np.minimum(d, 1 - 1e-12)))).sum(-1)
    return covered, expected
