"""A cache kind and a KD reading defined here, outside `bbl/`, registered as the built-ins are, then dumped,
verified, repaired and distilled through bbl's own commands' functions: nothing in `bbl/` names them.

The toy kind, `toy_argmax`, stores per position the ensemble's most probable next token and its log p_T; the toy
reading, `toy_argmax_ce`, distils p_T(argmax) * -log q_T(argmax) (the teacher's top-1 as a weighted hard label).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bbl.cache.compute.base import ChunkComputer, KindOperations
from bbl.cache.compute.registry import OPERATIONS, register_operations
from bbl.cache.dump import dump_logits
from bbl.cache.dump_config import DumpConfig
from bbl.cache.format import ChunkBatch, id_dtype
from bbl.cache.kinds.base import CacheKind
from bbl.cache.kinds.registry import KINDS, register_kind
from bbl.cache.reader import CacheReader
from bbl.cache.repair import repair_cache
from bbl.cache.verify import verify_cache
from bbl.config import load_config
from bbl.distill.recipe import distill
from bbl.errors import BblError
from bbl.losses.chunked import shift_labels
from bbl.losses.readings import READINGS, KDReading, register_reading
from bbl.models.ensemble import logit_mean
from bbl.models.teachers import teacher_logits

from .helpers import quiet

NAME, READING = "toy_argmax", "toy_argmax_ce"
SEQ = 32


def _specs(attrs, n, chunk):
    ids = id_dtype(int(attrs["vocab_size"]))
    s = int(attrs["seq_len"])
    return {"input_ids": ((n, s), (chunk, s), ids, 0, "shuffle"),
            "window_idx": ((n,), (chunk,), np.dtype(np.int64), -1, "shuffle"),
            "argmax_ids": ((n, s), (chunk, s), ids, 0, "shuffle"),
            "argmax_logprob": ((n, s), (chunk, s), np.dtype(np.float32), 0.0, "bitshuffle")}


def _settle(config):
    config.top_k, config.num_samples = 0, 0


def _item(row, static):
    return {"argmax_ids": row["argmax_ids"].astype(np.int64), "argmax_logprob": row["argmax_logprob"]}


TOY_KIND = CacheKind(name=NAME, arrays=lambda attrs: ("input_ids", "window_idx", "argmax_ids", "argmax_logprob"),
                     array_specs=_specs, describe=lambda attrs: "the ensemble's argmax and its log p_T",
                     kd_variants=(READING,), training_item=_item, check_config=_settle)


def _targets(teachers, ids, vocab, temperature):
    logp = torch.log_softmax(logit_mean([teacher_logits(m, ids, vocab) for m in teachers], temperature=temperature), -1)
    top = logp.max(-1)
    return top.indices.numpy(), top.values.float().numpy()


class ToyComputer(ChunkComputer):
    def __init__(self, teachers, windows, config, vocab):
        self.teachers, self.windows, self.config, self.vocab = teachers, windows, config, vocab
        self.dtype = np.int64

    def num_windows(self):
        return len(self.windows)

    def use_store(self, arrays):
        self.dtype = arrays["input_ids"].dtype

    def compute_targets(self, c):
        rows = self.rows(c)
        ids = np.stack([self.windows.window(i) for i in rows])
        with torch.inference_mode():
            top, logp = _targets(self.teachers, torch.from_numpy(ids.astype(np.int64)), self.vocab,
                                 self.config.temperature)
        batch = ChunkBatch(index=c, input_ids=ids.astype(self.dtype),
                           window_idx=self.windows.indices[rows.start:rows.stop].astype(np.int64))
        batch.argmax_ids, batch.argmax_logprob = top.astype(self.dtype), logp
        return batch


class ToyOperations(KindOperations):
    name = NAME

    def computer(self, teachers, infos, windows, config, *, data, teacher_dirs, device):
        return ToyComputer(teachers, windows, config, data.vocab_size)

    def recompute_sample(self, reader, teacher_dirs, *, sample, seed, device):
        from bbl.models.teachers import load_teachers

        teachers, _ = load_teachers(list(teacher_dirs), device)
        problems = []
        for r in range(min(sample, reader.num_windows)):
            row = reader.read(r, r + 1)
            with torch.inference_mode():
                top, logp = _targets(teachers, torch.from_numpy(row["input_ids"].astype(np.int64)), reader.vocab_size,
                                     reader.temperature)
            if not (np.array_equal(top, row["argmax_ids"]) and np.allclose(logp, row["argmax_logprob"], atol=1e-5)):
                problems.append(f"row {r}: the stored argmax differs from the teachers'")
        return {"windows_checked": min(sample, reader.num_windows), "problems": problems}


def _toy_kd(logits, targets, ctx):
    """(B, S) p_T(argmax) * -log q_T(argmax), then its token mean: the toy reading's KD term."""
    log_q = torch.log_softmax(logits.float() / ctx.temperature, -1)
    at = log_q.gather(-1, targets["argmax_ids"].unsqueeze(-1)).squeeze(-1)
    return (-targets["argmax_logprob"].exp() * at).mean()


