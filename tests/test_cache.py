"""The logit cache: exactness at k = V, ensemble, alignment, resume after SIGKILL, ranks, checksums, stores."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr

from bbl.cache import CacheReader, CacheWriter, ChunkBatch, shuffled_order
from bbl.cache.verify import verify_against_teachers, verify_chunks
from bbl.errors import BblError
from bbl.models.ensemble import ensemble_topk

from .conftest import TINY_VOCAB, save_random_model
from .helpers import KILL_WINDOWS, SEQ, arrays, dump, free_port, sigkill_after_chunks


def test_ensemble_is_the_logit_mean_softened_at_temperature():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 11, generator=g), torch.randn(2, 3, 11, generator=g)
    ids, lp, tail = ensemble_topk([a, b], temperature=2.0, top_k=4)
    exact = torch.log_softmax((a + b) / 2 / 2.0, -1)
    torch.testing.assert_close(lp, exact.gather(-1, ids))
    assert torch.equal(ids, exact.topk(4, -1).indices)
    torch.testing.assert_close(tail.exp(), 1 - lp.exp().sum(-1))


def test_k_equals_v_stores_the_exact_softmax_with_an_empty_tail(tiny_teachers, prepared, tmp_path):
    dump(tiny_teachers, prepared, tmp_path / "c.zarr", top_k=TINY_VOCAB, max_windows=4)
    r = CacheReader(tmp_path / "c.zarr")
    row = r.read(0, 2)
    assert np.isneginf(row["tail_logprob"]).all()
    from transformers import AutoModelForCausalLM

    models = [AutoModelForCausalLM.from_pretrained(t).eval() for t in tiny_teachers]
    ids = torch.from_numpy(row["input_ids"].astype(np.int64))
    with torch.no_grad():
        mean = torch.stack([m(input_ids=ids).logits for m in models]).mean(0)
    exact = torch.log_softmax(mean / 2.0, -1).numpy()
    stored = np.full_like(exact, np.nan)
    np.put_along_axis(stored, row["topk_ids"].astype(np.int64), row["topk_logprobs"].astype(np.float32), -1)
    assert not np.isnan(stored).any()  # every id stored once
    np.testing.assert_allclose(stored, exact, atol=1e-2)  # fp16 on the 2^-6 grid
    np.testing.assert_allclose(np.exp(stored).sum(-1), 1.0, atol=1e-2)


def test_position_s_predicts_token_s_plus_1(tiny_teachers, prepared, tmp_path):
    from transformers import AutoModelForCausalLM

    dump(tiny_teachers[:1], prepared, tmp_path / "c.zarr", max_windows=4, temperature=1.0)
    r = CacheReader(tmp_path / "c.zarr")
    row = r.read(1, 2)
    model = AutoModelForCausalLM.from_pretrained(tiny_teachers[0]).eval()
    for s in (0, 5, SEQ - 1):
        prefix = torch.from_numpy(row["input_ids"][:, :s + 1].astype(np.int64))
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=prefix).logits[0, -1], -1)
        best = int(row["topk_logprobs"][0, s].argmax())
        assert int(logp.argmax()) == int(row["topk_ids"][0, s, best])
        assert abs(float(logp.max()) - float(row["topk_logprobs"][0, s, best])) < 1e-2
        assert (np.diff(row["topk_ids"][0, s].astype(np.int64)) > 0).all()  # stored in increasing id order
    from bbl.data.prepared import PreparedData

    stream = PreparedData(prepared).stream("train")
    w = int(row["window_idx"][0])
    assert row["input_ids"][0].tolist() == stream[w * SEQ:(w + 1) * SEQ].tolist()


@pytest.mark.slow
def test_sigkill_mid_dump_then_resume_equals_uninterrupted(tiny_teachers, prepared, tmp_path):
    dump(tiny_teachers, prepared, tmp_path / "straight.zarr", max_windows=KILL_WINDOWS)
    cmd = [sys.executable, "-m", "bbl", "dump-logits", "--teacher", str(tiny_teachers[0]), "--teacher",
           str(tiny_teachers[1]), "--data", str(prepared), "--cache", str(tmp_path / "killed.zarr"), "--topk", "8",
           "--seq-len", str(SEQ), "--chunk-windows", "4", "--batch-size", "2", "--max-windows", str(KILL_WINDOWS)]
    sigkill_after_chunks(cmd, tmp_path / "killed.zarr")
    with pytest.raises(BblError, match="incomplete"):
        CacheReader(tmp_path / "killed.zarr")
    done = arrays(tmp_path / "killed.zarr")["chunk_done"]
    assert 0 < done.sum() < len(done)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # 120 s ran out on a loaded 2-core VM
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stdout
    a, b = arrays(tmp_path / "straight.zarr"), arrays(tmp_path / "killed.zarr")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_two_rank_dump_equals_one_rank(tiny_teachers, prepared, tmp_path):
    dump(tiny_teachers, prepared, tmp_path / "one.zarr")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "bbl", "dump-logits", "--teacher", str(tiny_teachers[0]), "--teacher", str(tiny_teachers[1]),
           "--data", str(prepared), "--cache", str(tmp_path / "two.zarr"), "--topk", "8", "--seq-len", str(SEQ),
           "--chunk-windows", "4", "--batch-size", "2", "--max-windows", "24", "--device", "cpu"]
    r = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = arrays(tmp_path / "one.zarr"), arrays(tmp_path / "two.zarr")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert CacheReader(tmp_path / "two.zarr").attrs["complete"]


def test_flipped_byte_is_caught_by_verify(tiny_teachers, prepared, tmp_path):
    path = tmp_path / "c.zarr"
    dump(tiny_teachers, prepared, path)
    chunk = path / "topk_logprobs" / "c" / "2" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    problems = verify_chunks(CacheReader(path))
    assert len(problems) == 1 and problems[0].startswith("topk_logprobs chunk 2")
    from click.testing import CliRunner

    from bbl.cli import main

    res = CliRunner().invoke(main, ["cache", "verify", "--cache", str(path)])
    assert res.exit_code == 1 and "topk_logprobs chunk 2" in res.output


def test_verify_against_teachers_reports_tiny_error(tiny_teachers, prepared, tmp_path):
    """The stored targets against a reference computed here by hand, not through bbl's `logit_mean`: each
    teacher's logits of the stored windows from its own forward pass, averaged, softened at T = 2 and
    log-softmaxed in float64. Then verify, which recomputes through bbl's ensemble, reports the same small error."""
    from transformers import AutoModelForCausalLM

    dump(tiny_teachers, prepared, tmp_path / "c.zarr")
    a = {k: torch.from_numpy(v[:4].astype(np.int64 if v.dtype.kind in "iu" else np.float64))
         for k, v in arrays(tmp_path / "c.zarr", ["input_ids", "topk_ids", "topk_logprobs", "tail_logprob"]).items()}
    with torch.no_grad():
        logits = [AutoModelForCausalLM.from_pretrained(t).eval()(input_ids=a["input_ids"]).logits.double()
                  for t in tiny_teachers]
    hand = torch.log_softmax((logits[0] + logits[1]) / 2 / 2.0, -1)  # (4, S, V)
    at_stored = hand.gather(-1, a["topk_ids"])
    assert (at_stored - a["topk_logprobs"]).abs().max() <= 2.0 ** -7 + 1e-4  # the grid's rounding, no more
    assert torch.all(at_stored.min(-1).values >= hand.topk(8, -1).values[..., -1] - 1e-4)  # they are the top 8
    torch.testing.assert_close(a["tail_logprob"], torch.log1p(-at_stored.exp().sum(-1)), atol=1e-3, rtol=0)
    r = verify_against_teachers(CacheReader(tmp_path / "c.zarr"), tiny_teachers, sample=4)
    assert r["max_abs_logprob_error"] <= 2.0 ** -7 + 1e-3 and abs(r["mean_kl"]) < 1e-4


