"""BabyLlama-2's data handling (issue 43): random-offset windows (`training.window_offset: random`) and the train /
selection split (`bbl prepare --selection-fraction`), both off unless asked; the `babyllama2` pipeline asks."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bbl.config import load_config, preset_names
from bbl.data.prepare import prepare
from bbl.data.prepared import PreparedData
from bbl.data.tokenizer import load_tokenizer
from bbl.data.windows import EpochPermutationSampler, select_train_windows
from bbl.data.words import window_words
from bbl.errors import BblError
from bbl.pipeline import build_stages, pipeline_preset_names
from bbl.train.batching import load_windows, train_sampler
from bbl.train.ledger import plan_words
from bbl.train.recipe import train_lm
from tests.helpers import dump, error_lines, quiet, run

RANDOM = ["training.window_offset=random"]
TOKENS = np.arange(1000, dtype=np.uint16)
"""A stream whose token t is t, so a window's first id is where it starts."""


def test_random_offsets_are_new_each_epoch_and_depend_only_on_seed_and_epoch():
    w = select_train_windows(TOKENS, 32, None, seed=3, window_offset="random")
    assert len(w) == 1000 // 32 - 1 and w.epoch_indexed  # BabyLlama-2's len: one window fewer, so each shift fits
    starts = [w.starts(epoch) for epoch in range(4)]
    offsets = starts[0] - w.indices * 32
    assert offsets.min() >= 0 and offsets.max() < 32 and len(set(offsets.tolist())) > 4  # one draw per window
    assert all(not np.array_equal(starts[e], starts[e + 1]) for e in range(3))  # a new cut each epoch
    assert all((s + 32 <= len(TOKENS)).all() for s in starts)
    again = select_train_windows(TOKENS, 32, None, seed=3, window_offset="random")  # a resumed run's dataset
    for epoch in (3, 1):
        np.testing.assert_array_equal(again.starts(epoch), starts[epoch])
    other = select_train_windows(TOKENS, 32, None, seed=4, window_offset="random")
    assert not np.array_equal(other.starts(0), starts[0])  # seeded by the data seed
    sampler = train_sampler(w, seed=0)  # what the Trainer draws: each row folded with its epoch
    sampler.set_epoch(2)
    for index in list(sampler)[:5]:
        epoch, row = divmod(index, len(w))
        assert epoch == 2
        first = int(starts[2][row])
        assert torch.equal(w[index]["input_ids"], torch.arange(first, first + 32))


def test_window_offset_and_selection_default_off_and_leave_the_windows_as_they_were(prepared):
    assert all(load_config(name).training.window_offset == "fixed" for name in preset_names())
    w = select_train_windows(TOKENS, 32, None, seed=3)
    assert len(w) == 1000 // 32 and not w.epoch_indexed
    assert type(train_sampler(w, seed=0)) is EpochPermutationSampler  # plain row indices, as before
    for epoch in (0, 5):
        np.testing.assert_array_equal(w.starts(epoch), np.arange(31) * 32)
    assert torch.equal(w[5]["input_ids"], torch.arange(160, 192))
    data = PreparedData(prepared)
    assert data.eval_split == "dev" and data.selection is None and set(data.manifest["streams"]) == {"train", "dev"}
    assert "selection_fraction" not in data.manifest["inputs"]  # the fingerprint of a dir prepared before
    cfg = load_config("llama-tiny", ["training.epochs=2"])
    train, dev = load_windows(cfg, data)
    assert len(dev.stream) == len(data.stream("dev"))
    plan = plan_words(cfg, data, train, world=1)  # fixed windows: the words of window n, every epoch
    words = window_words(data.word_starts("train"), 32, train.indices)
    sampler, seen, expected = train_sampler(train, cfg.training.seed), 0, []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        order = np.fromiter(sampler, dtype=np.int64)
        for b in range(0, len(order), cfg.training.batch_size):
            seen += int(words[order[b:b + cfg.training.batch_size]].sum())
            expected.append(seen)
    np.testing.assert_array_equal(plan.words_at_step, expected)


