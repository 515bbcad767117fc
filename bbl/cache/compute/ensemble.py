"""Computing the ensemble's own-vocabulary kinds (topk, sampled, hybrid): per chunk of windows, each teacher's
logits (fp32) -> logit mean (the paper's ensemble, `bbl.models.ensemble`) -> divide by the temperature -> top-k ids
and log-probs plus the log of the tail mass by logsumexp over the other ids, and/or ids drawn from p_T. For GPT-2
and LLaMA teachers the logits are never materialised per teacher: their last hidden states go through
`ensemble_targets_from_hidden`, a chunk of positions at a time. Also the recomputation `bbl cache verify
--teacher` compares a cache against (`recompute_sample`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np

from bbl.cache.compute.base import ChunkComputer, KindOperations
from bbl.cache.compute.fidelity import (
    coverage_z,
    drawn_coverage,
    kd_mask_errors,
    mass_defect,
    stored_kl,
    total_variation,
)
from bbl.cache.dump_config import DumpConfig
from bbl.cache.format import ChunkBatch, count_draws, quantize_logprobs, select_positions, sort_by_id
from bbl.data.prepared import PreparedData
from bbl.data.tokenizer import check_same_tokenizer
from bbl.data.windows import TokenWindows
from bbl.errors import BblError
from bbl.models.ensemble import (
    ensemble_targets,
    ensemble_targets_from_hidden,
    ensemble_token_logprobs,
    logit_mean,
)
from bbl.models.teachers import Head, load_teachers, teacher_forward, teacher_logits


class EnsembleChunkComputer(ChunkComputer):
    """Computes one chunk of a topk, sampled or hybrid cache: the teachers' forward passes, the ensemble's targets and the stored form.

    Deterministic for a given (teachers, windows, `DumpConfig`, device): `bbl cache repair` recomputes a damaged
    chunk with the config and device recorded by the dump, so the repaired store equals a clean one.
    """

    def __init__(self, teachers, infos, windows: TokenWindows, config: DumpConfig, *, device: str, id_dtype,
                 vocab_size: int):
        self.teachers, self.infos, self.windows, self.config = teachers, infos, windows, config
        self.device, self.id_dtype, self.vocab_size = device, id_dtype, vocab_size
        self._heads: dict = {}
        import torch

        for model, info in zip(teachers, infos, strict=True):  # the chunked path checks hidden states, not logits
            head = model.get_output_embeddings()
            if head is not None and not bool(torch.isfinite(head.weight).all()):
                raise BblError(f"{info['path']}: NaN/inf logits on every {config.split} window (the LM head weight "
                               f"is not finite); the teacher checkpoint is broken, retrain or pick an earlier checkpoint")

    can_probe = True

    def num_windows(self) -> int:
        return len(self.windows)

    def use_store(self, arrays: dict) -> None:
        self.id_dtype = arrays["input_ids"].dtype

    def generator(self, c: int):
        """The draws' generator of chunk `c`: seeded by (sample_seed, c) alone, so any rank, a resumed dump and a
        repair draw the same ids for that chunk."""
        import torch

        seed = int(np.random.SeedSequence([self.config.seed, c]).generate_state(1, np.uint64)[0] >> 1)
        return torch.Generator(device=self.device).manual_seed(seed)

    def draw_settings(self, c: int) -> dict:
        """What `batch_targets` stores for chunk `c`: the targets kind, k, the draws and their generator."""
        cfg = self.config
        return {"targets": cfg.targets, "top_k": cfg.top_k, "num_samples": cfg.num_samples,
                "generator": self.generator(c) if cfg.targets != "topk" else None, "entropy": cfg.kd_fraction < 1}

    def batch_targets(self, ids, kind: dict, *, first_row: int = 0) -> dict:
        """The ensemble's targets of one batch of windows ((B, S) int64 ids) on the dump's device:
        `batch_ensemble` of `batch_forward`. Raises as `batch_forward`."""
        return self.batch_ensemble(self.batch_forward(ids, first_row=first_row), kind)

    def _autocast(self):
        import torch

        cuda = self.device.startswith("cuda") and self.config.dtype == "auto"
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def batch_forward(self, ids, *, first_row: int = 0) -> tuple[list, list]:
        """The teachers' forward passes of one batch: (per teacher its last hidden states (B, S, H) and `Head`,
        or its (B, S, V) logits and None), on the dump's device.

        A device-mapped teacher (`load_teachers(device_map=...)`) is fed at its first layer's device; its hidden
        states (and, once, its LM head) are brought to the dump's device, where the ensemble is formed.

        Raises:
            BblError: a teacher produced NaN/inf logits (names the teacher and the window).
        """
        import torch

        cfg = self.config
        outputs, heads = [], []
        with torch.inference_mode():
            for t, (model, info) in enumerate(zip(self.teachers, self.infos, strict=True)):
                mapped = getattr(model, "hf_device_map", None) is not None
                with self._autocast():
                    out, head = teacher_forward(model, ids.to(model.device if mapped else self.device), self.vocab_size)
                bad = ~torch.isfinite(out).flatten(1).all(1)
                if bad.any():
                    w = int(self.windows.indices[first_row + int(bad.nonzero()[0])])
                    fix = ("fp16 overflows: use --dtype bf16 or fp32" if cfg.dtype == "fp16" else
                           "the teacher checkpoint is broken, retrain or pick an earlier checkpoint")
                    raise BblError(f"{info['path']}: NaN/inf logits on {cfg.split} window {w}; {fix}")
                if mapped:
                    out, head = out.to(self.device), self._head_on_device(t, head)
                outputs.append(out)
                heads.append(head)
        return outputs, heads

    def batch_ensemble(self, forward: tuple[list, list], kind: dict) -> dict:
        """The ensemble's targets (`ensemble_targets_from_hidden`, chunked: no (B, S, V) tensor per teacher; or
        `ensemble_targets` of logits) from `batch_forward`'s result, moved to the CPU. Thread-safe for one caller
        at a time: inference mode and autocast are entered here (they are per thread)."""
        import torch

        outputs, heads = forward
        with torch.inference_mode(), self._autocast():
            if all(h is not None for h in heads):
                out = ensemble_targets_from_hidden(outputs, heads, temperature=self.config.temperature, **kind)
            else:
                out = ensemble_targets([o.float() for o in outputs], temperature=self.config.temperature, **kind)
            return {k: t.cpu() for k, t in out.items()}

    def batch_token_logprobs(self, rows: list, heads: list, next_ids, boundary) -> tuple:
        """`ensemble_token_logprobs` (temperature 1) of chosen rows of `batch_forward`'s outputs (per teacher (R, H)
        hidden states or (R, V) logits, `heads` as it returned them), in the dump's precision, on the CPU."""
        import torch

        with torch.inference_mode(), self._autocast():
            token, mass = ensemble_token_logprobs(rows, heads, next_ids, boundary)
        return token.float().cpu(), mass.float().cpu()

    def _head_on_device(self, t: int, head):
        """Teacher `t`'s LM head on the dump's device, moved once (a device-mapped teacher's head sits on its last
        layer's device)."""
        if head is None:
            return None
        if t not in self._heads:
            self._heads[t] = Head(head.weight.to(self.device),
                                  None if head.bias is None else head.bias.to(self.device))
        return self._heads[t]

    def probe(self, batch_size: int) -> None:
        """One `batch_targets` of `batch_size` windows (the first ones, repeated as needed): what a real batch of
        that size costs in memory (`resolve_batch_size`)."""
        import torch

        n = len(self.windows)
        ids = np.stack([self.windows.window(i % n) for i in range(batch_size)])
        self.batch_targets(torch.from_numpy(ids), self.draw_settings(0))

    def compute(self, c: int) -> ChunkBatch:
        """Chunk `c` as a `ChunkBatch` (ids sorted by id, log-probs on the `logprob_step` grid): `stored_form` of
        `compute_targets`.

        Raises:
            BblError: a teacher produced NaN/inf logits (names the teacher and the window).
        """
        return self.stored_form(self.compute_targets(c))

    def compute_targets(self, c: int) -> RawChunk:
        """Chunk `c`'s exact targets: the teachers' forward passes and the ensemble's top-k / draws (the part that
        needs the teachers; the dump runs it on the main thread). Raises as `compute`."""
        import torch

        rows = self.rows(c)
        ids_np = np.stack([self.windows.window(i) for i in rows])
        cfg = self.config
        kind = self.draw_settings(c)
        parts = []
        # Every torch op of a chunk runs on this thread, one batch after another. An ensemble overlapped with the
        # next batch's forward on a worker thread was tried: two threads sharing torch's intra-op pool let a
        # reduction (the tail's logsumexp) split differently from run to run, so a resumed or repaired chunk was
        # not always byte-identical (caught by the fault-injection test). The stored form (sort, rounding, casts)
        # and the compression still run on the writer thread, overlapped with the next chunk.
        for b in range(0, len(rows), cfg.batch_size):
            parts.append(self.batch_targets(torch.from_numpy(ids_np[b:b + cfg.batch_size]), kind, first_row=rows[b]))
        return RawChunk(c, ids_np, {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]})

    def stored_form(self, raw: RawChunk) -> ChunkBatch:
        """The `ChunkBatch` the cache stores from a chunk's exact targets: ids sorted by id, log-probs rounded to
        the `logprob_step` grid, the draws as (distinct ids, counts) under `sample_counts`. Numpy only and
        deterministic, so the dump runs it on its writer thread, overlapped with the next chunk's forward."""
        c, ids_np, arrays = raw.index, raw.input_ids, dict(raw.arrays)
        rows = self.rows(c)
        mask = None
        if "entropy" in arrays:  # --kd-fraction: targets only at the selected positions, zeros elsewhere
            mask = select_positions(arrays.pop("entropy"), self.config.kd_fraction)
            for name, value in arrays.items():
                arrays[name] = np.where(mask.reshape(mask.shape + (1,) * (value.ndim - 2)), value, 0)
        batch = ChunkBatch(index=c, input_ids=ids_np.astype(self.id_dtype),
                           window_idx=self.windows.indices[rows.start:rows.stop].astype(np.int64))
        if "topk_ids" in arrays:
            top_ids, top_lp = sort_by_id(arrays["topk_ids"], arrays["topk_logprobs"])
            batch.topk_ids = top_ids.astype(self.id_dtype)
            batch.topk_logprobs = quantize_logprobs(top_lp, self.config.logprob_step)
            batch.tail_logprob = arrays["tail_logprob"].astype(np.float32)
        if "sample_ids" in arrays:
            batch.sample_ids = arrays["sample_ids"].astype(self.id_dtype)
            if self.config.sample_counts:
                batch.sample_ids, batch.sample_counts = count_draws(batch.sample_ids)
        batch.kd_mask = mask
        return batch


