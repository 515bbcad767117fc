"""What computing a kind's cache takes (`KindOperations`), and the steps every kind shares before its chunks: the
windows a dump covers, the teachers' precision, the attributes every cache records.

`bbl.cache.dump` (the one dump driver), `bbl.cache.repair` and `bbl.cache.verify` call a kind's operations, found
by the kind's name (`bbl.cache.compute.registry.operations_of`); a third-party kind subclasses `KindOperations`.
"""

from __future__ import annotations

from pathlib import Path

from bbl import __version__
from bbl.cache.dump_config import DumpConfig
from bbl.cache.format import TOPK_ORDER
from bbl.data.prepared import PreparedData
from bbl.data.windows import TokenWindows, select_train_windows
from bbl.errors import BblError


def teacher_dtype(config: DumpConfig) -> str:
    """The precision the teachers are loaded in: `config.dtype`, fp32 for auto."""
    return "fp32" if config.dtype == "auto" else config.dtype


def dump_windows(data: PreparedData, config: DumpConfig) -> TokenWindows:
    """The windows a dump covers (`select_train_windows`: the same rule as the student's `max_train_windows`).

    Raises:
        BblError: the stream holds no full window.
    """
    windows = select_train_windows(data.stream(config.split), config.seq_len, config.max_windows, seed=config.seed)
    if len(windows) == 0:
        raise BblError(f"{data.path}: the {config.split} stream has fewer than --seq-len {config.seq_len} tokens; "
                       f"prepare more text")
    return windows


def dump_attrs(config: DumpConfig, data: PreparedData, infos: list[dict], *, device: str, data_dir: Path) -> dict:
    """The attributes every cache records: the dump's settings (`dump_config` and the keys every reader uses), its
    teachers, and the hashes of the data it was computed from (docs/cache-format.md). A top-k cache of the default
    settings records exactly what it did before the other kinds existed."""
    attrs = {
        "temperature": float(config.temperature), "top_k": int(config.top_k), "seq_len": int(config.seq_len),
        "vocab_size": int(data.vocab_size), "ensemble": "logit_mean", "teachers": infos,
        "teachers_fingerprint": sorted(w for i in infos for w in i["weights_sha256"].values()),
        "tokenizer_fingerprint": data.tokenizer_fingerprint(), "tokenizer_sha256": data.tokenizer_sha256,
        "train_stream_sha256": data.stream_sha256(config.split), "split": config.split,
        "window_selection": {"max_windows": config.max_windows, "seed": config.seed},
        "logprob_step": config.logprob_step,
        "topk_order": TOPK_ORDER, "dump_batch_size": int(config.batch_size), "dump_device": str(device).split(":")[0],
        "bbl_version": __version__, "data_dir": str(Path(data_dir).resolve()), "dump_config": config.to_dict(),
    }
    if config.targets != "topk":  # the default kind keeps exactly the settings it had before the other kinds
        attrs.update(targets=config.targets, num_samples=int(config.num_samples), sample_seed=int(config.seed))
    if config.dtype != "auto":  # part of the settings a resumed dump must match; absent for the default
        attrs["dump_dtype"] = config.dtype
    for option in ("delta_ids", "sample_counts"):  # storage options: recorded only when asked for
        if getattr(config, option):
            attrs[option] = True
    if config.kd_fraction < 1:
        attrs["kd_fraction"] = float(config.kd_fraction)
    return attrs


