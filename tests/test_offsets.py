"""Token offsets in the prepared dir (issue 31 item 1) and bits per byte in `bbl eval` (item 4)."""

import json
import math

import numpy as np
import pytest

from bbl.data.prepare import prepare
from bbl.data.prepared import MANIFEST, PreparedData
from bbl.errors import BblError

from .conftest import real_data_or_skip
from .helpers import quiet


def _token_bytes(tokenizer):
    """{id: the UTF-8 bytes a byte-level BPE token stands for} (its characters mapped back through the byte alphabet)."""
    from bbl.data.vocab import byte_alphabet

    back = byte_alphabet()
    return {i: bytes(back[c] for c in tok) for tok, i in tokenizer.get_vocab().items() if all(c in back for c in tok)}


def real_excerpt(root, lines: int = 150):
    """A BabyLM dir holding the first `lines` lines of each real source (train and dev)."""
    data = real_data_or_skip()
    dirs = []
    for split, suffix in (("babylm_10M", "train"), ("babylm_dev", "dev")):
        (root / split).mkdir(parents=True)
        for f in sorted((data / split).glob(f"*.{suffix}")):
            head = f.read_text().splitlines(keepends=True)[:lines]
            (root / split / f.name).write_text("".join(head))
        dirs.append(root / split)
    return dirs


@pytest.fixture(scope="module")
def real_prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    out = root / "prepared"
    prepare(*real_excerpt(root / "babylm"), out, vocab_size=600, progress=False, log=quiet)
    return out


def test_offsets_recover_every_token_and_the_whole_text(real_prepared):
    from bbl.data.tokenizer import load_tokenizer

    data = PreparedData(real_prepared, check_hashes=True)
    token_bytes = _token_bytes(load_tokenizer(data.tokenizer_dir))
    for split in ("train", "dev"):
        text, offsets, ids = bytes(data.text(split)), np.asarray(data.offsets(split)), data.stream(split)
        assert len(offsets) == len(ids) and offsets.dtype == np.uint32
        clean = b"".join(p.read_bytes() for p in sorted((real_prepared / "clean" / split).glob("*.txt"),
                                                        key=lambda p: [r["source"] for r in data.manifest["files"]
                                                                       if r["split"] == split].index(p.stem)))
        assert text == clean
        assert (np.diff(offsets[:, 0].astype(np.int64)) >= 0).all()
        # each token's span is its own bytes, or them less the prefix space the tokenizer adds at a line start
        singles = 0
        for i in range(len(ids)):
            span, own = text[offsets[i, 0]:offsets[i, 1]], token_bytes[int(ids[i])]
            if span == own or (own[:1] == b" " and span == own[1:]):
                singles += 1
        # pieces of one multi-byte character share its span; everything else matches byte for byte
        assert singles >= 0.99 * len(ids)
        covered = np.zeros(len(text) + 1, dtype=np.int64)
        np.add.at(covered, offsets[:, 0].astype(np.int64), 1)
        np.add.at(covered, offsets[:, 1].astype(np.int64), -1)
        assert (np.cumsum(covered)[:-1] > 0).all()  # byte-level BPE: every byte of the text is in some token


COMPOSED = ("the cafe\u0301 was open", "\uff76\uff9e is ga", "\u1100\u1161 is ga too", "e\u0301\u0323 and e\u0302\u0301")
"""Lines NFKC composes: `e` + U+0301 -> `é`, halfwidth `ｶ` + `ﾞ` -> `ガ`, Hangul jamo -> `가`, two marks (reordered)."""


def test_prepare_keeps_text_its_nfkc_tokenizer_composes_and_covers_every_byte(tmp_path):
    from .conftest import write_tiny_babylm

    train, dev = write_tiny_babylm(tmp_path / "babylm", lines=60)
    for d, suffix in ((train, "train"), (dev, "dev")):
        with (d / f"aochildes.{suffix}").open("a") as f:
            f.write("".join(line + "\n" for line in COMPOSED))
    out = tmp_path / "prepared"
    prepare(train, dev, out, vocab_size=300, progress=False, log=quiet)
    data = PreparedData(out, check_hashes=True)
    for split in ("train", "dev"):
        text, offsets = bytes(data.text(split)), np.asarray(data.offsets(split)).astype(np.int64)
        assert all(line.encode() in text for line in COMPOSED)
        covered = np.zeros(len(text) + 1, dtype=np.int64)
        np.add.at(covered, offsets[:, 0], 1)
        np.add.at(covered, offsets[:, 1], -1)
        assert (np.cumsum(covered)[:-1] > 0).all()  # every byte, the combining ones included, is in some token
        assert (np.diff(offsets[:, 0]) >= 0).all() and (offsets[:, 1] >= offsets[:, 0]).all()
        jamo = text.index("\u1100\u1161".encode())  # the syllable's tokens cover both jamo (6 bytes)
        assert any(a == jamo and b == jamo + 6 for a, b in offsets)