@pytest.mark.parametrize("store", ["memory", "local"])
def test_format_round_trip_on_memory_and_local_stores(store, tmp_path):
    path = zarr.storage.MemoryStore() if store == "memory" else tmp_path / "c.zarr"
    attrs = {"temperature": 2.0, "top_k": 3, "seq_len": 4, "vocab_size": 70_000, "ensemble": "logit_mean"}
    w = CacheWriter(path, attrs=attrs, num_windows=5, chunk_windows=2)
    rng = np.random.default_rng(0)
    batches = []
    for c in range(3):
        n = 2 if c < 2 else 1
        b = ChunkBatch(c, rng.integers(0, 70_000, (n, 4)).astype(np.int32), np.arange(c * 2, c * 2 + n),
                       rng.integers(0, 70_000, (n, 4, 3)).astype(np.int32),
                       rng.normal(size=(n, 4, 3)).astype(np.float16), rng.normal(size=(n, 4)).astype(np.float32))
        batches.append(b)
        with pytest.raises(BblError, match="incomplete"):
            CacheReader(path)
        w.write_chunk(b)
    w.finalize()
    r = CacheReader(path)
    assert r.arrays["topk_ids"].dtype == np.int32  # vocab > 65,535 switches the id dtype
    got = r.read(0, 5)
    for name in ("input_ids", "topk_ids", "topk_logprobs", "tail_logprob"):
        np.testing.assert_array_equal(got[name], np.concatenate([getattr(b, name) for b in batches]))
    with pytest.raises(BblError, match="other settings"):
        CacheWriter(path, attrs={**attrs, "temperature": 1.0}, num_windows=5, chunk_windows=2)
    CacheWriter(path, attrs={**attrs, "temperature": 1.0}, num_windows=5, chunk_windows=2, overwrite=True)


