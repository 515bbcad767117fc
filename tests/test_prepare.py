"""`bbl prepare`: tokenizer, streams, manifest, windows, re-runs and bad input."""

import json
import re

import numpy as np
import pytest

from bbl.data.prepare import prepare
from bbl.data.prepared import PreparedData, stream_dtype
from bbl.data.verify import official_manifest
from bbl.data.windows import EpochPermutationSampler, TokenWindows, window_permutation, window_subset
from bbl.errors import BblError

from .conftest import TINY_VOCAB, real_data_or_skip, write_tiny_babylm
from .helpers import quiet, run


def test_tokenizer_round_trip_and_specials(prepared):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(prepared / "tokenizer")
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert len(tok) == TINY_VOCAB
    text = "the big dog saw a happy bird."
    ids = tok(text)["input_ids"]
    assert tok.decode(ids).strip() == text
    assert tok.decode(tok("naïve ﬁ")["input_ids"]).strip() == "naïve fi"  # NFKC folds the ligature


@pytest.mark.parametrize("vocab, dtype", [(1, np.uint16), (16000, np.uint16), (65536, np.uint16),
                                          (65537, np.int32), (200_000, np.int32)])
def test_stream_dtype_is_smallest_that_fits(vocab, dtype):
    assert stream_dtype(vocab) == np.dtype(dtype)


def test_manifest_counts_and_hashes(prepared, tiny_babylm):
    data = PreparedData(prepared, check_hashes=True)
    m = data.manifest
    train_words = sum(len(p.read_text().split()) for p in tiny_babylm[0].glob("*.train"))
    assert m["totals"]["train"]["words"] == train_words
    assert m["totals"]["train"]["tokens"] == len(data.stream("train"))
    assert m["dtype"] == "uint16" and data.stream("train").dtype == np.uint16
    assert data.stream("train").max() < m["vocab_size"]
    assert {f["source"] for f in m["files"]} == {"aochildes", "switchboard"}


def test_windows_are_contiguous_and_permutation_is_seeded():
    stream = np.arange(1000, dtype=np.uint16)
    ds = TokenWindows(stream, 128)
    assert len(ds) == len(stream) // 128  # full windows only: the trailing partial one is dropped
    assert ds[3]["input_ids"].tolist() == list(range(384, 512))
    a, b = window_permutation(len(ds), seed=1, epoch=0), window_permutation(len(ds), seed=1, epoch=0)
    assert a.tolist() == b.tolist() and sorted(a.tolist()) == list(range(len(ds)))
    epochs = {tuple(window_permutation(50, seed=1, epoch=e)) for e in range(5)}
    assert len(epochs) == 5
    sampler = EpochPermutationSampler(50, seed=1)
    sampler.set_epoch(3)
    assert list(sampler) == window_permutation(50, seed=1, epoch=3).tolist()


def test_dev_subset_is_fixed_and_capped():
    assert window_subset(10, 8192, seed=0).tolist() == list(range(10))
    s = window_subset(1000, 100, seed=0)
    assert len(s) == 100 and len(set(s.tolist())) == 100 and s.tolist() == window_subset(1000, 100, seed=0).tolist()


def test_rerun_skips_and_force_redoes(tiny_babylm, tmp_path):
    out = tmp_path / "p"
    logs = []
    prepare(*tiny_babylm, out, vocab_size=TINY_VOCAB, progress=False, log=quiet)
    prepare(*tiny_babylm, out, vocab_size=TINY_VOCAB, progress=False, log=logs.append)
    assert any("tokenizer: up to date" in line for line in logs)
    logs.clear()
    prepare(*tiny_babylm, out, vocab_size=TINY_VOCAB, force=True, progress=False, log=logs.append)
    assert not any("up to date" in line for line in logs)


def run_cli(*args):
    return run(args)


def one_line_error(result, *needles):
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_missing_dir(tmp_path):
    one_line_error(run_cli("prepare", "--train-dir", tmp_path / "nope", "--dev-dir", tmp_path, "--out",
                           tmp_path / "o"), "nope", "directory not found")


def test_bad_no_train_files(tmp_path):
    (tmp_path / "t").mkdir()
    one_line_error(run_cli("prepare", "--train-dir", tmp_path / "t", "--dev-dir", tmp_path, "--out", tmp_path / "o"),
                   "no *.train files")


