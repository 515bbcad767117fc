"""Distilling from several caches (issue 41 item 4): teachers of two tokenizers, a same-tokenizer top-k cache and a
cross-tokenizer cache of a Unigram LLaMA, in one student. L = alpha*CE + (1-alpha) * sum_c w_c * T_c^2 * KD_c: each
term equals its cache's single-cache loss (values and gradients), one cache is today's run, bad input is one line
before anything is written, and `bbl study` arms take several caches."""

import json
import re
from pathlib import Path

import pytest
import torch

from bbl.cache.compute.cross_tokenizer import CrossTokenizerConfig
from bbl.cache.dump import dump_logits
from bbl.config import DistillConfig, load_config
from bbl.data.prepared import PreparedData
from bbl.errors import BblError

from .helpers import dump, error_lines, quiet, run

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
WINDOWS = 24


@pytest.fixture(scope="module")
def topk_cache(trained_cache, prepared, tmp_path_factory) -> Path:
    """The trained tiny teachers' (the student's tokenizer) top-8 cache at T = 2: 24 windows, chunks of 4."""
    out = tmp_path_factory.mktemp("multi") / "topk.zarr"
    dump(trained_cache[0], prepared, out, max_windows=WINDOWS)
    return out


@pytest.fixture(scope="module")
def unigram_teacher(prepared, tmp_path_factory) -> Path:
    """A random tiny LLaMA over a Unigram tokenizer (SentencePiece-style spaces) trained on the student's text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    text = bytes(PreparedData(prepared).text("train")).decode().splitlines(keepends=True)
    tok.train_from_iterator(text, trainers.UnigramTrainer(vocab_size=120, special_tokens=SPECIALS, unk_token="<unk>",
                                                          show_progress=False))
    out = tmp_path_factory.mktemp("unigram") / "llama"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                 max_position_embeddings=256, tie_word_embeddings=False)).save_pretrained(out)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def cross_cache(unigram_teacher, prepared, tmp_path_factory) -> Path:
    """The Unigram teacher's cross-tokenizer cache of the same 24 windows, at T = 1.5, in chunks of 6 (not 4)."""
    out = tmp_path_factory.mktemp("multi") / "cross.zarr"
    dump_logits([unigram_teacher], prepared, out, CrossTokenizerConfig(
        top_k=8, seq_len=32, chunk_windows=6, batch_size=2, max_windows=WINDOWS, context_tokens=8, temperature=1.5),
        progress=False, log=quiet)
    return out


def _batch(dataset, rows=(0, 5, 13, 22)) -> dict:
    return {k: torch.stack([dataset[i][k] for i in rows]) for k in dataset[0]}


