"""Bring your own tokenizer and teacher (issue 14): `bbl prepare --tokenizer DIR` with a tokenizer of more than
65,535 ids built here, an HF causal LM saved with it as the teacher, int32 streams and caches, a distilled student."""

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from bbl.cache.dump import dump_logits
from bbl.cache.dump_config import DumpConfig
from bbl.cli import main
from bbl.data.prepare import prepare
from bbl.data.prepared import PreparedData
from bbl.errors import BblError
from tests.conftest import WORDS

BIG_VOCAB = 70_000


def big_tokenizer(out):
    """A word-level fast tokenizer of BIG_VOCAB ids: the tiny corpus' words, then filler tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "[UNK]", ".", *sorted(set(WORDS))])}
    vocab.update({f"filler{i}": len(vocab) + i for i in range(BIG_VOCAB - len(vocab))})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="<pad>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def byo(tiny_babylm, tmp_path_factory):
    """(prepared dir, teacher dir): the tiny corpus encoded with the big tokenizer, a random LLaMA saved with it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("byo")
    tok_dir = big_tokenizer(root / "tokenizer")
    prepared = root / "prepared"
    prepare(*tiny_babylm, prepared, tokenizer_dir=tok_dir, progress=False, log=lambda *_: None)
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(LlamaConfig(vocab_size=BIG_VOCAB, hidden_size=16, intermediate_size=32,
                                           num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                           max_position_embeddings=64, bos_token_id=1, eos_token_id=2))
    teacher_dir = root / "teacher"
    teacher.save_pretrained(str(teacher_dir))
    for f in tok_dir.iterdir():  # the teacher's own tokenizer files, as a hub download would hold them
        shutil.copyfile(f, teacher_dir / f.name)
    return prepared, teacher_dir


def test_prepare_with_a_given_tokenizer_writes_int32_streams(byo):
    prepared, _ = byo
    data = PreparedData(prepared, check_hashes=True)
    assert data.vocab_size == BIG_VOCAB and data.manifest["dtype"] == "int32"
    train = data.stream("train")
    assert train.dtype == np.int32 and len(train) > 1000
    assert train.max() < 5 + len(set(WORDS))  # only the corpus' words (and ".") occur, no [UNK]
    assert data.manifest["tokenizer"]["source"].endswith("tokenizer")


def test_a_pretrained_style_teacher_dumps_int32_ids_and_the_student_distills(byo, tmp_path):
    prepared, teacher = byo
    cache = tmp_path / "c.zarr"
    dump_logits([teacher], prepared, cache, DumpConfig(top_k=8, temperature=1.0, seq_len=32, chunk_windows=8), progress=False, log=lambda *_: None)
    import zarr

    ids = zarr.open_group(str(cache), mode="r")["topk_ids"][:]
    assert ids.dtype == np.int32 and ids.max() > 65_535  # a random teacher ranks high ids too: nothing truncated
    res = CliRunner().invoke(main, ["distill", "student-tiny", "--data", str(prepared), "--out", str(tmp_path / "s"),
                                    "--cache", str(cache), "--set", "training.max_steps=2",
                                    "--set", "training.max_train_windows=null"])
    assert res.exit_code == 0, res.output
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(str(tmp_path / "s")).vocab_size == BIG_VOCAB


def test_a_teacher_with_another_tokenizer_is_refused(byo, tiny_teachers, tmp_path):
    prepared, _ = byo
    with pytest.raises(BblError, match="teacher tokenizer differs"):
        dump_logits(tiny_teachers, prepared, tmp_path / "x.zarr", DumpConfig(top_k=8, seq_len=32), progress=False, log=lambda *_: None)
    assert not (tmp_path / "x.zarr").exists()


def test_a_tokenizer_dir_without_tokenizer_json_is_one_error_line(tiny_babylm, tmp_path):
    train, dev = tiny_babylm
    res = CliRunner().invoke(main, ["prepare", "--train-dir", str(train), "--dev-dir", str(dev), "--out",
                                    str(tmp_path / "p"), "--tokenizer", str(tmp_path)])
    assert res.exit_code == 1 and res.output.startswith("error:") and "tokenizer.json" in res.output
    assert not (tmp_path / "p").exists()
