"""AntLM objective schedules: bidirectional mlm phases, BERT masking, phases in the data order, resume, the best
checkpoint from the last phase, and a cached student that reads its cache in clm phases only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bbl.config import load_config, parse_objective_schedule
from bbl.errors import BblError
from bbl.train.batching import train_sampler
from bbl.train.objectives import PhasedDataset, in_last_phase, mask_window
from bbl.train.recipe import train_lm
from tests.helpers import error_lines, quiet, run

SCHEDULE = ["training.objective_schedule=clm:1,mlm:2,clm:1", "training.epochs=4"]
"""64 windows / batch 8 = 8 steps per epoch: steps 1-8 clm, 9-24 mlm, 25-32 clm."""


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt2-tiny"])
def test_mlm_phase_attends_both_ways_and_clm_phase_only_back(preset):
    from bbl.models.build import build_model, forward_without_logits

    model = build_model(load_config(preset).model, 64, seed=0).eval()
    x = torch.randint(4, 64, (1, 12))
    y = x.clone()
    y[0, -1] = 4 + (y[0, -1] - 3) % 60  # change the last token only
    for bidirectional, earlier_changes in ((False, False), (True, True)):
        with torch.no_grad():
            a = forward_without_logits(model, x, bidirectional=bidirectional).hidden_states[-1][0, 0]
            b = forward_without_logits(model, y, bidirectional=bidirectional).hidden_states[-1][0, 0]
        assert (not torch.equal(a, b)) is earlier_changes
    assert model.config.is_causal is True  # restored after the mlm forward


def test_masking_rates_follow_bert_and_labels_sit_at_masked_positions():
    rng = np.random.default_rng(0)
    ids = rng.integers(10, 500, 128)
    selected = masked = randomised = kept = total = 0
    for _ in range(2000):
        inputs, labels = mask_window(ids, rng, mask_token_id=3, vocab_size=512, probability=0.15)
        sel = labels != -100
        assert np.array_equal(labels[sel], ids[sel]) and not sel[0]  # previous: position 0 has no predictor
        assert np.array_equal(inputs[~sel], ids[~sel])  # unselected tokens are never touched
        selected += sel.sum()
        masked += (inputs[sel] == 3).sum()
        kept += (inputs[sel] == ids[sel]).sum()
        randomised += ((inputs[sel] != 3) & (inputs[sel] != ids[sel])).sum()
        total += 127
    assert selected / total == pytest.approx(0.15, abs=0.005)
    assert masked / selected == pytest.approx(0.8, abs=0.01)
    # a random id equal to the original counts as kept: 10% + 10% / 512
    assert kept / selected == pytest.approx(0.1 + 0.1 / 512, abs=0.01)
    assert randomised / selected == pytest.approx(0.1 - 0.1 / 512, abs=0.01)
    _, own = mask_window(ids, np.random.default_rng(1), mask_token_id=3, vocab_size=512, probability=1.0, target="own")
    assert (own != -100).all()  # own: every position may be selected, position 0 included


def test_phased_items_know_their_epoch_and_masks_depend_only_on_seed_epoch_window(prepared):
    from bbl.data.prepared import PreparedData
    from bbl.data.windows import select_train_windows

    data = PreparedData(prepared)
    windows = select_train_windows(data.stream("train"), 32, 16, seed=0)
    mask = data.mask_token_id(needed_by="this test")
    ds = PhasedDataset(windows, parse_objective_schedule("clm:1,mlm:2"), seed=0, mask_token_id=mask,
                       vocab_size=data.vocab_size)
    sampler = train_sampler(ds, seed=0)  # what the Trainer draws: rows folded with their epoch
    sampler.set_epoch(1)
    order = list(sampler)
    assert sorted(i - 16 for i in order) == list(range(16))  # epoch 1: rows offset by one epoch
    clm, mlm, again, later = ds[3], ds[16 + 3], ds[16 + 3], ds[32 + 3]
    assert clm["mlm"] == 0 and torch.equal(clm["input_ids"], windows[3]["input_ids"])
    assert mlm["mlm"] == 1 and (mlm["input_ids"] == mask).any()
    assert torch.equal(mlm["input_ids"], again["input_ids"]) and torch.equal(mlm["labels"], again["labels"])
    assert not torch.equal(mlm["labels"], later["labels"])  # the next epoch draws new masks
    assert ds.objective(99) == "mlm"  # past the schedule: the last phase


@pytest.mark.parametrize("value, fragment", [
    ("clm:2,xlm:2", "unknown objective 'xlm'"), ("clm:0,mlm:4", "'clm:0' needs a whole number"),
    ("clm", "'clm' needs a whole number"), ("clm:1.5,mlm:2.5", "'clm:1.5' needs a whole number")])
def test_bad_schedules_are_one_error_line(value, fragment):
    with pytest.raises(BblError, match=fragment):
        parse_objective_schedule(value)
    with pytest.raises(BblError, match="spans 24 epochs but training.epochs is 1"):
        load_config("llama-tiny", ["training.objective_schedule=clm:4,mlm:16,clm:4"])


def test_cli_refuses_a_bad_schedule_and_a_tokenizer_without_mask(prepared, tiny_babylm, tmp_path):
    from bbl.data.prepare import prepare

    result = run(["train-teacher", "llama-tiny", "--data", str(prepared), "--out", str(tmp_path / "x"),
                  "--set", "training.objective_schedule=clm:1,bert:1", "--set", "training.epochs=2"])
    assert result.exit_code != 0 and len(error_lines(result)) == 1 and "unknown objective 'bert'" in result.output
    old = tmp_path / "no-mask"
    prepare(*tiny_babylm, old, vocab_size=320, mask_token=False, progress=False, log=quiet)
    result = run(["train-teacher", "llama-tiny", "--data", str(old), "--out", str(tmp_path / "y"), *[
        a for o in SCHEDULE for a in ("--set", o)]])
    assert result.exit_code != 0 and len(error_lines(result)) == 1
    assert "has no <mask> token" in result.output and "bbl prepare" in result.output
    assert not (tmp_path / "y").exists()  # refused before anything is written
    # a plain run on the same dir still trains: the mask token is needed by mlm phases only
    train_lm(load_config("llama-tiny", ["training.max_steps=2"]), old, tmp_path / "z", log=quiet)


def test_killed_inside_an_mlm_phase_resumes_to_the_straight_runs_weights(prepared, tmp_path):
    straight = train_lm(load_config("llama-tiny", SCHEDULE), prepared, tmp_path / "a", log=quiet)
    train_lm(load_config("llama-tiny", [*SCHEDULE, "training.stop_after_steps=13"]), prepared, tmp_path / "b",
             log=quiet)
    resumed = train_lm(load_config("llama-tiny", SCHEDULE), prepared, tmp_path / "b", resume=True, log=quiet)
    a = load_file(straight / "checkpoints" / "checkpoint-32" / "model.safetensors")
    b = load_file(resumed / "checkpoints" / "checkpoint-32" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # the mlm epochs trained on the masked loss: their logged loss is not the clm epochs' dev-CE scale
    log = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval_loss" in r]
    run_record = json.loads((straight / "bbl_run.json").read_text())
    last_phase = [r["eval_loss"] for r in evals if in_last_phase(parse_objective_schedule("clm:1,mlm:2,clm:1"),
                                                                   r["epoch"])]
    assert run_record["best_eval_loss"] == pytest.approx(min(last_phase))  # the best of the last phase only
    assert run_record["best_checkpoint"].endswith("checkpoint-32")


def test_mlm_loss_chunked_equals_the_hf_reference_for_both_targets(prepared, tmp_path):
    for target in ("previous", "own"):
        overrides = [*SCHEDULE, f"training.mlm_target={target}", "training.max_steps=12"]  # 8 clm + 4 mlm steps
        runs = [train_lm(load_config("llama-tiny", [*overrides, f"training.loss_impl={impl}"]), prepared,
                         tmp_path / f"{target}-{impl}", log=quiet) for impl in ("chunked", "hf")]
        a, b = (load_file(r / "model.safetensors") for r in runs)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_words_seen_count_every_phase(prepared, tmp_path):
    plain = train_lm(load_config("llama-tiny", ["training.epochs=4", "training.max_steps=20"]), prepared,
                     tmp_path / "plain", log=quiet)
    phased = train_lm(load_config("llama-tiny", [*SCHEDULE, "training.max_steps=20",
                                                 "training.word_checkpoints=[2000]"]), prepared,
                      tmp_path / "phased", log=quiet)
    ledger = [json.loads((r / "bbl_run.json").read_text())["ledger"] for r in (plain, phased)]
    assert ledger[0]["words_seen"] == ledger[1]["words_seen"] > 2000
    assert (phased / "word_checkpoints" / "chck_2K" / "model.safetensors").is_file()


def test_cached_student_reads_the_cache_in_clm_phases_only(prepared, trained_cache, tmp_path):
    from bbl.cache.dataset import CacheDataset
    from bbl.cache.reader import open_cache
    from bbl.data.prepared import PreparedData
    from bbl.data.windows import TokenWindows
    from bbl.distill.recipe import distill
    from bbl.train.ledger import row_windows

    _, cache = trained_cache
    data = PreparedData(prepared)
    base = CacheDataset(open_cache(cache))
    windows = TokenWindows(data.stream("train"), 32, row_windows(base))
    ds = PhasedDataset(base, parse_objective_schedule("clm:1,mlm:1"), seed=0,
                       mask_token_id=data.mask_token_id(needed_by="this test"), vocab_size=data.vocab_size,
                       mlm_windows=windows)
    for row in range(len(base)):
        item = ds[len(base) + row]  # the mlm epoch
        assert item["mlm"] == 1 and "topk_ids" not in item
        kept = item["labels"] != -100
        assert torch.equal(item["labels"][kept], windows[row]["input_ids"][kept])
    assert not base._chunks  # no chunk of the cache was decoded for the mlm epoch
    assert "topk_ids" in ds[0] and base._chunks
    rows = len(base)
    out = distill(load_config("student-tiny", [*SCHEDULE, "training.max_train_windows=null"]), prepared,
                  tmp_path / "student", cache_path=cache, log=quiet)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps_per_epoch = -(-rows // 8)
    checked = 0
    for record in (r for r in log if "loss" in r and "eval_loss" not in r):
        epochs = {(step - 1) // steps_per_epoch for step in (record["step"] - 1, record["step"])}  # logging_steps 2
        if len(epochs) == 1:
            checked += 1
            assert ("kd_loss" in record) is (epochs.pop() in (0, 3)), record  # KD only in the clm epochs
    assert checked > 8


def test_antlm_preset_is_the_papers_babyllama_schedule_on_the_baby_llama_student():
    antlm, student = load_config("llama-58m-antlm"), load_config("llama-58m")
    assert antlm.model == student.model
    assert [(p.objective, p.epochs) for p in antlm.training.phases] == [("clm", 4), ("mlm", 16), ("clm", 4)]
    assert (antlm.training.epochs, antlm.training.mlm_probability) == (24, 0.15)


def test_masked_kd_rows_equal_the_unfused_losses_at_the_predicting_positions():
    """distill.mlm_kd gathers the rows that predict a masked token and calls the chunked loss with shift=False:
    its value equals CE + topk_tail KL computed from full logits at exactly those rows."""
    from bbl.losses.chunked import KDTargets, chunked_head_loss
    from bbl.losses.kd import distillation_loss, topk_tail_kl

    g = torch.Generator().manual_seed(0)
    b, s, h, v, k = 2, 10, 8, 40, 5
    hidden, weight = torch.randn(b, s, h, generator=g), torch.randn(v, h, generator=g)
    ids = torch.randint(0, v, (b, s, k), generator=g)
    logp = torch.log_softmax(torch.randn(b, s, v, generator=g), -1)
    top = logp.gather(-1, ids)
    tail = torch.log1p(-top.exp().sum(-1).clamp(max=0.99))
    rows = torch.zeros(b, s, dtype=torch.bool)
    rows[0, [1, 4]] = rows[1, [0, 7]] = True
    target = torch.randint(0, v, (b, s), generator=g)
    kd = KDTargets("topk_tail", topk_ids=ids[rows][None], topk_logprobs=top[rows][None], tail_logprob=tail[rows][None])
    loss, _, _ = chunked_head_loss(hidden[rows][None], weight, target[rows][None], kd=kd, alpha=0.5, temperature=2.0,
                                   shift=False)
    logits = hidden[rows] @ weight.T
    ce = torch.nn.functional.cross_entropy(logits, target[rows])
    kl = topk_tail_kl(logits[None], ids[rows][None], top[rows][None], tail[rows][None], 2.0).mean()
    torch.testing.assert_close(loss, distillation_loss(ce, kl, alpha=0.5, temperature=2.0))


def test_mlm_kd_distils_in_mlm_phases_and_misuse_is_one_line(prepared, trained_cache, tmp_path):
    from bbl.distill.recipe import distill

    _, cache = trained_cache
    overrides = [*SCHEDULE, "training.max_train_windows=null", "distill.mlm_kd=true"]
    out = distill(load_config("student-tiny", overrides), prepared, tmp_path / "kd", cache_path=cache, log=quiet)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("kd_loss" in r for r in log if "loss" in r and "eval_loss" not in r)  # every epoch distils
    for bad, fragment in ((["distill.mlm_kd=true"], "needs mlm phases"),
                          ([*overrides, "training.mlm_target=own"], "mlm_target=previous"),
                          ([*overrides, "training.loss_impl=hf"], "loss_impl=chunked")):
        with pytest.raises(BblError, match=fragment):
            distill(load_config("student-tiny", bad), prepared, tmp_path / "bad", cache_path=cache, log=quiet)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("preset, masked", [("tiny", True), ("cpu", False), ("cpu-study", False), ("paper", False),
                                            ("babyllama2", False)])
def test_baby_llama_pipelines_keep_the_papers_three_specials(preset, masked, tmp_path):
    from bbl.pipeline import build_stages

    data = tmp_path / "babylm"
    for split in ("babylm_10M", "babylm_dev", "blimp_filtered", "supplement_filtered", "ewok_fast", "entity_tracking",
                  "wug_adj_nominalization", "reading"):  # the cpu preset (the demo) scores the whole suite
        (data / split).mkdir(parents=True)
    prepare = next(s.argv for s in build_stages(preset, data, tmp_path / "w") if s.key == "prepare")
    assert ("--no-mask-token" not in prepare) is masked


def test_prepare_reserves_mask_as_the_fourth_special_unless_told_not_to(prepared, tiny_babylm, tmp_path):
    from transformers import AutoTokenizer

    from bbl.data.prepare import prepare
    from bbl.data.prepared import PreparedData

    data = PreparedData(prepared)
    assert data.manifest["mask_token_id"] == 3 == data.mask_token_id(needed_by="this test")
    hf = AutoTokenizer.from_pretrained(data.tokenizer_dir)
    assert hf.mask_token == "<mask>" and hf.mask_token_id == 3 and len(hf) == data.vocab_size
    plain = prepare(*tiny_babylm, tmp_path / "plain", vocab_size=320, mask_token=False, progress=False, log=quiet)
    assert plain["mask_token_id"] is None
    assert AutoTokenizer.from_pretrained(tmp_path / "plain" / "tokenizer").mask_token is None
