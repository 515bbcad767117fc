"""The settings of one dump (`DumpConfig`, `bbl dump-logits`'s options): recorded in the cache's `dump_config`
attribute, read back by `bbl cache repair`. Which kind is stored (`targets`) is looked up in the kinds' registry,
and the kind settles and checks its own settings (`CacheKind.check_config`); a kind with settings of its own
subclasses `DumpConfig` (`bbl.cache.compute.cross_tokenizer.CrossTokenizerConfig`), so its options are generated
like these.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

import numpy as np

from bbl.cache.format import CPU_BATCH_SIZE, DEFAULT_CHUNK_WINDOWS, LOGPROB_STEP, STORAGE_DEFAULTS
from bbl.cache.kinds.registry import get_kind
from bbl.config import PAPER_TEMPERATURE, Precision
from bbl.errors import BblError


@dataclass
class DumpConfig:
    """The settings of one dump: what is stored per position and over which windows (`bbl dump-logits`).

    Recorded whole in the cache's `dump_config` attribute; `from_attrs` reads it back (or, for a cache written
    before it was recorded, rebuilds it from the older attributes), so `bbl cache repair` recomputes a chunk with
    exactly the dump's settings. Invalid values raise `BblError` naming the dump-logits option.
    """

    targets: str = "topk"
    """What to store per position, a registered cache kind (`bbl.cache.kinds.registry`): topk (the k most probable
    ids, their log-probs, the tail mass); sampled (ids drawn from p_T, Anshumann et al. 2025); hybrid (the top k plus
    draws from the tail); cross_tokenizer (teachers of another tokenizer: their own top-k per teacher token, with
    the alignment; also --cross-tokenizer). Read with distill.kd_variant=topk_tail|sampled|hybrid|exact_match|... Recommended where bytes matter: --targets hybrid --topk 4
    --samples 4 --logprob-step 0.0625 --delta-ids, the smallest cache that kept the top-64 cache's gain at CPU
    scale (18.8 B/token against 127; docs/results/equal-bytes.md)."""
    top_k: int | None = None
    """Ids kept per position (topk, hybrid); None = 64 (`DEFAULT_TOP_K`); 0 for a sampled cache (which refuses
    any other value: it stores draws only)."""
    num_samples: int | None = None
    """Ids drawn with replacement per position (sampled, hybrid), 1..255; None = 12 (`DEFAULT_SAMPLES`) for
    those kinds and 0 for a top-k cache (which refuses any other value)."""
    temperature: float = PAPER_TEMPERATURE
    """Softening temperature T > 0 of the ensemble's p_T (the paper: 2)."""
    split: str = "train"
    """Token stream of the prepared dir to dump."""
    seq_len: int = 128
    """Tokens per window (the student's); at most every teacher's positions."""
    batch_size: int | None = None
    """Windows per teacher forward pass (part of what makes a chunk's bits: repair reuses it). None: chosen when
    the dump starts (`bbl.cache.dump.resolve_batch_size`): a resumed store's own, `CPU_BATCH_SIZE` (16) on CPU,
    and on a GPU the largest that fits its memory; the cache records the number used."""
    max_windows: int | None = None
    """The fixed subset `training.max_train_windows` selects (same seed); None = every window."""
    seed: int = 0
    """Seed of the window subset (the student's training.data_seed, else training.seed) and of the draws (per
    chunk)."""
    chunk_windows: int = DEFAULT_CHUNK_WINDOWS
    """Windows per Zarr chunk."""
    dtype: Precision = "auto"
    """The teachers' precision: auto (fp32 weights; bf16 autocast on a GPU, plain fp32 on CPU: what every dump
    before `--dtype` did), or fp32, bf16, fp16 weights with no autocast. The logit mean and log-softmax are fp32."""
    logprob_step: float = LOGPROB_STEP
    """Grid of the stored top-k log-probs (nats), a power of two in [2^-10, 2^-2]: each value is off by at most
    step / 2, so a position's (k+1)-outcome KL to the exact targets is at most ~step^2 / 8 (second order in the
    error; 2^-4: <= 5e-4 nats). A coarser grid zeroes more mantissa bits, which bit-shuffle + zstd drop."""
    delta_ids: bool = False
    """Store topk_ids and sample_ids delta-coded (numcodecs `Delta`, `bbl.cache.format.filters`): the ascending
    ids of a position become gaps. Lossless; readers need numcodecs (zarr-python 3 with numcodecs reads it)."""
    kd_fraction: float = 1.0
    """Keep targets at this fraction of each window's positions, in (0, 1]: the ceil(f x S) of highest teacher
    entropy H(p_T) (`select_positions`); the others are stored empty (zeros, marked false in `kd_mask`) and train
    with the CE only (their KD term is exactly 0; `token_mean` still divides by every position)."""
    sample_counts: bool = False
    """Store the draws of a sampled or hybrid cache as each position's distinct ids (`sample_ids`, 0-padded) and
    their counts (`sample_counts`, uint8, summing to --samples) instead of repeated ids (`count_draws`). Lossless:
    `CacheReader` expands them back, so the losses read the same targets."""

    def __post_init__(self):
        get_kind(self.targets).check_config(self)  # the kind settles top_k / num_samples and refuses what it cannot
        for option, value in (("--seq-len", self.seq_len), ("--batch-size", self.batch_size),
                              ("--chunk-windows", self.chunk_windows), ("--max-windows", self.max_windows),
                              ("--samples", self.num_samples or None)):
            if value is not None and value < 1:
                raise BblError(f"{option} {value} must be >= 1")
        if not self.temperature > 0:
            raise BblError(f"--temperature {self.temperature} must be > 0")
        if self.seed < 0:
            raise BblError(f"--data-seed {self.seed} must be >= 0")
        if self.dtype not in typing.get_args(Precision):
            raise BblError(f"--dtype {self.dtype!r}: use one of {', '.join(typing.get_args(Precision))}")
        exponent = np.log2(self.logprob_step) if self.logprob_step > 0 else np.nan
        if not (exponent == np.round(exponent) and -10 <= exponent <= -2):
            raise BblError(f"--logprob-step {self.logprob_step} must be a power of two in [2^-10, 2^-2] "
                           f"(e.g. {2.0 ** -4})")
        if not 0 < self.kd_fraction <= 1:
            raise BblError(f"--kd-fraction {self.kd_fraction} must be in (0, 1]")

    @classmethod
    def from_attrs(cls, attrs: dict) -> DumpConfig:
        """The dump's settings from a cache's attributes (`dump_config`, or the attributes every cache has)."""
        if "dump_config" in attrs:  # fields absent from an older cache's record take their defaults
            return cls(**{"targets": attrs.get("targets", "topk"), **attrs["dump_config"]})
        selection = attrs.get("window_selection", {})
        return cls(targets=attrs.get("targets", "topk"), top_k=int(attrs["top_k"]),
                   num_samples=int(attrs.get("num_samples", 0)), temperature=float(attrs["temperature"]),
                   split=attrs.get("split", "train"), seq_len=int(attrs["seq_len"]),
                   batch_size=int(attrs.get("dump_batch_size", CPU_BATCH_SIZE)), max_windows=selection.get("max_windows"),
                   seed=int(selection.get("seed", attrs.get("sample_seed", 0))),
                   chunk_windows=int(attrs.get("chunk_windows", DEFAULT_CHUNK_WINDOWS)),
                   logprob_step=float(attrs.get("logprob_step", LOGPROB_STEP)))

    def to_dict(self) -> dict:
        """The settings as recorded in `dump_config`; the storage options (`STORAGE_DEFAULTS`) only when not at
        their default, so a cache of the default settings records exactly what it did before they existed."""
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if k not in STORAGE_DEFAULTS or v != STORAGE_DEFAULTS[k]}

    def resolved(self, batch_size: int) -> DumpConfig:
        """This config with a concrete `batch_size` (`bbl.cache.dump.resolve_batch_size`)."""
        return dataclasses.replace(self, batch_size=batch_size)