def _loss_and_grads(trainer, model, batch):
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("impl", ["chunked", "hf"])
@pytest.mark.parametrize("variant", ["exact_match", "gold"])
def test_each_term_equals_its_cache_alone_values_and_gradients(impl, variant, topk_cache, cross_cache, prepared,
                                                               tmp_path):
    """Weights (1, 0) give cache A's single-cache loss, (0, 1) cache B's, (0.3, 0.7) 0.3 L_A + 0.7 L_B (the weights
    sum to 1, so alpha*CE is shared exactly): values and every parameter's gradient, at each cache's own T."""
    from transformers import TrainingArguments

    from bbl.cache import CacheDataset, MultiCacheDataset, cache_prefix, open_cache
    from bbl.distill.trainer import CacheTerm, DistillTrainer
    from bbl.losses.readings import get_reading
    from bbl.models.build import build_model

    a, b = open_cache(topk_cache), open_cache(cross_cache)
    both = _batch(MultiCacheDataset([a, b]))
    alone = [_batch(CacheDataset(a)), _batch(CacheDataset(b))]
    assert torch.equal(alone[0]["input_ids"], alone[1]["input_ids"])  # row n is one window in both caches
    assert torch.equal(both["cache1/aligned"], alone[1]["aligned"]) and not alone[1]["aligned"].all()
    settings = [DistillConfig(alpha=0.5, kd_variant="topk_tail"), DistillConfig(alpha=0.5, kd_variant=variant)]
    extras = [{}, {}]
    if variant == "gold":  # GOLD's twins and weights, prepared from cache B's vocabulary map
        static = {name: b.read_static(name) for name in b.static}
        extras[1] = get_reading("gold").prepare(static, settings[1], PreparedData(prepared).vocab_size)[0]
    temperatures = [a.temperature, b.temperature]
    assert temperatures == [2.0, 1.5]
    model = build_model(load_config("student-tiny").model, PreparedData(prepared).vocab_size, seed=0).train()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    kw = {"loss_impl": impl, "loss_chunk_rows": 24}
    single = []
    for c in range(2):
        trainer = DistillTrainer(model=model, args=args, distill=settings[c], temperature=temperatures[c],
                                 cache_temperature=temperatures[c], reading_extras=extras[c], **kw)
        single.append((*_loss_and_grads(trainer, model, alone[c]), trainer._parts["kd_loss"][-1]))
    assert single[0][0] != single[1][0] and min(single[0][2], single[1][2]) > 1e-3  # two real, different KD terms

    def multi(weights):
        terms = [CacheTerm(cache_prefix(c), settings[c], w, temperatures[c], temperatures[c], extras[c])
                 for c, w in enumerate(weights)]
        trainer = DistillTrainer(model=model, args=args, distill=DistillConfig(alpha=0.5), caches=terms, **kw)
        return (*_loss_and_grads(trainer, model, both), trainer._parts)

    tol = {"rtol": 1e-5, "atol": 1e-6}
    for weights in ((1.0, 0.0), (0.0, 1.0), (0.3, 0.7)):
        loss, grads, parts = multi(weights)
        torch.testing.assert_close(loss, sum(w * s[0] for w, s in zip(weights, single, strict=True)), **tol)
        for name, grad in grads.items():
            expected = sum(w * s[1][name] for w, s in zip(weights, single, strict=True))
            torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6, msg=name)
        assert parts["kd_loss_0"][-1] == pytest.approx(single[0][2], rel=1e-5)  # each term is logged as alone
        assert parts["kd_loss_1"][-1] == pytest.approx(single[1][2], rel=1e-5)
        assert parts["kd_loss"][-1] == pytest.approx(weights[0] * single[0][2] + weights[1] * single[1][2], rel=1e-5)
    loss, grads, _ = multi((1.0,))  # one term of weight 1 is the single-cache loss itself
    torch.testing.assert_close(loss, single[0][0], rtol=0, atol=0)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _argv(prepared, out, *caches, sets=()):
    argv = ["distill", "student-tiny", "--data", prepared, "--out", out]
    for c in caches:
        argv += ["--cache", c]
    for s in ("training.max_train_windows=null", "training.max_steps=3", "training.logging_steps=1", *sets):
        argv += ["--set", s]
    return argv


def test_distill_from_caches_of_two_tokenizers_trains_and_records_each(topk_cache, cross_cache, trained_cache,
                                                                       unigram_teacher, prepared, tmp_path):
    out = tmp_path / "two"
    res = run(_argv(prepared, out, topk_cache, f"{cross_cache}:kd_variant=gold,weight=0.25"))
    assert res.exit_code == 0, res.output
    logged = [m for m in _metrics(out) if "kd_loss" in m]
    assert len(logged) == 3
    for m in logged:
        assert m["kd_loss_0"] > 0 and m["kd_loss_1"] > 0
        assert m["kd_loss"] == pytest.approx(0.75 * m["kd_loss_0"] + 0.25 * m["kd_loss_1"], rel=1e-6)
    ran = json.loads((out / "bbl_run.json").read_text())
    assert ran["complete"] and ran["distill_mode"] == "cached" and ran["alpha"] == 0.5
    caches = ran["caches"]
    assert [c["cache"] for c in caches] == [str(topk_cache), str(cross_cache)]
    assert [c["cache_targets"] for c in caches] == ["topk", "cross_tokenizer"]
    assert [c["kd_variant"] for c in caches] == ["topk_tail", "gold"]
    assert [c["weight"] for c in caches] == [0.75, 0.25] and [c["temperature"] for c in caches] == [2.0, 1.5]
    assert ran["config"]["distill"]["caches"] == [{"kd_variant": "topk_tail", "weight": 0.75},
                                                  {"kd_variant": "gold", "weight": 0.25}]
    assert {t["path"] for t in ran["ledger"]["teachers"]} == {str(t) for t in [*trained_cache[0], unigram_teacher]}
    # the saved config holds each cache's settings: --resume with other weights is refused, not mixed
    assert list((out / "checkpoints").glob("checkpoint-*"))
    res = run([*_argv(prepared, out, topk_cache, f"{cross_cache}:kd_variant=gold,weight=0.5"), "--resume"])
    assert res.exit_code == 1 and "distill.caches" in res.output, res.output