def _toy_chunked(hidden, weight, labels, targets, ctx):
    logits = hidden @ weight.T
    ce = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                           shift_labels(labels).reshape(-1), ignore_index=-100)
    kd = _toy_kd(logits, targets, ctx)
    return ctx.alpha * ce + (1 - ctx.alpha) * ctx.temperature ** 2 * kd, ce, kd


TOY_READING = KDReading(READING, chunked_loss=_toy_chunked, logits_kd=_toy_kd,
                        target_keys=("argmax_ids", "argmax_logprob"), divergence_support="forward_kl")


@pytest.fixture(scope="module")
def toy_registered():
    register_kind(TOY_KIND)
    register_operations(ToyOperations())
    register_reading(TOY_READING)
    yield
    for registry, name in ((KINDS, NAME), (OPERATIONS, NAME), (READINGS, READING)):
        registry.pop(name, None)


@pytest.fixture(scope="module")
def toy_cache(toy_registered, tiny_teachers, prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "toy.zarr"
    config = DumpConfig(targets=NAME, seq_len=SEQ, chunk_windows=4, batch_size=2, max_windows=12, temperature=2.0)
    summary = dump_logits(tiny_teachers, prepared, out, config, progress=False, log=quiet)
    assert summary["windows"] == 12
    return out


def test_nothing_in_bbl_names_the_toy_kind_or_reading():
    import bbl

    for path in (p for p in __import__("pathlib").Path(bbl.__file__).parent.rglob("*.py")):
        text = path.read_text()
        assert NAME not in text and READING not in text, path


def test_a_registered_kind_dumps_and_reads_back(toy_cache, tiny_teachers):
    reader = CacheReader(toy_cache)
    assert reader.targets == NAME and set(reader.arrays) == {"input_ids", "window_idx", "argmax_ids", "argmax_logprob"}
    row = reader.read(0, 1)
    with torch.inference_mode():
        from bbl.models.teachers import load_teachers

        teachers, _ = load_teachers(tiny_teachers, "cpu")
        top, logp = _targets(teachers, torch.from_numpy(row["input_ids"].astype(np.int64)), reader.vocab_size, 2.0)
    np.testing.assert_array_equal(row["argmax_ids"], top)
    np.testing.assert_allclose(row["argmax_logprob"], logp, atol=1e-6)


def test_a_registered_kind_verifies_against_its_teachers(toy_cache, tiny_teachers):
    report = verify_cache(toy_cache, teacher_dirs=tiny_teachers, sample=4, progress=False)
    assert report.ok, report.problems
    other = [tiny_teachers[0]]  # one of the two teachers: its argmax differs somewhere
    assert not verify_cache(toy_cache, teacher_dirs=other, sample=12, progress=False).ok


def test_a_registered_kind_repairs_a_lost_chunk_byte_identical(toy_cache, tiny_teachers, tmp_path):
    damaged = tmp_path / "toy.zarr"
    shutil.copytree(toy_cache, damaged)
    chunk = damaged / "argmax_logprob" / "c" / "1" / "0"
    original = chunk.read_bytes()
    chunk.unlink()
    with pytest.raises(BblError, match="missing"):
        CacheReader(damaged)
    result = repair_cache(damaged, tiny_teachers, progress=False, log=quiet)
    assert result["repaired"] == [1] and chunk.read_bytes() == original


def test_a_registered_reading_distils_from_the_registered_kind(toy_cache, prepared, tmp_path):
    cfg = load_config("student-tiny", ["training.max_train_windows=null", "training.max_steps=4",
                                       "training.logging_steps=1", f"training.seq_len={SEQ}"])
    out = distill(cfg, prepared, tmp_path / "student", cache_path=toy_cache, log=quiet)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["kd_loss"] for m in logged if "kd_loss" in m] and all(m["kd_loss"] > 0 for m in logged if "kd_loss" in m)
    run = json.loads((out / "bbl_run.json").read_text())
    assert run["config"]["distill"]["kd_variant"] == READING  # the kind's default reading


def test_a_reading_the_kind_does_not_admit_is_refused(toy_cache, prepared, tmp_path):
    cfg = load_config("student-tiny", ["distill.kd_variant=topk_tail", f"training.seq_len={SEQ}"])
    with pytest.raises(BblError, match=f"holds {NAME} targets.*kd_variant={READING}"):
        distill(cfg, prepared, tmp_path / "student", cache_path=toy_cache, log=quiet)