def test_the_ledger_counts_the_words_of_the_windows_as_cut(prepared):
    cfg = load_config("llama-tiny", [*RANDOM, "training.epochs=3", "training.max_train_windows=16"])
    data = PreparedData(prepared)
    train, _ = load_windows(cfg, data)
    plan = plan_words(cfg, data, train, world=1)
    stream, word_starts = data.stream("train"), data.word_starts("train")
    sampler, batch = train_sampler(train, cfg.training.seed), cfg.training.batch_size
    seen, expected = 0, []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for b in range(0, len(order), batch):
            for index in order[b:b + batch]:  # each window as the Trainer gets it, and where it lies in the stream
                first = int(train.starts(epoch)[index % len(train)])
                np.testing.assert_array_equal(train[index]["input_ids"].numpy(), stream[first:first + 32])
                seen += int(word_starts[first:first + 32].sum())
            expected.append(seen)
    np.testing.assert_array_equal(plan.words_at_step, expected)
    home = window_words(word_starts, 32, train.indices)
    assert plan.corpus_words == home.sum()  # the corpus: the windows at their home positions
    assert plan.words_at_step[-1] != 3 * home.sum()  # the count follows the offsets, not the home windows


def test_random_offsets_resume_to_the_straight_runs_weights(prepared, tmp_path):
    overrides = [*RANDOM, "training.max_steps=8", "training.max_train_windows=16", "training.eval_every_steps=4"]
    straight = train_lm(load_config("llama-tiny", overrides), prepared, tmp_path / "a", log=quiet)
    # killed at step 3: the first batch of the second epoch, whose offsets the resumed run must cut again
    train_lm(load_config("llama-tiny", [*overrides, "training.stop_after_steps=3"]), prepared, tmp_path / "b",
             log=quiet)
    resumed = train_lm(load_config("llama-tiny", overrides), prepared, tmp_path / "b", resume=True, log=quiet)
    fixed = train_lm(load_config("llama-tiny", overrides[1:]), prepared, tmp_path / "c", log=quiet)
    a, b, c = (load_file(d / "checkpoints" / "checkpoint-8" / "model.safetensors") for d in (straight, resumed, fixed))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the offsets reached the model
    ledgers = [json.loads((d / "bbl_run.json").read_text())["ledger"] for d in (straight, resumed, fixed)]
    assert ledgers[0] == ledgers[1] and ledgers[0]["words_seen"] != ledgers[2]["words_seen"]


def test_cached_distillation_refuses_random_offsets_and_online_takes_them(tiny_teachers, prepared, tmp_path):
    from bbl.distill.recipe import distill

    cache = tmp_path / "c.zarr"
    dump(tiny_teachers, prepared, cache)
    out = tmp_path / "cached"
    result = run(["distill", "student-tiny", "--cache", cache, "--data", prepared, "--out", out, "--set",
                  "training.max_train_windows=24", *[a for o in RANDOM for a in ("--set", o)]])
    assert result.exit_code == 1 and len(error_lines(result)) == 1, result.output
    assert "training.window_offset=random" in result.output and "training.window_offset=fixed" in result.output
    assert not out.exists()  # refused before anything is written
    online = distill(load_config("student-tiny", [*RANDOM, "training.max_steps=2"]), prepared, tmp_path / "online",
                     teacher_dirs=tiny_teachers, log=quiet)
    assert json.loads((online / "bbl_run.json").read_text())["complete"]


def _babylm_with_markers(root, *, lines: int = 40):
    """Two train sources and one dev source whose every line holds a unique marker word `m<source><line>`."""
    dirs = []
    for split, suffix, sources in (("babylm_10M", "train", ("aochildes", "switchboard")),
                                   ("babylm_dev", "dev", ("aochildes",))):
        d = root / split
        d.mkdir(parents=True)
        for source in sources:
            text = "".join(f"m{source[0]}{i} the cat saw a dog and the ball\n" for i in range(lines))
            (d / f"{source}.{suffix}").write_text(text)
        dirs.append(d)
    return dirs