class ChunkComputer:
    """The interface of a kind's chunk computer (deterministic for given teachers, data, config and device, so a
    resumed dump, any rank and `bbl cache repair` write the same bytes).

    The dump driver calls `compute_targets(c)` on its main thread (every torch op) and `stored_form(raw)` on its
    writer thread (numpy only); `compute(c)` is both, for repair. `config` is the kind's `DumpConfig` with a
    concrete batch size (`with_config`); `probe(batch_size)` runs one batch of that size, for the GPU batch-size
    search (a computer without one has `can_probe` false and gets `CPU_BATCH_SIZE` unless --batch-size is given).
    """

    config: DumpConfig
    can_probe: bool = False

    def rows(self, c: int) -> range:
        return range(c * self.config.chunk_windows, min((c + 1) * self.config.chunk_windows, self.num_windows()))

    def num_windows(self) -> int:
        raise NotImplementedError

    def with_config(self, config: DumpConfig) -> None:
        """Use `config` (the same settings with a concrete batch size) from now on."""
        self.config = config

    def use_store(self, arrays: dict) -> None:
        """Write ids in the dtypes of the store's arrays ({name: zarr array}); by default nothing to adapt."""

    def static_arrays(self) -> dict:
        """Arrays written once per cache (`CacheKind.static_arrays`); none by default."""
        return {}

    def compute_targets(self, c: int):
        raise NotImplementedError

    def stored_form(self, raw):
        """The chunk as `CacheWriter.write_chunk` writes it (an object with one attribute per array, `index`)."""
        return raw

    def compute(self, c: int):
        return self.stored_form(self.compute_targets(c))

    def probe(self, batch_size: int) -> None:
        raise NotImplementedError


class KindOperations:
    """How a cache kind's chunks are computed from its teachers: what `bbl dump-logits`, `bbl cache repair` and
    `bbl cache verify --teacher` ask the kind (the driver does the rest: the lock, the store, the writer thread,
    resume, torchrun ranks, the summary).

    Attributes:
        name: the kind's name (`CacheKind.name`).
        config_class: its `DumpConfig` (a subclass for a kind with settings of its own).
    """

    name: str = ""
    config_class: type[DumpConfig] = DumpConfig

    def settle(self, config: DumpConfig) -> DumpConfig:
        """`config` as this kind's `config_class` (a plain `DumpConfig` of `--targets NAME` gets the kind's own
        settings at their defaults)."""
        if isinstance(config, self.config_class):
            return config
        import dataclasses

        return self.config_class(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})

    def check_inputs(self, teacher_dirs: list[Path], data_dir: Path, config: DumpConfig) -> None:
        """Checks of the inputs before the store is claimed (nothing written yet); none by default."""

    def teacher_seq_len(self, config: DumpConfig) -> int | None:
        """The positions every teacher must have (`load_teachers(seq_len=...)`); None: the kind checks its own."""
        return config.seq_len

    def check_teachers(self, teacher_dirs, infos: list[dict], data: PreparedData, config: DumpConfig, *,
                       recorded: dict | None = None) -> None:
        """Checks of the loaded teachers against the data (a dump) or the cache's attributes (`recorded`, repair)."""

    def computer(self, teachers, infos, windows: TokenWindows, config: DumpConfig, *, data: PreparedData,
                 teacher_dirs, device: str) -> ChunkComputer:
        raise NotImplementedError

    def attrs(self, config: DumpConfig, data: PreparedData, infos: list[dict], *, teacher_dirs, device: str,
              data_dir: Path) -> dict:
        """The store's attributes: `dump_attrs` by default, a kind adds its own."""
        return dump_attrs(config, data, infos, device=device, data_dir=data_dir)

    def done_line(self, out, summary: dict) -> str:
        """The dump's closing log line from its summary."""
        return (f"dumped {out}: {summary['windows']:,} windows, {summary['tokens']:,} tokens, "
                f"{summary['bytes']:,} bytes ({summary['bytes_per_token']:.1f} B/token), {summary['seconds']:.1f}s")

    def recompute_sample(self, reader, teacher_dirs, *, sample: int, seed: int, device: str) -> dict:
        """`bbl cache verify --teacher`: `sample` rows recomputed and compared with what the cache stores; the
        figures `bbl.cache.verify.verify_cache` judges (windows_checked; mean_kl / max_abs_logprob_error, draws_z,
        kd_mask_errors, aligned_fraction where they apply; `problems`: lines for exact mismatches)."""
        raise NotImplementedError
