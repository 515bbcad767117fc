"""The cache's storage options (issue 33): a coarser log-prob grid, delta-coded ids, draws as counts. Each one:
dump -> verify against the teachers -> a lost chunk repaired byte-identical -> read by distillation; a default
dump records none of them (so its bytes are those of every earlier dump)."""

import shutil

import numpy as np
import pytest

from bbl.cache import CacheReader
from bbl.cache.format import count_draws, expand_draws
from bbl.cache.verify import verify_against_teachers
from bbl.errors import BblError

from .helpers import SEQ, arrays, dump, error_lines, run

STEP = 2.0 ** -4
OPTIONS = {  # name -> dump_config keywords; "ref" is the same kind with the default storage
    "coarse": {"logprob_step": STEP},
    "delta": {"delta_ids": True},
    "sampled_counts": {"targets": "sampled", "num_samples": 12, "sample_counts": True, "delta_ids": True},
    "hybrid_counts": {"targets": "hybrid", "num_samples": 6, "sample_counts": True},
}
REFERENCE = {"coarse": "topk", "delta": "topk", "sampled_counts": "sampled", "hybrid_counts": "hybrid"}


@pytest.fixture(scope="module")
def caches(sparse_caches, tiny_teachers, prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    paths = dict(sparse_caches)  # the references: each option's cache against its kind's plain one
    for name, kw in OPTIONS.items():
        paths[name] = root / f"{name}.zarr"
        dump(tiny_teachers, prepared, paths[name], **kw)
    return paths


def test_counts_are_the_draws_exactly():
    rng = np.random.default_rng(0)
    draws = np.sort(rng.integers(0, 7, size=(5, 9, 12)), -1).astype(np.uint16)  # many repeats
    ids, counts = count_draws(draws)
    assert counts.dtype == np.uint8 and (counts.sum(-1) == 12).all()
    distinct = (counts > 0).sum(-1)
    assert (distinct == 1 + (np.diff(draws.astype(int), axis=-1) != 0).sum(-1)).all()
    used = np.arange(12) < distinct[..., None]
    assert (ids[~used] == 0).all() and (np.diff(np.where(used, ids, 99).astype(int), axis=-1)[used[..., 1:]] > 0).all()
    np.testing.assert_array_equal(expand_draws(ids, counts), draws)
    counts[0, 0, 0] += 1
    with pytest.raises(BblError, match="do not sum"):
        expand_draws(ids, counts)


def test_a_default_dump_records_no_storage_option(caches):
    attrs = CacheReader(caches["topk"]).attrs
    assert not {"delta_ids", "sample_counts"} & set(attrs) and "logprob_step" not in attrs["dump_config"]
    assert attrs["logprob_step"] == 2.0 ** -6
    assert not {"delta_ids", "sample_counts"} & set(attrs["settings"])


@pytest.mark.parametrize("name", ["delta", "sampled_counts", "hybrid_counts"])
def test_lossless_options_read_as_the_default_cache(name, caches):
    want, got = CacheReader(caches[REFERENCE[name]]), CacheReader(caches[name])
    a, b = want.read(0, len(want)), got.read(0, len(got))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    raw = arrays(caches[name])
    if "sample_counts" in raw:  # stored as counts: they sum to the draws at every position
        assert (raw["sample_counts"].sum(-1) == got.num_samples).all()
        assert raw["sample_ids"].shape == raw["sample_counts"].shape
    if name == "delta":
        meta = got.group["topk_ids"].metadata.to_dict()
        assert any(c["name"] == "numcodecs.delta" for c in meta["codecs"])


def test_a_coarser_grid_stays_within_its_documented_kl_bound(caches, tiny_teachers):
    lp = arrays(caches["coarse"], ["topk_logprobs"])["topk_logprobs"].astype(np.float64)
    assert (np.round(lp / STEP) * STEP == lp).all()  # every value on the grid
    fine = verify_against_teachers(CacheReader(caches["topk"]), tiny_teachers, sample=8)
    coarse = verify_against_teachers(CacheReader(caches["coarse"]), tiny_teachers, sample=8)
    assert coarse["max_abs_logprob_error"] <= STEP / 2 + 1e-3  # half the grid, plus fp16's own rounding
    assert coarse["max_kl"] <= STEP ** 2 / 8 and coarse["mean_kl"] >= fine["mean_kl"]
    res = run(["cache", "verify", caches["coarse"], "--teacher", tiny_teachers[0], "--teacher", tiny_teachers[1]])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("name,array", [("coarse", "topk_logprobs"), ("delta", "topk_ids"),
                                        ("sampled_counts", "sample_counts"), ("hybrid_counts", "sample_ids")])
def test_a_lost_chunk_is_repaired_byte_identical(name, array, caches, tiny_teachers, tmp_path):
    path = tmp_path / "c.zarr"
    shutil.copytree(caches[name], path)
    if "sample_ids" in arrays(path):
        r = verify_against_teachers(CacheReader(path), tiny_teachers, sample=8)
        assert abs(r["draws_z"]) < 5, r
    chunk = path / array / "c" / "2" / "0" / "0"
    if not chunk.exists():
        chunk = path / array / "c" / "2" / "0"
    chunk.unlink()
    assert run(["cache", "verify", path]).exit_code == 1
    res = run(["cache", "repair", path, "--teacher", tiny_teachers[0], "--teacher", tiny_teachers[1]])
    assert res.exit_code == 0, res.output
    assert chunk.read_bytes() == (caches[name] / chunk.relative_to(path)).read_bytes()


@pytest.mark.parametrize("name,variant", [("coarse", "topk_tail"), ("sampled_counts", "sampled"),
                                          ("hybrid_counts", "hybrid")])
def test_distill_reads_each_option_through_its_kinds_variant(name, variant, caches, prepared, tmp_path):
    out = tmp_path / "student"
    res = run(["distill", "student-tiny", "--cache", caches[name], "--data", prepared, "--out", out,
               "--set", f"distill.kd_variant={variant}", "--set", "training.max_steps=2",
               "--set", f"training.seq_len={SEQ}"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("extra,option", [
    (["--logprob-step", "0.3"], "--logprob-step"),
    (["--logprob-step", "0.5"], "--logprob-step"),
    (["--sample-counts"], "--sample-counts"),  # a top-k cache has no draws
    (["--kd-fraction", "0"], "--kd-fraction"),
    (["--kd-fraction", "1.5"], "--kd-fraction"),
])
def test_bad_storage_options_are_one_line_and_write_nothing(extra, option, tiny_teachers, prepared, tmp_path):
    out = tmp_path / "c.zarr"
    res = run(["dump-logits", "--teacher", tiny_teachers[0], "--data", prepared, "--out", out, *extra])
    assert res.exit_code == 2 and len(error_lines(res)) == 1 and option in error_lines(res)[0], res.output  # usage
    assert not out.exists()


# ---------------------------------------------------------------- --kd-fraction: targets at selected positions only


@pytest.fixture(scope="module")
def selected(caches, tiny_teachers, prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("selected")
    paths = {"topk": root / "topk.zarr", "sampled": root / "sampled.zarr"}
    dump(tiny_teachers, prepared, paths["topk"], kd_fraction=0.25)
    dump(tiny_teachers, prepared, paths["sampled"], targets="sampled", num_samples=12, kd_fraction=0.5,
         sample_counts=True)
    return paths


def test_selected_positions_are_the_highest_entropy_ones_and_hold_the_full_caches_targets(
        selected, caches, tiny_teachers):
    import torch

    from bbl.models.ensemble import ensemble_logits
    from bbl.models.teachers import load_teachers

    teachers, _ = load_teachers(tiny_teachers, "cpu")
    for kind, fraction in (("topk", 0.25), ("sampled", 0.5)):
        reader, full = CacheReader(selected[kind]), CacheReader(caches[kind])
        got, want = reader.read(0, len(reader)), full.read(0, len(full))
        mask = got.pop("kd_mask")
        assert (mask.sum(-1) == int(np.ceil(fraction * SEQ))).all()
        with torch.inference_mode():
            logp = torch.log_softmax(ensemble_logits(teachers, torch.from_numpy(got["input_ids"].astype(np.int64)))
                                     / reader.temperature, -1)
        entropy = -(logp.exp() * logp).sum(-1).numpy()
        kept_min = np.where(mask, entropy, np.inf).min(-1)
        left_max = np.where(mask, -np.inf, entropy).max(-1)
        assert (kept_min >= left_max - 1e-4).all()  # every kept position at least as uncertain as any left out
        for k in want:
            if k in ("input_ids", "window_idx"):
                np.testing.assert_array_equal(got[k], want[k])
                continue
            m = mask.reshape(mask.shape + (1,) * (want[k].ndim - 2))
            np.testing.assert_array_equal(got[k], np.where(m, want[k], 0), err_msg=k)  # same draws where kept
        r = verify_against_teachers(reader, tiny_teachers, sample=8)
        assert r["kd_mask_errors"] == 0, r


def test_a_left_out_position_adds_nothing_to_the_loss_or_its_gradient():
    import torch

    from bbl.losses.chunked import KDTargets, chunked_head_loss

    torch.manual_seed(0)
    hidden, weight = torch.randn(2, 6, 8, requires_grad=True), torch.randn(20, 8, requires_grad=True)
    labels = torch.randint(0, 20, (2, 6))
    ids = torch.randint(0, 20, (2, 6, 4))
    top = torch.log_softmax(torch.randn(2, 6, 5), -1)
    keep = torch.zeros(2, 6, dtype=torch.bool)
    keep[:, ::2] = True
    masked = KDTargets("topk_tail", topk_ids=ids, topk_logprobs=top[..., :4].masked_fill(~keep[..., None], -np.inf),
                       tail_logprob=top[..., 4].masked_fill(~keep, -np.inf))
    loss, _, kd = chunked_head_loss(hidden, weight, labels, kd=masked, alpha=0.0, temperature=2.0)
    loss.backward()
    assert torch.isfinite(hidden.grad).all() and (hidden.grad[~keep] == 0).all()
    kept = KDTargets("topk_tail", topk_ids=ids[keep][None], topk_logprobs=top[..., :4][keep][None],
                     tail_logprob=top[..., 4][keep][None])
    _, _, kd_kept = chunked_head_loss(hidden[keep][None], weight, labels[keep][None], kd=kept, alpha=0.0,
                                      temperature=2.0)
    torch.testing.assert_close(kd, kd_kept * keep.float().mean())  # token_mean divides by every position


def test_a_selected_cache_is_verified_repaired_and_distilled(selected, tiny_teachers, prepared, tmp_path):
    res = run(["cache", "verify", selected["sampled"], "--teacher", tiny_teachers[0], "--teacher",
               tiny_teachers[1]])
    assert res.exit_code == 0 and "kd_mask over" in res.output, res.output
    path = tmp_path / "c.zarr"
    shutil.copytree(selected["topk"], path)
    chunk = path / "kd_mask" / "c" / "3" / "0"
    chunk.unlink()
    assert run(["cache", "verify", path]).exit_code == 1
    assert run(["cache", "repair", path, "--teacher", tiny_teachers[0], "--teacher", tiny_teachers[1]]).exit_code == 0
    assert chunk.read_bytes() == (selected["topk"] / "kd_mask" / "c" / "3" / "0").read_bytes()
    for kind, variant in (("topk", "topk_tail"), ("sampled", "sampled")):
        res = run(["distill", "student-tiny", "--cache", selected[kind], "--data", prepared, "--out",
                   tmp_path / kind, "--set", f"distill.kd_variant={variant}", "--set", "training.max_steps=2",
                   "--set", f"training.seq_len={SEQ}"])
        assert res.exit_code == 0, res.output
    res = run(["distill", "student-tiny", "--cache", selected["topk"], "--data", prepared, "--out", tmp_path / "r",
               "--set", "distill.kd_variant=topk_renorm", "--set", f"training.seq_len={SEQ}"])
    assert res.exit_code == 1 and "--kd-fraction" in error_lines(res)[0], res.output


def test_the_overlapped_dump_computes_what_a_sequential_loop_does(tiny_teachers, prepared):
    """The dump runs each batch's ensemble on a worker thread beside the next forward pass, and the stored form on
    the writer thread: the chunk must equal one computed batch after batch on this thread."""
    import torch

    from bbl.cache.dump import EnsembleChunkComputer, dump_windows
    from bbl.cache.format import count_draws, quantize_logprobs, sort_by_id
    from bbl.data.prepared import PreparedData
    from bbl.models.teachers import load_teachers

    from .helpers import dump_config

    data = PreparedData(prepared)
    teachers, infos = load_teachers(tiny_teachers, "cpu")
    for kw in ({}, {"targets": "hybrid", "num_samples": 6, "sample_counts": True}):
        config = dump_config(**kw)
        computer = EnsembleChunkComputer(teachers, infos, dump_windows(data, config), config, device="cpu",
                                 id_dtype=np.uint16, vocab_size=data.vocab_size)
        got = computer.compute(1)
        rows, kind = computer.rows(1), computer.draw_settings(1)
        ids = np.stack([computer.windows.window(i) for i in rows])
        parts = [computer.batch_targets(torch.from_numpy(ids[b:b + 2]), kind) for b in range(0, len(rows), 2)]
        want = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
        top_ids, top_lp = sort_by_id(want["topk_ids"], want["topk_logprobs"])
        np.testing.assert_array_equal(got.topk_ids, top_ids)
        np.testing.assert_array_equal(got.topk_logprobs, quantize_logprobs(top_lp))
        np.testing.assert_array_equal(got.tail_logprob, want["tail_logprob"])
        if "sample_ids" in want:
            for a, b in zip((got.sample_ids, got.sample_counts), count_draws(want["sample_ids"].astype(np.uint16)),
                            strict=True):
                np.testing.assert_array_equal(a, b)