def test_bad_empty_file(tmp_path):
    train, dev = write_tiny_babylm(tmp_path)
    (train / "cbt.train").write_text("")
    r = run_cli("prepare", "--train-dir", train, "--dev-dir", dev, "--out", tmp_path / "o")
    one_line_error(r, "cbt.train", "empty")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_bad_non_utf8_names_byte_offset(tmp_path):
    train, dev = write_tiny_babylm(tmp_path)
    (train / "cbt.train").write_bytes(b"hello world\n\xff\xfe bad")
    r = run_cli("prepare", "--train-dir", train, "--dev-dir", dev, "--out", tmp_path / "o")
    one_line_error(r, "cbt.train", "byte offset 12")


def test_bad_vocab_too_large(tmp_path):
    train, dev = write_tiny_babylm(tmp_path, lines=30)
    r = run_cli("prepare", "--train-dir", train, "--dev-dir", dev, "--out", tmp_path / "o", "--vocab-size", 50000)
    one_line_error(r, "--vocab-size")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_bad_out_holds_other_inputs(tmp_path):
    train, dev = write_tiny_babylm(tmp_path)
    prepare(train, dev, tmp_path / "o", vocab_size=TINY_VOCAB, progress=False, log=quiet)
    with open(train / "aochildes.train", "a") as f:
        f.write("a new line of text .\n")
    one_line_error(run_cli("prepare", "--train-dir", train, "--dev-dir", dev, "--out", tmp_path / "o",
                           "--vocab-size", TINY_VOCAB), "different inputs", "--force")
    assert run_cli("prepare", "--train-dir", train, "--dev-dir", dev, "--out", tmp_path / "o", "--vocab-size",
                   TINY_VOCAB, "--force").exit_code == 0


def test_prepared_data_refuses_unprepared_dir(tmp_path):
    with pytest.raises(BblError, match="bbl prepare"):
        PreparedData(tmp_path)


def test_data_verify_reports_each_file(tmp_path):
    root = real_data_or_skip()
    r = run_cli("data", "verify", root, "--json")
    report = json.loads(r.output)
    manifest = official_manifest()  # what is expected follows from the files this copy holds (part or all of it)
    present = {rel for rel in manifest if (root / rel).is_file()}
    assert present, "the data dir holds no file of the 2023 release"
    assert report["release"] == "babylm-2023" and report["releases"][0]["identical"] == len(present)
    rows = {f"{x['split']}/{x['source']}": x["status"] for x in report["files"]}
    assert len(rows) == len(manifest)
    for rel in manifest:
        assert rows[rel.rsplit(".", 1)[0]] == ("identical" if rel in present else "missing"), rel
    rel = sorted(present)[0]  # one byte appended to a release file
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_bytes((root / rel).read_bytes() + b"x")
    r = run_cli("data", "verify", tmp_path, "--json")
    assert r.exit_code == 1
    rows = {f"{x['split']}/{x['source']}": x["status"] for x in json.loads(r.output)["files"]}
    assert rows[rel.rsplit(".", 1)[0]] == "modified"


@pytest.mark.slow
def test_prepare_real_babylm_matches_readme_word_counts(tmp_path):
    root = real_data_or_skip()
    readme = (root / "README.md").read_text()
    expected = {m.group(1): int(m.group(2).replace(",", ""))
                for m in re.finditer(r"\| (babylm_10M|babylm_dev)(?: \([a-z]+\))? \| ([\d,]+) \|", readme)}
    per_source = dict(re.findall(r"(aochildes|cbt|children_stories|switchboard) ([\d,]+)",
                                 readme.split("| babylm_dev")[0]))
    m = prepare(root / "babylm_10M", root / "babylm_dev", tmp_path / "p", progress=False, log=quiet)
    assert m["totals"]["train"]["words"] == expected["babylm_10M"]
    assert m["totals"]["dev"]["words"] == expected["babylm_dev"]
    for f in m["files"]:
        if f["split"] == "train":
            assert f["words"] == int(per_source[f["source"]].replace(",", ""))
    assert m["vocab_size"] == 16000
    assert 1.0 < m["totals"]["train"]["tokens_per_word"] < 1.6