def test_one_cache_is_todays_run(topk_cache, prepared, tmp_path):
    """A spec naming the defaults (weight 1, the kind's kd_variant) folds into `distill`: the same losses, and a
    saved config without per-cache settings."""
    from bbl.distill.recipe import distill

    cfg = load_config("student-tiny", ["training.max_train_windows=null", "training.max_steps=2",
                                       "training.logging_steps=1"])
    plain = distill(cfg, prepared, tmp_path / "plain", cache_path=topk_cache, log=quiet)
    spec = distill(cfg, prepared, tmp_path / "spec", cache_path=[f"{topk_cache}:weight=1,kd_variant=topk_tail"],
                   log=quiet)
    keys = ("loss", "ce_loss", "kd_loss")
    assert [{k: m[k] for k in keys} for m in _metrics(plain) if "kd_loss" in m] == \
        [{k: m[k] for k in keys} for m in _metrics(spec) if "kd_loss" in m]
    for d in (plain, spec):
        ran = json.loads((d / "bbl_run.json").read_text())
        assert ran["config"]["distill"]["caches"] is None and "caches" not in ran and ran["kd_variant"] == "topk_tail"
        assert not any("kd_loss_0" in m for m in _metrics(d))


def test_bad_multi_cache_input_is_one_line_before_anything_is_written(topk_cache, cross_cache, tiny_teachers,
                                                                      prepared, tmp_path):
    fewer, other = tmp_path / "fewer.zarr", tmp_path / "other.zarr"
    dump(tiny_teachers, prepared, fewer, max_windows=12)
    dump(tiny_teachers, prepared, other, max_windows=WINDOWS, seed=1)
    cases = [
        ((topk_cache, fewer), (), r"holds 12 windows, .*topk.zarr 24; caches distilled together must hold the same"),
        ((topk_cache, other), (), r"row \d+ holds window \d+, .*topk.zarr's window \d+"),
        ((topk_cache, f"{cross_cache}:kd_variant=topk_tail"), (),
         r"cross.zarr: holds cross_tokenizer targets, which distill.kd_variant=topk_tail does not read"),
        ((f"{topk_cache}:weight=0.5", f"{cross_cache}:weight=0.6"), (), r"cache weights sum to 1.1"),
        ((topk_cache, f"{cross_cache}:weight=1.2"), (), r"given sum to 1.2 > 1"),
        ((topk_cache, f"{cross_cache}:alpha=0.1"), (), r"unknown key alpha \(it applies to the whole run"),
        ((topk_cache, f"{cross_cache}:temperature=0"), (), r"cross.zarr:temperature=0: distill.temperature 0.0 must"),
        ((topk_cache, cross_cache), ("distill.mlm_kd=true",), r"distill.mlm_kd reads one cache"),
        ((topk_cache, cross_cache), ("distill.caches=[{weight: 1}]",), r"distill.caches has 1 entries for 2 --cache"),
        ((topk_cache, cross_cache), ("distill.temperature=1.5",), r"topk.zarr: cache was written at temperature 2.0"),
        ((topk_cache, f"{cross_cache}:kd_variant=alm"), (), r"kd_variant=alm weighs CE and KD its own way"),
    ]
    out = tmp_path / "x"
    for caches, sets, message in cases:
        res = run(_argv(prepared, out, *caches, sets=sets))
        assert res.exit_code == 1, (message, res.output)
        assert len(error_lines(res)) == 1, res.output
        assert re.search(message, res.output), (message, res.output)
        assert not out.exists()


def test_study_arm_with_several_caches(topk_cache, cross_cache, tiny_teachers, prepared, tmp_path):
    from bbl.study.arms import parse_arm, run_argv
    from bbl.study.run import check_arm

    spec = f"ens:--cache {topk_cache} --cache '{cross_cache}:kd_variant=gold,weight=0.3' --set distill.alpha=0.4"
    arm = parse_arm(spec, default_cache=Path("study.zarr"))
    assert arm.mode == "cached" and arm.caches == [topk_cache, f"{cross_cache}:kd_variant=gold,weight=0.3"]
    argv = run_argv(arm, "student-tiny", prepared, tmp_path / "r", 0, [], [])
    assert argv[0] == "distill" and argv[-4:] == ["--cache", str(topk_cache), "--cache",
                                                  f"{cross_cache}:kd_variant=gold,weight=0.3"]
    assert parse_arm("one:--set distill.alpha=0.4", default_cache=Path("s.zarr")).caches == [Path("s.zarr")]
    data = PreparedData(prepared)
    sets = [f"training.max_train_windows={WINDOWS}", "training.data_seed=0"]
    readers = {}
    check_arm(arm, "student-tiny", sets, data, [], readers)  # as its runs would: every cache opened and checked
    assert set(readers) == {topk_cache, cross_cache}
    bad = parse_arm(f"bad:--cache {topk_cache} --cache {cross_cache}:kd_variant=gold,weight=2", default_cache=None)
    with pytest.raises(BblError, match="given sum to 2 > 1"):
        check_arm(bad, "student-tiny", sets, data, [], readers)
    with pytest.raises(BblError, match="dumped for max_windows 24"):  # each cache holds the arm's windows
        check_arm(arm, "student-tiny", ["training.max_train_windows=12", "training.data_seed=0"], data, [], readers)