ATTRS = {"temperature": 2.0, "top_k": 3, "seq_len": 4, "vocab_size": 70, "ensemble": "logit_mean"}


def test_a_store_whose_creation_was_killed_is_created_again_and_a_foreign_one_is_refused(tmp_path):
    """A dump killed while it created its store leaves a group with no attributes and some of its arrays (found by
    benchmarks/fault_injection.py: every re-run of the pipeline then refused it as "not a bbl cache")."""
    killed = zarr.open_group(tmp_path / "killed.zarr", mode="w")
    killed.create_array("input_ids", shape=(5, 4), dtype="int32")
    w = CacheWriter(tmp_path / "killed.zarr", attrs=ATTRS, num_windows=5, chunk_windows=2)
    assert w.group.attrs["settings"]["num_windows"] == 5 and not w.done_chunks().any()
    for name, attributes, array in (("attrs", {"owner": "someone"}, "input_ids"), ("array", {}, "their_data")):
        foreign = zarr.open_group(tmp_path / f"{name}.zarr", mode="w")
        foreign.update_attributes(attributes)
        foreign.create_array(array, shape=(2,), dtype="int32")
        with pytest.raises(BblError, match="other settings"):
            CacheWriter(tmp_path / f"{name}.zarr", attrs=ATTRS, num_windows=5, chunk_windows=2)
        assert array in zarr.open_group(tmp_path / f"{name}.zarr", mode="r")


def test_the_cache_attributes_arrive_in_one_write():
    """zarr's `attrs.update` writes zarr.json once per key: a kill between two writes left attributes without
    `settings`, a store no re-run recognised. Every zarr.json the writer stores has all of them or none."""
    written = []

    class Recording(zarr.storage.MemoryStore):
        async def set(self, key, value, byte_range=None):
            if key == "zarr.json":
                written.append(json.loads(value.to_bytes())["attributes"])
            return await super().set(key, value, byte_range)

    w = CacheWriter(Recording(), attrs=ATTRS, num_windows=2, chunk_windows=2)
    w.write_chunk(ChunkBatch(0, np.zeros((2, 4), np.int32), np.arange(2), np.zeros((2, 4, 3), np.int32),
                             np.zeros((2, 4, 3), np.float16), np.zeros((2, 4), np.float32)))
    w.finalize()
    assert written and written[-1]["complete"] is True
    assert all(not a or {"settings", "format_version", "complete"} <= set(a) for a in written), written


