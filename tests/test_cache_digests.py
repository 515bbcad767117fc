"""The bytes of a cache of every kind, pinned: a dump from fixed inputs (the tiny corpus, seeded random teachers,
a byte-level BPE teacher without prefix space for the cross-tokenizer kind) stores exactly the files bbl stored
before the cache kinds moved to one registry (commit 218cf05; tests/data/cache_digests.json, made by running this
file as a script with that commit on PYTHONPATH). So a cache written before the change reads, verifies and repairs as
one written now: they are the same bytes. The cross-tokenizer cache's `alignment` chunks and its prefix-space arrays
were regenerated when issue 41 changed the line-start alignment (`alignment_rule: token_end_prefix_space`).

A failure means a change altered what a dump stores (a codec, a dtype, the order of a reduction): if that is
intended, say so in the commit and regenerate the file (`python tests/test_cache_digests.py OUT_DIR`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

DIGESTS = Path(__file__).parent / "data" / "cache_digests.json"
COMMON = {"seq_len": 32, "chunk_windows": 8, "max_windows": 24, "batch_size": 4, "temperature": 2.0}
KINDS = {
    "topk": {"top_k": 16},
    "sampled": {"targets": "sampled", "num_samples": 12},
    "hybrid": {"targets": "hybrid", "top_k": 8, "num_samples": 6},
    "hybrid-stored": {"targets": "hybrid", "top_k": 4, "num_samples": 4, "logprob_step": 2 ** -4, "delta_ids": True,
                      "sample_counts": True, "kd_fraction": 0.5},
    "cross_tokenizer": {"targets": "cross_tokenizer", "top_k": 8},
}


def foreign_teacher(prepared: Path, out: Path) -> Path:
    """A random tiny LLaMA over a 400-id byte-level BPE without prefix space trained on the prepared text."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from bbl.data.prepared import PreparedData

    text = bytes(PreparedData(prepared).text("train")).decode().splitlines(keepends=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                 max_position_embeddings=512)).save_pretrained(out)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(out)
    return out


def dump_all(prepared: Path, teachers: list[Path], foreign: Path, root: Path) -> dict[str, dict[str, str]]:
    """{kind: {file: md5}} of a dump of every kind into `root` (the group's own zarr.json, which holds timings and
    paths, left out)."""
    from bbl.cache.dump import dump_logits

    try:  # the layout after the registry: one dump driver for every kind
        from bbl.cache.compute.cross_tokenizer import CrossTokenizerConfig
        from bbl.cache.dump_config import DumpConfig

        dump_cross = dump_logits
    except ImportError:  # the layout before it (the commit the digests were made with)
        from bbl.cache.kinds.cross_tokenizer_dump import dump_cross_tokenizer as dump_cross

        from bbl.cache.format import DumpConfig
        from bbl.cache.kinds.cross_tokenizer import CrossTokenizerConfig
    out = {}
    for name, settings in KINDS.items():
        path = root / f"{name}.zarr"
        if settings.get("targets") == "cross_tokenizer":
            config = CrossTokenizerConfig(**{k: v for k, v in {**COMMON, **settings}.items() if k != "targets"})
            dump_cross([foreign], prepared, path, config, progress=False, log=lambda *_: None)
        else:
            dump_logits(teachers, prepared, path, DumpConfig(**COMMON, **settings), progress=False,
                        log=lambda *_: None)
        out[name] = {str(f.relative_to(path)): hashlib.md5(f.read_bytes()).hexdigest()
                     for f in sorted(path.rglob("*")) if f.is_file() and f.relative_to(path) != Path("zarr.json")}
    return out


@pytest.mark.slow
def test_every_kind_stores_the_bytes_it_stored_before(prepared, tiny_teachers, tmp_path):
    want = json.loads(DIGESTS.read_text())
    got = dump_all(prepared, tiny_teachers, foreign_teacher(prepared, tmp_path / "foreign"), tmp_path)
    assert set(got) == set(want)
    for kind in want:
        differ = sorted(f for f in set(want[kind]) | set(got[kind]) if want[kind].get(f) != got[kind].get(f))
        assert not differ, f"{kind}: {len(differ)} stored file(s) differ from before, e.g. {differ[:4]}"


if __name__ == "__main__":  # python tests/test_cache_digests.py OUT_DIR: write the digests of the code on the path
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from bbl.data.prepare import prepare
    from tests.conftest import TINY_VOCAB, save_random_model, write_tiny_babylm

    root = Path(sys.argv[1])
    prepare(*write_tiny_babylm(root / "babylm"), root / "prepared", vocab_size=TINY_VOCAB, progress=False,
            log=lambda *_: None)
    teachers = [save_random_model("llama-tiny", root / "prepared", root / "llama", seed=1),
                save_random_model("gpt2-tiny", root / "prepared", root / "gpt2", seed=2)]
    digests = dump_all(root / "prepared", teachers, foreign_teacher(root / "prepared", root / "foreign"), root)
    DIGESTS.parent.mkdir(exist_ok=True)
    DIGESTS.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    print(f"wrote {DIGESTS}: {sum(map(len, digests.values()))} files of {len(digests)} caches")
