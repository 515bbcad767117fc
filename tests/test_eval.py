"""`bbl eval`: sentence scoring convention, accuracy, aggregation, ensemble, supplement, outputs, bad input."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bbl.cli import main
from bbl.errors import BblError
from bbl.evaluate.run import EvalConfig, dev_perplexity, load_model, run_eval
from bbl.evaluate.zero_shot import blimp_accuracy, load_pairs, score_pairs, sentence_logprobs

from .conftest import REAL_DATA, real_data_or_skip
from .helpers import quiet


@pytest.fixture(scope="module")
def teacher(trained_cache):
    model, tok, _ = load_model(trained_cache[0][0], "cpu")
    return model, tok


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sentence_logprob_equals_manual_computation(teacher):
    model, tok = teacher
    sentence = "the big dog saw a bird."
    ids = [tok.bos_token_id, *tok(sentence, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
    manual = sum(float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1))
    got = sentence_logprobs([model], tok, [sentence, "a much longer sentence about the red tree ."], batch_size=2)
    assert got[0] == pytest.approx(manual, abs=1e-4)  # padding and batching do not change the score


def test_accuracy_on_hand_written_pairs_equals_hand_count(teacher):
    """Each pair scored by a hand forward pass of each sentence alone (BOS + its tokens, the sum of log p of every
    token after BOS from the model's own logits), not through bbl's scorer."""
    model, tok = teacher
    rows = [{"sentence_good": "the cat sat on a mat .", "sentence_bad": "mat a on sat cat the ."},
            {"sentence_good": "she was happy .", "sentence_bad": "was she happy happy happy ."},
            {"sentence_good": "tree tree tree tree .", "sentence_bad": "the dog ran ."}]

    def hand_logprob(sentence):
        ids = [tok.bos_token_id, *tok(sentence, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        return sum(float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1))

    hand = [hand_logprob(r["sentence_good"]) > hand_logprob(r["sentence_bad"]) for r in rows]
    assert score_pairs([model], tok, rows).tolist() == hand


def test_aggregation_per_phenomenon_and_overall():
    def rows(uid, term):
        return [{"UID": uid, "linguistics_term": term}]
    res = blimp_accuracy({"a": (rows("a", "x"), np.array([1, 1, 0, 0], bool)),
                          "b": (rows("b", "x"), np.array([1, 1], bool)),
                          "c": (rows("c", "y"), np.array([0, 0, 0, 1], bool))})
    assert res["by_paradigm"] == {"a": 0.5, "b": 1.0, "c": 0.25}
    assert res["by_phenomenon"] == {"x": 0.75, "y": 0.25}
    assert res["overall"] == pytest.approx((0.5 + 1.0 + 0.25) / 3)


def test_ensemble_equals_logit_mean(trained_cache):
    (a, b), _ = trained_cache
    ma, tok, _ = load_model(a, "cpu")
    mb, _, _ = load_model(b, "cpu")
    sentence = "the dog ran ."
    ids = torch.tensor([[tok.bos_token_id, *tok(sentence, add_special_tokens=False)["input_ids"]]])
    with torch.no_grad():
        logp = torch.log_softmax((ma(input_ids=ids).logits + mb(input_ids=ids).logits) / 2, -1)[0]
    manual = sum(float(logp[i, ids[0, i + 1]]) for i in range(ids.shape[1] - 1))
    assert sentence_logprobs([ma, mb], tok, [sentence])[0] == pytest.approx(manual, abs=1e-4)


def test_multiline_supplement_sentences_are_scored_whole(teacher):
    model, tok = teacher
    two_turns = "A: did you go?\nB: yes, I did."
    whole = sentence_logprobs([model], tok, [two_turns])[0]
    first = sentence_logprobs([model], tok, ["A: did you go?"])[0]
    assert whole < first  # the second turn's tokens are scored too


def test_outputs_json_table_and_plot(trained_cache, prepared, tmp_path):
    (a, b), _ = trained_cache
    blimp = tmp_path / "blimp"
    blimp.mkdir()
    write_jsonl(blimp / "p1.jsonl", [{"sentence_good": "the cat sat .", "sentence_bad": "cat the sat .",
                                      "UID": "p1", "linguistics_term": "word_order"}] * 3)
    supp = tmp_path / "supp"
    supp.mkdir()
    write_jsonl(supp / "turns.jsonl", [{"sentence_good": "A: hi?\nB: yes.", "sentence_bad": "A: hi?\nB: the."}])
    config = EvalConfig(blimp_dir=blimp, supplement_dir=supp, seq_len=32, dev_windows=8)
    res = run_eval([a], ensembles=[[a, b]], config=config, data_dir=prepared, out=tmp_path / "out", progress=False,
                   log=quiet)
    assert [r["model"] for r in res] == ["llama-tiny", "ensemble(llama-tiny+gpt2-tiny)"]
    record = json.loads((tmp_path / "out" / "llama-tiny.json").read_text())
    assert set(record) >= {"model", "paths", "parameters", "tokenizer_fingerprint", "dev_stream_sha256", "tasks"}
    assert set(record["tasks"]) == {"blimp", "supplement", "perplexity"}
    assert record["tasks"]["blimp"]["by_phenomenon"].keys() == {"word_order"}
    assert record["tasks"]["perplexity"]["perplexity"] > 1
    table = (tmp_path / "out" / "results.md").read_text()
    assert "word_order" in table and "ensemble(llama-tiny+gpt2-tiny)" in table
    png = (tmp_path / "out" / "blimp.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_perplexity_matches_the_trainers_eval_loss(trained_cache, prepared):
    from bbl.data.prepared import PreparedData

    teacher_dir = trained_cache[0][0]
    model, _, _ = load_model(teacher_dir, "cpu")
    run = json.loads((teacher_dir / "bbl_run.json").read_text())
    cfg = run["config"]["training"]
    ppl = dev_perplexity([model], PreparedData(prepared), seq_len=cfg["seq_len"], dev_windows=cfg["dev_windows"],
                         seed=cfg["seed"])
    assert ppl["mean_ce"] == pytest.approx(run["best_eval_loss"], rel=1e-3)


def test_bad_inputs(tmp_path, trained_cache):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sentence_good": "a", "sentence_bad": "b"}\n{not json\n')
    with pytest.raises(BblError, match=r"bad.jsonl:2: malformed JSON"):
        load_pairs(bad)
    write_jsonl(bad, [{"sentence_good": "a"}])
    with pytest.raises(BblError, match=r"bad.jsonl:1: missing field 'sentence_bad'"):
        load_pairs(bad)
    model_dir = tmp_path / "notok"
    (model_dir).mkdir()
    import shutil

    for f in ("config.json", "model.safetensors"):
        shutil.copy(trained_cache[0][0] / f, model_dir / f)
    with pytest.raises(BblError, match="no tokenizer"):
        load_model(model_dir, "cpu")
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["eval", str(trained_cache[0][0]), "--tasks", "blimp", "--blimp-dir",
                                  str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "no *.jsonl files" in r.output


def test_real_blimp_paradigm_file(teacher, tmp_path):
    real_data_or_skip()
    model, tok = teacher
    path = REAL_DATA / "blimp_filtered" / "anaphor_number_agreement.jsonl"
    rows = load_pairs(path, max_pairs=50)
    assert rows[0]["UID"] == "anaphor_number_agreement"
    verdicts = score_pairs([model], tok, rows)

    def alone(sentence):  # one sentence, no batch or padding: sum of log p(token | BOS, tokens before it)
        ids = [tok.bos_token_id, *tok(sentence, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        return sum(float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1))

    by_hand = [alone(r["sentence_good"]) > alone(r["sentence_bad"]) for r in rows]
    assert verdicts.tolist() == by_hand
    acc = blimp_accuracy({"anaphor_number_agreement": (rows, verdicts)})
    assert acc["overall"] == pytest.approx(sum(by_hand) / len(rows)) and acc["pairs"] == len(rows) == 50


def test_perplexity_of_a_model_of_another_tokenizer_is_refused_before_anything(tiny_teachers, tiny_babylm, tmp_path):
    """Dev perplexity scores --data's token ids: a model of another tokenizer would read them as other tokens and
    report a number of nothing; refused in one line, nothing written."""
    from bbl.data.prepare import prepare

    other = tmp_path / "other"
    prepare(*tiny_babylm, other, vocab_size=300, progress=False, log=quiet)
    out = tmp_path / "ev"
    r = CliRunner().invoke(main, ["eval", str(tiny_teachers[0]), "--tasks", "perplexity", "--data", str(other),
                                  "--out", str(out), "--dev-windows", "4", "--seq-len", "32"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert r.output.count("error:") == 1 and "tokenizer differs" in r.output and str(other) in r.output
    assert not out.exists()