def test_bad_inputs(tiny_teachers, prepared, tmp_path):
    with pytest.raises(BblError, match="--topk"):
        dump(tiny_teachers, prepared, tmp_path / "a.zarr", top_k=TINY_VOCAB + 1)
    broken = save_random_model("llama-tiny", prepared, tmp_path / "nan")
    from safetensors.torch import load_file, save_file

    weights = load_file(broken / "model.safetensors")
    weights["model.norm.weight"][:] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BblError, match="NaN/inf logits on train window"):
        dump([broken], prepared, tmp_path / "b.zarr")
    other = tmp_path / "other_tok"
    save_random_model("llama-tiny", prepared, other)
    tok = other / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"<pad>"', '"<PAD>"'))
    with pytest.raises(BblError, match="different tokenizers"):
        dump([tiny_teachers[0], other], prepared, tmp_path / "c.zarr")


def test_shuffled_order_is_a_seeded_permutation_per_epoch():
    a = shuffled_order(1000, 64, seed=0, epoch=0)
    assert sorted(a.tolist()) == list(range(1000))
    assert a.tolist() == shuffled_order(1000, 64, seed=0, epoch=0).tolist()
    assert a.tolist() != shuffled_order(1000, 64, seed=0, epoch=1).tolist()
    # windows of one group come from buffer_chunks chunks only
    first = shuffled_order(1000, 64, seed=0, epoch=0, buffer_chunks=2)[:128]
    assert len({int(i) // 64 for i in first}) == 2


def test_disk_full_leaves_a_resumable_incomplete_store(tiny_teachers, prepared, tmp_path, monkeypatch):
    import errno

    real = CacheWriter.write_chunk
    calls = {"n": 0}

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, batch)

    monkeypatch.setattr(CacheWriter, "write_chunk", failing)
    with pytest.raises(BblError, match="No space left on device.*resume"):
        dump(tiny_teachers, prepared, tmp_path / "c.zarr")
    with pytest.raises(BblError, match="incomplete"):
        CacheReader(tmp_path / "c.zarr")
    monkeypatch.setattr(CacheWriter, "write_chunk", real)
    dump(tiny_teachers, prepared, tmp_path / "c.zarr")
    dump(tiny_teachers, prepared, tmp_path / "ref.zarr")
    a, b = arrays(tmp_path / "c.zarr"), arrays(tmp_path / "ref.zarr")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_verify_with_teachers_other_than_the_caches_fails_before_any_number(sparse_caches, tiny_teachers):
    """One of a cache's two teachers is not its ensemble: verify compares the teachers' weights hashes the cache
    records first, and fails naming the teachers to pass; no fidelity figure is computed with the wrong ones."""
    from .helpers import run

    cache = sparse_caches["topk"]
    for given in ([tiny_teachers[0]], [tiny_teachers[1]], [tiny_teachers[0], tiny_teachers[0]]):
        res = run(["cache", "verify", "--cache", cache, *[a for t in given for a in ("--teacher", t)], "--sample", 2])
        assert res.exit_code == 1, res.output
        assert "not the ones the cache was dumped with" in res.output and "fidelity" not in res.output, res.output
    both = ["--teacher", tiny_teachers[1], "--teacher", tiny_teachers[0]]  # any order
    res = run(["cache", "verify", "--cache", cache, *both, "--sample", 2])
    assert res.exit_code == 0 and "fidelity" in res.output, res.output
    # the max error has a stated tolerance, and it can fail
    res = run(["cache", "verify", "--cache", cache, *both, "--sample", 2, "--max-logprob-error", "1e-9"])
    assert res.exit_code == 1 and "exceeds --max-logprob-error 1e-09" in res.output, res.output
