"""Teachers the 2026 BabyLM rules allow (issue 25): a pretrained-style Qwen2 whose output is padded past its
tokenizer, built here with its own tokenizer. Prepare with --tokenizer, dump, verify, repair, distill cached and
online: no stored id is a padding id, and the padding's (large) logits carry no mass; bf16 teachers; the ledger
records the teacher as external, apart from the words bbl's own teachers saw."""

import json
import shutil

import numpy as np
import pytest

from bbl.cache.reader import CacheReader
from bbl.data.prepare import prepare
from bbl.data.prepared import PreparedData
from bbl.errors import BblError

from .conftest import WORDS
from .helpers import arrays, dump, error_lines, quiet, run

PADDING = 27  # Qwen2.5's 151,936 outputs for a 151,665-id tokenizer, in miniature


def word_tokenizer(out, extra=()):
    """A word-level fast tokenizer of the tiny corpus' words (and `extra` ones)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "[UNK]", ".", *sorted(set(WORDS)), *extra]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="<pad>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(str(out))
    return out, len(words)


def qwen_teacher(out, tok_dir, vocab, *, seed=0):
    """A random tiny Qwen2 whose LM head has `PADDING` extra rows, made to dominate: undropped, they would take
    almost all the mass and the top-k."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab + PADDING, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=64, tie_word_embeddings=False,
                                         bos_token_id=1, eos_token_id=2))
    with torch.no_grad():
        model.lm_head.weight[vocab:] = 50.0 * model.lm_head.weight[vocab:].sign()
    model.save_pretrained(str(out))
    for f in tok_dir.iterdir():
        shutil.copyfile(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def qwen(tiny_babylm, tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen")
    tok_dir, vocab = word_tokenizer(root / "tokenizer")
    prepared = root / "prepared"
    prepare(*tiny_babylm, prepared, tokenizer_dir=tok_dir, progress=False, log=quiet)
    teacher = qwen_teacher(root / "teacher", tok_dir, vocab)
    cache = root / "cache.zarr"
    dump([teacher], prepared, cache, top_k=16)
    return prepared, teacher, cache, vocab


def test_a_padded_teacher_stores_no_padding_id_and_its_mass_sits_on_real_ids(qwen):
    import torch

    prepared, teacher, cache, vocab = qwen
    reader = CacheReader(cache)
    assert reader.vocab_size == vocab == PreparedData(prepared).vocab_size
    info = reader.attrs["teachers"][0]
    assert (info["vocab_size"], info["output_size"]) == (vocab, vocab + PADDING)
    a = arrays(cache)
    assert a["topk_ids"].max() < vocab
    mass = np.exp(a["topk_logprobs"].astype(np.float64)).sum(-1) + np.exp(a["tail_logprob"].astype(np.float64))
    assert np.abs(mass - 1).max() < 0.02  # the k + 1 outcomes over the real ids hold all the mass
    # the stored log-probs are the softmax over the tokenizer's ids only, by hand from the model's logits
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(teacher)).eval()
    ids = torch.from_numpy(a["input_ids"][:1].astype(np.int64))
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    assert logits[:, vocab:].max() > logits[:, :vocab].max() + 10  # the padding would have won every position
    logp = torch.log_softmax(logits[:, :vocab] / reader.temperature, -1)
    got = torch.from_numpy(a["topk_logprobs"][0].astype(np.float64))
    want = logp.gather(-1, torch.from_numpy(a["topk_ids"][0].astype(np.int64)))
    assert (got - want).abs().max() < 2 ** -6  # the stored grid's rounding


def test_verify_and_repair_a_padded_teachers_cache(qwen, tmp_path):
    prepared, teacher, cache, _ = qwen
    res = run(["cache", "verify", "--cache", cache, "--teacher", teacher])
    assert res.exit_code == 0 and "fidelity over" in res.output, res.output
    copy = tmp_path / "c.zarr"
    shutil.copytree(cache, copy)
    (copy / "topk_ids" / "c" / "1" / "0" / "0").unlink()
    assert run(["cache", "verify", "--cache", copy]).exit_code == 1
    res = run(["cache", "repair", "--cache", copy, "--teacher", teacher, "--data", prepared])
    assert res.exit_code == 0, res.output
    want, got = arrays(cache), arrays(copy)
    for k in want:
        np.testing.assert_array_equal(want[k], got[k], err_msg=k)


def test_students_distil_from_it_cached_and_online_and_the_ledger_marks_it_external(qwen, tmp_path):
    prepared, teacher, cache, vocab = qwen
    common = ["student-tiny", "--data", prepared, "--set", "training.max_steps=2", "--set",
              f"model.vocab_size={vocab}"]
    for mode, extra in (("cached", ["--cache", cache]), ("online", ["--teacher", teacher])):
        out = tmp_path / mode
        res = run(["distill", *common, "--out", out, *extra])
        assert res.exit_code == 0, res.output
        ledger = json.loads((out / "bbl_run.json").read_text())["ledger"]
        (t,) = ledger["teachers"]
        assert t["external"] and t["name"] == teacher.name and t["parameters"] > 0
        assert ledger["external_teachers"] == [teacher.name]
        assert ledger["words_seen_with_teachers"] == ledger["words_seen"] > 0  # counted apart, not summed


def test_a_bf16_dump_is_close_to_the_fp32_one(qwen, tmp_path):
    prepared, teacher, cache, _ = qwen
    bf16 = tmp_path / "bf16.zarr"
    dump([teacher], prepared, bf16, top_k=16, dtype="bf16")
    assert CacheReader(bf16).attrs["dump_config"]["dtype"] == "bf16"
    a, b = arrays(cache), arrays(bf16)
    lp32 = np.exp(a["topk_logprobs"].astype(np.float64)).sum(-1)
    lp16 = np.exp(b["topk_logprobs"].astype(np.float64)).sum(-1)
    assert np.abs(lp32 - lp16).max() < 0.05  # the top-k mass, position by position
    same = (a["topk_ids"] == b["topk_ids"]).mean()
    assert same > 0.9  # bf16 reorders few near-ties at the top-k boundary
    assert b["topk_ids"].max() < CacheReader(bf16).vocab_size


def test_a_teacher_whose_tokenizer_differs_is_refused_in_one_line(qwen, tmp_path):
    prepared, _, _, _ = qwen
    tok_dir, vocab = word_tokenizer(tmp_path / "other_tok", extra=["zebra"])
    other = qwen_teacher(tmp_path / "other", tok_dir, vocab)
    res = run(["dump-logits", "--teacher", other, "--data", prepared, "--cache", tmp_path / "x.zarr", "--topk", "4",
               "--seq-len", "32"])
    assert res.exit_code == 1 and len(error_lines(res)) == 1 and "tokenizer differs" in error_lines(res)[0]
    assert not (tmp_path / "x.zarr").exists()
    with pytest.raises(BblError, match="tokenizer differs"):
        dump([other], prepared, tmp_path / "y.zarr")


def test_a_device_mapped_teacher_dumps_and_repairs_the_same_bytes(qwen, tmp_path):
    """`--device-map auto` loads through accelerate's big-model placement (on this CPU machine: every layer on the
    CPU); the cache equals the plainly loaded one, records the placement, and a repair reuses it."""
    from bbl.cache.dump import dump_logits

    prepared, teacher, cache, _ = qwen
    mapped = tmp_path / "mapped.zarr"
    res = run(["dump-logits", "--teacher", teacher, "--data", prepared, "--cache", mapped, "--topk", 16, "--seq-len",
               32, "--chunk-windows", 4, "--batch-size", 2, "--max-windows", 24, "--device", "cpu", "--device-map",
               "auto"])
    assert res.exit_code == 0, res.output
    want, got = arrays(cache), arrays(mapped)
    for k in want:
        np.testing.assert_array_equal(want[k], got[k], err_msg=k)
    assert CacheReader(mapped).attrs["dump_device_map"] == "auto"
    (mapped / "tail_logprob" / "c" / "2" / "0").unlink()
    res = run(["cache", "repair", "--cache", mapped, "--teacher", teacher, "--data", prepared])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(arrays(mapped)["tail_logprob"], want["tail_logprob"])
    # no --batch-size: 16 on CPU, recorded; a resumed store keeps the size it was dumped with
    auto = tmp_path / "auto.zarr"
    from .helpers import dump_config

    dump_logits([teacher], prepared, auto, dump_config(top_k=16, batch_size=None), progress=False, log=quiet)
    assert CacheReader(auto).attrs["dump_batch_size"] == 16 == CacheReader(auto).attrs["dump_config"]["batch_size"]
    from bbl.cache.dump import EnsembleChunkComputer, resolve_batch_size
    from bbl.cache.dump_config import DumpConfig

    computer = EnsembleChunkComputer([], [], None, DumpConfig(), device="cuda:0", id_dtype=np.int64, vocab_size=1)
    assert resolve_batch_size(DumpConfig(), computer, cache, device="cuda:0", log=quiet).batch_size == 2  # the store's own


def test_the_gpu_batch_size_is_the_first_that_fits_as_accelerate_lowers_it():
    """What `dump-logits` without --batch-size does on a GPU, driven by a forward pass that runs out of memory
    above 40 windows (the out-of-memory error is torch's own type; no GPU needed to raise it)."""
    import torch

    from bbl.cache.dump import largest_fitting_batch

    tried = []

    def forward(batch_size):
        tried.append(batch_size)
        if batch_size > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert largest_fitting_batch(forward, 256) == 40 and tried[0] == 256 and tried == sorted(tried, reverse=True)

    def broken(batch_size):
        raise ValueError("not a memory error")

    with pytest.raises(ValueError, match="not a memory error"):
        largest_fitting_batch(broken, 256)