def test_a_tokenizer_that_drops_text_is_refused_before_anything_is_written(tmp_path, prepared, tiny_babylm):
    from tokenizers import normalizers

    from bbl.data.tokenizer import load_tokenizer, save_tokenizer

    tok = load_tokenizer(prepared / "tokenizer")
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(".", "")])
    save_tokenizer(tok, tmp_path / "lossy")
    out = tmp_path / "out"
    with pytest.raises(BblError) as e:
        prepare(*tiny_babylm, out, tokenizer_dir=tmp_path / "lossy", progress=False, log=quiet)
    assert "\n" not in str(e.value) and "drops '.'" in str(e.value) and "--tokenizer" in str(e.value)
    assert not (out / "clean").exists() and not (out / MANIFEST).exists()


def test_an_older_prepared_dir_works_and_is_told_how_to_add_offsets(tmp_path, tiny_babylm):
    out = tmp_path / "p"
    prepare(*tiny_babylm, out, vocab_size=320, progress=False, log=quiet)
    stream = (out / "train.npy").read_bytes()
    manifest = json.loads((out / MANIFEST).read_text())
    for key in ("offsets", "texts"):
        manifest.pop(key)
    (out / MANIFEST).write_text(json.dumps(manifest))
    data = PreparedData(out, check_hashes=True)
    assert len(data.stream("train")) and not data.has_offsets("train")
    with pytest.raises(BblError, match=r"records no token offsets .* which a cross-tokenizer dump needs; re-run "
                                       r"`bbl prepare` with the same arguments"):
        data.offsets("train", needed_by="a cross-tokenizer dump")
    prepare(*tiny_babylm, out, vocab_size=320, progress=False, log=quiet)  # the upgrade the message names
    data = PreparedData(out, check_hashes=True)
    assert data.has_offsets("train") and (out / "train.npy").read_bytes() == stream


def test_bits_per_byte_is_total_nll_in_bits_over_the_scored_bytes(prepared, tiny_teachers):
    import torch
    from transformers import AutoModelForCausalLM

    from bbl.data.windows import select_dev_windows
    from bbl.evaluate.run import dev_perplexity

    model = AutoModelForCausalLM.from_pretrained(tiny_teachers[0]).eval()
    data = PreparedData(prepared)
    seq_len, n = 16, 3
    got = dev_perplexity([model], data, seq_len=seq_len, dev_windows=n, seed=0, batch_size=2)
    text, offsets = bytes(data.text("dev")), data.offsets("dev")
    nll_nats, nbytes = 0.0, 0
    for w in select_dev_windows(data.stream("dev"), seq_len, n, seed=0).indices:
        ids = torch.from_numpy(np.asarray(data.stream("dev")[w * seq_len:(w + 1) * seq_len], dtype=np.int64))
        with torch.no_grad():
            logp = torch.log_softmax(model(ids[None]).logits[0].double(), -1)
        nll_nats -= float(sum(logp[s, ids[s + 1]] for s in range(seq_len - 1)))
        scored = text[offsets[w * seq_len, 1]:offsets[(w + 1) * seq_len - 1, 1]]  # tokens 2..S of the window
        scored.decode("utf-8")  # whole characters
        nbytes += len(scored)
    assert got["bytes"] == nbytes > 0
    assert got["bits_per_byte"] == pytest.approx(nll_nats / math.log(2) / nbytes, rel=1e-5)
    assert got["bits_per_byte"] == pytest.approx(got["mean_ce"] * got["tokens"] / math.log(2) / nbytes, rel=1e-9)