def test_selection_holds_out_each_sources_last_lines_and_chooses_checkpoints(tmp_path):
    train_dir, dev_dir = _babylm_with_markers(tmp_path / "babylm")
    whole = prepare(train_dir, dev_dir, tmp_path / "whole", vocab_size=300, progress=False, log=quiet)
    manifest = prepare(train_dir, dev_dir, tmp_path / "split", vocab_size=300, selection_fraction=0.1,
                       progress=False, log=quiet)
    data = PreparedData(tmp_path / "split", check_hashes=True)
    tokenizer = load_tokenizer(data.tokenizer_dir)
    markers = {split: {w for w in tokenizer.decode(data.stream(split).tolist()).split() if w[0] == "m"}
               for split in ("train", "selection")}
    assert not markers["train"] & markers["selection"]  # no selection word is a training word
    # BabyLlama-2's split_file: each source keeps its first round(0.9 x 40) = 36 lines; the rest is selection
    assert markers["selection"] == {f"m{s}{i}" for s in "as" for i in range(36, 40)}
    assert markers["train"] == {f"m{s}{i}" for s in "as" for i in range(36)}
    t = manifest["totals"]
    words = whole["totals"]["train"]["words_in_stream"]
    assert t["train"]["words_in_stream"] + t["selection"]["words_in_stream"] == words
    assert manifest["selection"]["words"] == t["selection"]["words_in_stream"] == 8 * 9
    assert manifest["tokenizer"]["sha256"] == whole["tokenizer"]["sha256"]  # trained on every train word, as theirs
    assert data.eval_split == "selection"
    cfg = load_config("llama-tiny", ["training.max_steps=2", "training.seq_len=16"])
    _, evaluated = load_windows(cfg, data)
    assert len(evaluated.stream) == len(data.stream("selection"))
    run_dir = train_lm(cfg, tmp_path / "split", tmp_path / "run", log=quiet)
    assert json.loads((run_dir / "bbl_run.json").read_text())["eval_split"] == "selection"


@pytest.mark.parametrize("fraction, message", [(1.0, "in \\[0, 1\\)"), (-0.1, "in \\[0, 1\\)"),
                                               (0.001, "holds out no line")])
def test_bad_selection_fractions_are_one_error_line(tmp_path, fraction, message):
    train_dir, dev_dir = _babylm_with_markers(tmp_path / "babylm", lines=10)
    with pytest.raises(BblError, match=message):
        prepare(train_dir, dev_dir, tmp_path / "out", vocab_size=260, selection_fraction=fraction, progress=False,
                log=quiet)
    result = run(["prepare", "--train-dir", train_dir, "--dev-dir", dev_dir, "--out", tmp_path / "cli",
                  "--selection-fraction", "1"])
    assert result.exit_code == 2 and len(error_lines(result)) == 1 and "--selection-fraction" in result.output


def test_only_the_babyllama2_pipeline_turns_them_on(tmp_path):
    from bbl.evaluate.tasks import DATA_NAMES

    corpus = tmp_path / "babylm"
    for name in {"babylm_10M", "babylm_dev", *(n for names in DATA_NAMES.values() for n in names.values())}:
        (corpus / name).mkdir(parents=True)
    for preset in pipeline_preset_names():
        stages = {s.key: s.argv for s in build_stages(preset, corpus, tmp_path / preset)}
        random_stages = {k for k, argv in stages.items() if "training.window_offset=random" in argv}
        split = "--selection-fraction" in stages["prepare"]
        if preset == "babyllama2":
            prep = stages["prepare"]
            assert split and prep[prep.index("--selection-fraction") + 1] == "0.05"
            assert random_stages == {"teacher-a", "teacher-b", "baseline"}  # the cached student reads fixed windows
        else:
            assert not split and not random_stages, preset
