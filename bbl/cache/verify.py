"""`bbl cache verify`: every chunk present and passing its checksum, and, with the teachers, the stored targets
against a recomputation (log-prob error and KL for top-k targets, a z-score of the draws for sampled ones).

`verify_cache` is the whole policy (what passes, what the user is told); the CLI prints its lines and exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bbl.cache.compute.registry import operations_of
from bbl.cache.integrity import repair_command
from bbl.cache.reader import CacheReader
from bbl.models.teachers import teachers_match

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


def verify_against_teachers(reader: CacheReader, teacher_dirs: list[Path], *, sample: int = 16, seed: int = 0,
                            device: str = "cpu") -> dict:
    """Recompute `sample` random windows with the teachers and compare with what the cache stores: the kind's
    `KindOperations.recompute_sample` (for the ensemble's kinds: max_abs_logprob_error, mean_kl / max_kl
    (`bbl.cache.compute.fidelity.stored_kl`, nats, never negative), mean / max mass_defect, draws_z and
    mean_total_variation for draws, kd_mask_errors; for a cross-tokenizer cache also its alignment).

    Raises:
        BblError: the teachers' tokenizer differs from the cache's; the kind has no operations here.
    """
    ops = operations_of(reader.targets, subject=f"{reader.path}: targets")
    return ops.recompute_sample(reader, list(teacher_dirs), sample=sample, seed=seed, device=device)

