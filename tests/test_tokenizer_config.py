"""The tokenizer config every bbl model dir carries (issue 44): one the BabyLM pipeline's transformers 4.51.3 reads
as bbl's transformers 5 does (`bbl.data.tokenizer.portable_config`), `bbl fix-tokenizer` for dirs written before,
token ids unchanged. Loading under 4.51.3 itself is checked in the pipeline's own env (test_pipeline_parity.py)."""

import json
import shutil

import pytest
from click.testing import CliRunner

from bbl.cli import main
from bbl.data.tokenizer import PORTABLE_CLASS, portable_config, write_portable_config

from .conftest import save_random_model

TEXTS = ["The cat sat.", " the dog", "the dog", "Hello world", "", "naïve ﬁ café", "line\nbreak", "<s> a </s>"]


def hf_ids(d):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(d))
    return [tok(t)["input_ids"] for t in TEXTS], [tok(t, return_offsets_mapping=True)["offset_mapping"] for t in TEXTS]


def raw_ids(d):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    return [tok.encode(t).ids for t in TEXTS]


def old_style_dir(prepared, out):
    """A model dir as bbl wrote it before issue 44: transformers 5's own save (class TokenizersBackend)."""
    from transformers import AutoTokenizer

    save_random_model("gpt2-tiny", prepared, out)
    (out / "tokenizer_config.json").unlink()
    AutoTokenizer.from_pretrained(str(prepared / "tokenizer")).save_pretrained(str(out))
    return out


def test_portable_config_names_a_class_both_versions_know_and_the_pre_tokenizers_prefix_space():
    config = {"tokenizer_class": "TokenizersBackend", "backend": "tokenizers", "is_local": True,
              "local_files_only": True, "bos_token": "<s>", "model_max_length": 128}
    byte_level = {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True}}
    out = portable_config(config, byte_level)
    assert out == {"tokenizer_class": PORTABLE_CLASS, "bos_token": "<s>", "model_max_length": 128,
                   "add_prefix_space": True}
    no_space = {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}}
    assert portable_config(config, no_space)["add_prefix_space"] is False
    # a pre-tokenizer without the flag: 4.x leaves it alone, so the config names none (a stale one is dropped)
    sequence = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel", "add_prefix_space": True}]}}
    assert "add_prefix_space" not in portable_config({**config, "add_prefix_space": True}, sequence)
    assert "add_prefix_space" not in portable_config(config, {"pre_tokenizer": None})


def test_every_dir_bbl_writes_is_portable_and_tokenizes_as_its_tokenizer_json(prepared, tmp_path):
    model = save_random_model("llama-tiny", prepared, tmp_path / "model")
    for d in (prepared / "tokenizer", model):
        config = json.loads((d / "tokenizer_config.json").read_text())
        assert config["tokenizer_class"] == PORTABLE_CLASS and config["add_prefix_space"] is True
        assert not {"backend", "is_local", "local_files_only"} & set(config)
        assert hf_ids(d)[0] == raw_ids(d)  # transformers 5 reads tokenizer.json as it is: the prefix space kept
        assert raw_ids(d)[1] == raw_ids(d)[2]  # "the dog" gets the prefix space " the dog" has
        assert not write_portable_config(d)  # already portable: nothing rewritten


def test_fix_tokenizer_rewrites_old_dirs_config_only_and_keeps_every_token(prepared, tmp_path):
    old = old_style_dir(prepared, tmp_path / "run")
    assert json.loads((old / "tokenizer_config.json").read_text())["tokenizer_class"] == "TokenizersBackend"
    chck = old / "word_checkpoints" / "chck_1M"
    shutil.copytree(old, chck)
    tokenizer_json = (old / "tokenizer.json").read_bytes()
    before = hf_ids(old)

    r = CliRunner().invoke(main, ["fix-tokenizer", str(old)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [f"{old}: rewrote tokenizer_config.json", f"{chck}: rewrote tokenizer_config.json"]
    for d in (old, chck):
        assert json.loads((d / "tokenizer_config.json").read_text())["tokenizer_class"] == PORTABLE_CLASS
        assert (d / "tokenizer.json").read_bytes() == tokenizer_json and hf_ids(d) == before
    r = CliRunner().invoke(main, ["fix-tokenizer", str(old)])
    assert r.exit_code == 0 and r.output.count("already portable") == 2


@pytest.mark.parametrize("make", ["empty", "damaged"])
def test_fix_tokenizer_refuses_a_dir_without_a_readable_tokenizer_in_one_line(tmp_path, make):
    d = tmp_path / "model"
    d.mkdir()
    if make == "damaged":
        (d / "tokenizer.json").write_text('{"model": ')
    r = CliRunner().invoke(main, ["fix-tokenizer", str(d)])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and r.output.startswith("error: ")
    assert ("no tokenizer.json" if make == "empty" else "tokenizer.json") in r.output


def test_export_of_an_old_run_commits_the_portable_config_and_leaves_the_run_as_it_was(prepared, tmp_path):
    old = old_style_dir(prepared, tmp_path / "run")
    (old / "bbl_run.json").write_text(json.dumps({"complete": True, "global_step": 1, "ledger": {"words_seen": 10}}))
    config = (old / "tokenizer_config.json").read_bytes()
    r = CliRunner().invoke(main, ["export", str(old), "--out", str(tmp_path / "repo")])
    assert r.exit_code == 0, r.output
    committed = json.loads((tmp_path / "repo" / "tokenizer_config.json").read_text())
    assert committed["tokenizer_class"] == PORTABLE_CLASS and committed["add_prefix_space"] is True
    assert (old / "tokenizer_config.json").read_bytes() == config  # the source run is not touched
    assert (tmp_path / "repo" / "tokenizer.json").read_bytes() == (old / "tokenizer.json").read_bytes()
    assert hf_ids(tmp_path / "repo") == hf_ids(old)