@dataclasses.dataclass
class RawChunk:
    """One chunk's exact targets as `ChunkComputer.compute_targets` returns them: index, the windows' ids (C, S)
    and the ensemble's arrays (numpy; top-k by decreasing probability, fp32 log-probs, draws ascending)."""

    index: int
    input_ids: np.ndarray
    arrays: dict


def recompute_sample(reader, teacher_dirs: list[Path], *, sample: int = 16, seed: int = 0, device: str = "cpu") -> dict:
    """Recompute `sample` random windows with the teachers and compare with what the cache stores.

    Returns windows_checked and, for top-k and hybrid caches, max_abs_logprob_error (nats, over the stored top-k
    ids), mean_kl / max_kl (`stored_kl`, nats, never negative) and mean / max mass_defect (`mass_defect`); for
    sampled and hybrid caches, `draws_z` (`draws_check`: are the stored draws distributed as the teachers' p_T?)
    and mean_total_variation (½ Σ |p_T - r| between the teachers' p_T and the target r the loss uses).

    Raises:
        BblError: the teachers' tokenizer differs from the cache's.
    """
    import torch

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
            kls.append(stored_kl(exact_at, exact_tail, stored_lp, row["tail_logprob"][0]))
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


class EnsembleOperations(KindOperations):
    """The operations of the topk, sampled and hybrid kinds: the teachers share the prepared dir's tokenizer."""

    def __init__(self, name: str):
        self.name = name

    def check_teachers(self, teacher_dirs, infos, data: PreparedData, config: DumpConfig, *,
                       recorded: dict | None = None) -> None:
        if recorded is not None:  # repair: the data was checked against the cache's own hashes
            return
        check_same_tokenizer(infos[0]["tokenizer_fingerprint"], data.tokenizer_fingerprint(),
                             subject=f"{teacher_dirs[0]}: teacher", reference=data.tokenizer_dir,
                             fix="pass the --data the teachers were trained on, or --cross-tokenizer to store the "
                                 "teachers' targets in their own vocabulary")
        if config.top_k > data.vocab_size:
            raise BblError(f"--topk {config.top_k} exceeds the vocabulary ({data.vocab_size}); use --topk <= "
                           f"{data.vocab_size}")

    def computer(self, teachers, infos, windows: TokenWindows, config: DumpConfig, *, data: PreparedData,
                 teacher_dirs, device: str) -> EnsembleChunkComputer:
        return EnsembleChunkComputer(teachers, infos, windows, config, device=device, id_dtype=np.int64,
                                     vocab_size=data.vocab_size)

    def done_line(self, out, summary: dict) -> str:
        tail = f", mean tail mass {summary['mean_tail_mass']:.4f}" if "mean_tail_mass" in summary else ""
        return (f"dumped {out}: {summary['windows']:,} windows, {summary['tokens']:,} tokens, "
                f"{summary['bytes']:,} bytes ({summary['bytes_per_token']:.1f} B/token){tail}, "
                f"{summary['seconds']:.1f}s")

    def recompute_sample(self, reader, teacher_dirs, *, sample: int, seed: int, device: str) -> dict:
        return recompute_sample(reader, list(teacher_dirs), sample=sample, seed=seed, device=device)


OPERATIONS = tuple(EnsembleOperations(name) for name in ("topk", "sampled", "hybrid"))
