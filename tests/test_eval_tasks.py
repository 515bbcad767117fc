"""The BabyLM 2025 zero-shot suite of `bbl eval` (issue 23): completion scoring by hand, the pipeline's prefixes,
ties and averages, WUG's correlation, reading's surprisal and regression, EWoK from a zip, the pipeline's
predictions layout, bad input. Task files are hand-written in each task's real format (EWoK rows are made up)."""

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bbl.errors import BblError
from bbl.evaluate.ranking import completion_logprobs, entity_tracking_average, rank_items
from bbl.evaluate.reading import ols_r2, reading_scores, surprisal_queries, word_surprisals
from bbl.evaluate.run import EvalConfig, load_model, run_eval
from bbl.evaluate.tasks import RankingItem, decode_ewok, read_items, read_reading
from bbl.evaluate.wug import first_form_probability, rankdata, spearman

from .conftest import REAL_DATA, eval_pipeline_or_skip
from .helpers import error_lines, quiet, run


@pytest.fixture(scope="module")
def lm(tiny_teachers):
    model, tok, _ = load_model(tiny_teachers[0], "cpu")
    return model, tok


def logprobs_of(model, ids):
    """(len(ids) - 1,) float64: log p(ids[i] | ids[:i]) for i >= 1, one unbatched forward pass."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    return np.array([float(logp[i - 1, ids[i]]) for i in range(1, len(ids))])


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


EWOK_ROWS = [  # made-up rows in EWoK's fields (EWoK itself may not be copied)
    {"Domain": "toy-domain", "ConceptA": "a", "ConceptB": "b", "ContextType": "plain", "ContextDiff": "x",
     "TargetDiff": "y", "Context1": "the cat sat on a mat .", "Context2": "the dog ran .",
     "Target1": "the cat was happy .", "Target2": "the cat was blue ."},
    {"Domain": "toy-domain", "ConceptA": "a", "ConceptB": "b", "ContextType": "other", "ContextDiff": "x",
     "TargetDiff": "z", "Context1": "she saw a bird .", "Context2": "he saw a tree .",
     "Target1": "it was a bird .", "Target2": "it was a house ."},
    {"Domain": "other-domain", "ConceptA": "a", "ConceptB": "b", "ContextType": "plain", "ContextDiff": "w",
     "TargetDiff": "y", "Context1": "we played ball .", "Context2": "they went home .",
     "Target1": "we were happy .", "Target2": "we were sad ."},
]
ET_ROWS = [{"sample_id": i, "numops": i % 2, "example_id": i,
            "input_prefix": "Box 0 contains the ball, Box 1 contains the cat. Box 1 contains ",
            "options": ["the cat.", "the ball.", "nothing.", "the dog.", "the mat."]} for i in range(4)]
WUG_ROWS = [{"sentences": f"Create a noun out of the following adjective: {w}able. {w}ability\t"
                          f"Create a noun out of the following adjective: {w}able. {w}ableness", "ratio": r}
            for w, r in (("blick", 0.2), ("dax", 0.9), ("wug", 0.5), ("fep", 0.7))]
READING_HEADER = ("item,word,word2,sentence,context_length,sent_id,item_id,list,Subtlex_log10,length,RTfirstfix,"
                  "RTfirstpass,RTgopast,RTrightbound,self_paced_reading_time,ELAN,LAN,N400,P600,EPNP,PNP,prev_word,"
                  "prev_item,prev_length")


def write_reading(path, n=40, seed=0, long_rows=()):
    """A reading CSV in the pipeline's columns (first column unnamed, as the real file), seeded numbers; the rows
    `long_rows` get a context of 240 words, past a 128-position table."""
    rng = np.random.default_rng(seed)
    words = "the cat dog sat on a mat big red tree house ball".split()
    lines = ["," + READING_HEADER]
    for i in range(n):
        ctx_len = int(rng.integers(1, 5))
        ctx = " ".join(rng.choice(words, ctx_len)) if i not in long_rows else " ".join(["the big red tree"] * 60)
        word = str(rng.choice(words))
        prev_item, prev_word = (" ".join(ctx.split()[:-1]), ctx.split()[-1]) if ctx_len > 1 else ("", "")
        rts = rng.normal(200, 30, 5)
        lines.append(f"{i},{ctx},{word},{word.upper()},{ctx} {word} .,{ctx_len},{i},{i},1,{rng.normal(10, 2)},"
                     f"{len(word)},{rts[0]},{rts[1]},{rts[2]},{rts[3]},{rts[4]},0,0,0,0,0,0,{prev_word},{prev_item},"
                     f"{len(prev_word)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_completion_score_is_the_sum_over_the_completion_tokens_only(lm):
    model, tok = lm
    context, target = "the cat sat on a mat .", "the cat was happy ."
    sentence = f"{context} {target}"
    ids = tok(sentence)["input_ids"]
    k = len(ids) - len(tok(context)["input_ids"])  # byte-level BPE splits at spaces: the target's own tokens
    by_hand = logprobs_of(model, ids)[-k:].sum()
    got, truncated = completion_logprobs([model], tok, [sentence, "the dog ran ."], [" " + target, "the dog ran ."],
                                         batch_size=2)
    assert got[0] == pytest.approx(by_hand, abs=1e-4) and not truncated.any()


def test_a_whole_sentence_skips_its_first_token_and_has_no_bos(lm):
    model, tok = lm
    sentence = "the big dog saw a bird ."
    ids = tok(sentence)["input_ids"]
    assert ids[0] != tok.bos_token_id  # bbl's tokenizer adds no special tokens, so the pipeline scores no BOS
    got, _ = completion_logprobs([model], tok, [sentence], [sentence])
    assert got[0] == pytest.approx(logprobs_of(model, ids).sum(), abs=1e-4)


def test_the_prefix_changes_the_score_of_the_same_completion(lm):
    model, tok = lm
    completion = " it was a bird ."
    got, _ = completion_logprobs([model], tok, ["she saw a bird ." + completion, "he ran ." + completion],
                                 [completion, completion])
    assert abs(got[0] - got[1]) > 1e-3
    by_hand = [logprobs_of(model, tok(s + completion)["input_ids"])[-len(tok(completion)["input_ids"]):].sum()
               for s in ("she saw a bird .", "he ran .")]
    np.testing.assert_allclose(got, by_hand, atol=1e-4)


@pytest.fixture(scope="module")
def ensemble(tiny_teachers):
    loaded = [load_model(path, "cpu") for path in tiny_teachers]
    return [m for m, _, _ in loaded], loaded[0][1]


def test_shared_prefix_scores_equal_the_plain_ones_for_an_ensemble(ensemble):
    models, tok = ensemble
    prefixes = ["Box 0 contains the ball, Box 1 contains the cat. Box 1 contains ",
                "Box 0 contains nothing, Box 1 contains the big red tree and the mat. Box 0 contains ",
                "the dog ran ."]
    options = ["the cat.", "the ball and the mat.", "nothing.", "the tree", "a dog sat on the mat."]
    items = [RankingItem(tuple(p + o for o in options[:k]), tuple(options[:k]), "u")
             for p in prefixes for k in (2, 3, 5)]
    items.append(RankingItem(("cat sat .", "dog sat ."), ("cat sat .", "dog sat ."), "u"))  # no shared token
    items.append(RankingItem(("the", "the cat"), ("the", "the cat"), "u"))  # a one-token sentence
    plain, chosen_plain, _ = rank_items(models, tok, items, batch_size=4)
    shared, chosen_shared, _ = rank_items(models, tok, items, batch_size=4, share_prefix=True)
    for a, b in zip(plain, shared, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-4)
    assert (chosen_plain == chosen_shared).all()
    assert len({len(s) for s in shared}) == 3 and abs(shared[0][0] - shared[0][1]) > 1e-3


def test_past_its_positions_llama_scores_whole_as_the_pipeline_and_gpt2_keeps_its_last_tokens(ensemble):
    """Rotary positions run at any length (the pipeline runs them so); a learned position table cannot, so bbl
    keeps the last tokens there and counts the sentence."""
    from bbl.models.build import max_positions, scoring_positions

    (llama, gpt2), tok = ensemble
    assert scoring_positions(llama) is None and scoring_positions(gpt2) == max_positions(gpt2)
    long = " ".join(["the big dog saw a red bird on the mat ."] * 40)
    ids = tok(long)["input_ids"]
    assert len(ids) > max(max_positions(llama), max_positions(gpt2))
    got, truncated = completion_logprobs([llama], tok, [long, "the cat ."], [long, "the cat ."])
    assert truncated.tolist() == [False, False] and got[0] == pytest.approx(logprobs_of(llama, ids).sum(), rel=1e-4)
    n = max_positions(gpt2)
    got, truncated = completion_logprobs([gpt2], tok, [long, "the cat ."], [long, "the cat ."])
    assert truncated.tolist() == [True, False] and got[0] == pytest.approx(logprobs_of(gpt2, ids[-n:]).sum(), rel=1e-4)
    items = [RankingItem(("the cat .", "cat the ."), ("the cat .", "cat the ."), "u"),
             RankingItem((long, long + " ."), (long, long + " ."), "u")]
    _, _, truncated = rank_items([llama, gpt2], tok, items, share_prefix=True)
    assert truncated.tolist() == [False, True]  # an ensemble with a GPT-2 member is held to its table; per item


def test_shared_prefix_is_the_longest_common_token_run_leaving_one_token_each():
    from bbl.evaluate.shared_prefix import common_prefix

    assert common_prefix([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter keeps its last token to score
    assert common_prefix([[7, 2], [8, 2]]) == 0


def test_a_tie_goes_to_the_first_sentence_as_the_pipelines_torch_max(lm):
    model, tok = lm
    same = RankingItem(("the cat sat .", "the cat sat ."), ("the cat sat .", "the cat sat ."), "u")
    other = RankingItem(("the cat sat .", "cat the sat ."), ("the cat sat .", "cat the sat ."), "u")
    scores, chosen, _ = rank_items([model], tok, [same, other])
    assert chosen[0] == 0 and scores[0][0] == scores[0][1]
    assert chosen[1] == int(np.argmax(scores[1]))


def test_entity_tracking_averages_subsets_then_splits():
    splits, overall = entity_tracking_average({"regular_0_ops": 1.0, "regular_1_ops": 0.5, "ambiref_0_ops": 0.0,
                                               "move_contents_3_ops": 0.25})
    assert splits == {"regular": 0.75, "ambiref": 0.0, "move_contents": 0.25}
    assert overall == pytest.approx((0.75 + 0.0 + 0.25) / 3)


def test_ewok_scores_each_target_after_context1_only():
    item = decode_ewok(EWOK_ROWS[0])
    assert item.sentences == ("the cat sat on a mat . the cat was happy .", "the cat sat on a mat . the cat was blue .")
    assert item.completions == (" the cat was happy .", " the cat was blue .")
    assert item.uid == "toy-domain" and item.metadata["context_type"] == "plain"


def test_ewok_is_read_from_a_zip_in_memory(tmp_path):
    z = tmp_path / "ewok_fast.zip"
    with zipfile.ZipFile(z, "w") as f:
        for domain in ("toy-domain", "other-domain"):
            rows = [r for r in EWOK_ROWS if r["Domain"] == domain]
            f.writestr(f"evaluation_data/fast_eval/ewok_fast/{domain}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    items = read_items("ewok", z, option="--task-data ewok=PATH")
    assert sorted(items) == ["other-domain", "toy-domain"] and len(items["toy-domain"]) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing unpacked
    (tmp_path / "d").mkdir()
    z.rename(tmp_path / "d" / "ewok_fast.zip")  # a dir holding the zip (the pipeline's ewok_fast/) reads the same
    assert read_items("ewok", tmp_path / "d", option="x")["toy-domain"] == items["toy-domain"]


def test_real_ewok_fast_zip_opens_with_the_published_password():
    path = REAL_DATA / "ewok_fast" / "ewok_fast.zip"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    items = read_items("ewok", path, option="x")
    assert len(items) == 11 and all(len(v) == 100 for v in items.values())  # the pipeline's EWOK_FAST_SIZE
    assert all(it.uid == stem for stem, v in items.items() for it in v)  # the file stem is the domain


def test_spearman_and_ranks_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    x = [0.1, 0.4, 0.4, 0.9, 0.2, 0.4]
    y = [1, 3, 2, 5, 2, 4]
    np.testing.assert_array_equal(rankdata(x), stats.rankdata(x))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_wug_probability_is_the_softmax_of_the_two_scores():
    p = first_form_probability(np.array([[-3.0, -4.0], [-10.0, -10.0], [-1000.0, -1.0]]))
    np.testing.assert_allclose(p, [1 / (1 + math.exp(-1)), 0.5, 0.0], atol=1e-7)  # float32, as the pipeline


def test_wug_rho_and_probabilities_equal_the_pipelines_own_computation(tmp_path):
    """The pipeline's `rank_and_evaluate_wug` (float32 softmax, scipy's rho) and its collation's
    `_calculate_wugs_results` (rho of the written probabilities) on float32 scores where float32 ties matter: score
    gaps beyond ~17 nats round p to 1.0 in float32 but not in float64, so a float64 softmax ranks them apart."""
    from types import SimpleNamespace

    from bbl.evaluate.predictions import ranking_predictions
    from bbl.evaluate.tasks import decode_wug

    eval_pipeline_or_skip()
    from evaluation_pipeline import collate_preds
    from evaluation_pipeline.sentence_zero_shot.compute_results import rank_and_evaluate_wug

    rng = np.random.default_rng(0)
    n = 60
    scores = (-rng.uniform(5, 40, size=(n, 2))).astype(np.float32)
    scores[:20, 1] = scores[:20, 0] - rng.uniform(17, 30, size=20).astype(np.float32)  # p(first) == 1.0 in float32
    ratios = rng.uniform(0, 1, size=n).round(3)
    rows = [{"sentences": f"a wug{i}ity .\ta wug{i}ness .", "ratio": float(r)} for i, r in enumerate(ratios)]
    items = [decode_wug(r) for r in rows]
    f64 = np.exp(scores[:, 0].astype(np.float64)) / np.exp(scores.astype(np.float64)).sum(1)
    assert abs(spearman(f64, ratios) - spearman(first_form_probability(scores), ratios)) > 1e-6  # the case bites

    stats, predictions = {1.0: {}}, {1.0: {"wug_adj": []}}
    args = SimpleNamespace(save_predictions=True, task="wug_adj")
    rank_and_evaluate_wug(args, stats, {1.0: [torch.from_numpy(scores[:, 0]), torch.from_numpy(scores[:, 1])]},
                          [{"completions": list(it.completions)} for it in items], [0] * n,
                          [{"ratio": r} for r in ratios], ["wug_adj"] * n, predictions)
    probs = first_form_probability(scores)
    chosen = np.argmax(scores, axis=1)
    ours = ranking_predictions(items, chosen, probs=probs)["wug_adj"]["predictions"]
    assert ours == predictions[1.0]["wug_adj"]  # ids, chosen forms and probabilities, exactly
    rho = spearman(probs, ratios)
    assert round(rho, 6) == round(float(stats[1.0]["correlation"]), 6)

    data = tmp_path  # the collation reads the task's data file
    (data / "wug_adj_nominalization.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    collated = collate_preds._calculate_wugs_results({"wug_adj": {"predictions": ours}}, "wug_adj_nominalization",
                                                     data)
    assert round(rho, 6) == round(float(collated["wug_adj"]), 6)


def test_reading_surprisal_by_hand(lm):
    model, tok = lm
    context, word = "the cat sat on", "the"
    (q_context, target), = surprisal_queries(tok, context, word)  # one token: one query
    ids = tok(context)["input_ids"]
    with torch.no_grad():
        p = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)[target]
    got, truncated = word_surprisals([model], tok, [context, None, "a big"], [word, "x", "dog"], batch_size=2)
    assert not truncated.any() and got[0] == pytest.approx(-math.log(float(p)), abs=1e-4)
    assert math.isnan(got[1]) and got[2] > 0


def test_a_multi_token_word_multiplies_its_pieces_as_the_pipeline(lm):
    model, tok = lm
    word = "catdogmat"
    pieces = tok(word, add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1
    queries = surprisal_queries(tok, "the", word)
    assert len(queries) == len(pieces) and queries[0] == ("the", pieces[0])
    assert queries[1][0] == "the" + tok.decode(pieces[0])
    total = 0.0
    for context, target in queries:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tok(context)["input_ids"]])).logits[0, -1]
        total -= float(torch.log_softmax(logits.double(), -1)[target])
    assert word_surprisals([model], tok, ["the"], [word])[0][0] == pytest.approx(total, abs=1e-4)


def test_ols_r2_and_the_reading_gain():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 2 * x + rng.normal(size=200)
    assert ols_r2(y, [x]) == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, abs=1e-12)  # simple regression: r²
    n = 300
    cols = {k: list(rng.normal(size=n)) for k in ("Subtlex_log10", "length", "context_length", "prev_length")}
    noise = rng.normal(size=n)
    pred = rng.normal(size=n)
    for dv in ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound", "self_paced_reading_time"):
        cols[dv] = list(np.array(cols["length"]) + 3 * pred + 0.01 * noise)
    scores = reading_scores(cols, pred, np.zeros(n) + rng.normal(size=n))
    assert scores["eye_tracking"] == pytest.approx(1.0, abs=1e-3)  # surprisal explains all that is left
    assert scores["self_paced_reading"] == pytest.approx(1.0, abs=1e-3)
    unrelated = reading_scores(cols, rng.normal(size=n), rng.normal(size=n))
    assert abs(unrelated["eye_tracking"]) < 0.05


def test_reading_reader_fills_a_missing_item_and_drops_a_none_context(tmp_path):
    path = tmp_path / "reading_data.csv"
    path.write_text("," + READING_HEADER + "\n"
                    "0,,of,OF,s,1,1,1,1,1.0,2,1,1,1,1,1,0,0,0,0,0,0,None,,4\n"
                    "1,None of,the,THE,s,2,1,1,1,,3,1,1,1,1,1,0,0,0,0,0,0,of,None,2\n")
    cols = read_reading(path)
    assert cols["item"] == ["None", "None of"]  # a missing item becomes the string "None", as the pipeline fills it
    assert cols["prev_item"] == [None, None]  # "" and the word "None" are both missing to pandas
    assert math.isnan(cols["Subtlex_log10"][1]) and cols["length"] == [2.0, 3.0]


def test_real_reading_csv_reads_as_pandas_reads_it():
    pd = pytest.importorskip("pandas")
    path = REAL_DATA / "reading" / "reading_data.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    cols = read_reading(path)
    df = pd.read_csv(path, dtype={"item": str})
    df["item"] = df["item"].fillna("None")
    assert cols["item"] == list(df["item"])
    assert cols["prev_item"] == [v if isinstance(v, str) else None for v in df["prev_item"]]
    np.testing.assert_array_equal(np.array(cols["Subtlex_log10"]), df["Subtlex_log10"].to_numpy(float))


def test_suite_outputs_and_pipeline_predictions(tiny_teachers, tmp_path):
    a, b = tiny_teachers
    data = {"ewok": tmp_path / "ewok_fast",
            "entity_tracking": tmp_path / "entity_tracking",
            "wug_adj": tmp_path / "wug_adj_nominalization",
            "reading": write_reading(tmp_path / "reading" / "reading_data.csv")}
    for domain in ("toy-domain", "other-domain"):
        write_jsonl(data["ewok"] / f"{domain}.jsonl", [r for r in EWOK_ROWS if r["Domain"] == domain])
    write_jsonl(data["entity_tracking"] / "regular.jsonl", ET_ROWS)
    write_jsonl(data["wug_adj"] / "wug_adj_nominalization.jsonl", WUG_ROWS)
    blimp = write_jsonl(tmp_path / "blimp_fast" / "p1.jsonl", [
        {"sentence_good": "the cat sat .", "sentence_bad": "cat the sat .", "field": "syntax",
         "UID": "p1", "linguistics_term": "word_order"}] * 2).parent
    config = EvalConfig(tasks=["blimp", "ewok", "entity_tracking", "wug_adj", "reading"], suite="fast",
                        blimp_dir=blimp, data_dirs=data, pair_scoring="pipeline", batch_size=4)
    res = run_eval([a], ensembles=[[a, b]], config=config, out=tmp_path / "out", progress=False, log=quiet)
    tasks = res[0]["tasks"]
    assert set(tasks) == {"blimp", "ewok", "entity_tracking", "wug_adj", "reading"}
    assert set(tasks["ewok"]["by_domain"]) == {"toy-domain", "other-domain"}
    assert tasks["ewok"]["overall"] == pytest.approx(np.mean(list(tasks["ewok"]["by_domain"].values())))
    assert set(tasks["entity_tracking"]["by_subset"]) == {"regular_0_ops", "regular_1_ops"}
    assert -1 <= tasks["wug_adj"]["spearman"] <= 1 and tasks["reading"]["words"] == 40
    assert {"eye_tracking", "self_paced_reading"} <= set(tasks["reading"])

    root = tmp_path / "out" / "pipeline" / "llama" / "main" / "zero_shot" / "causal"
    ewok = json.loads((root / "ewok" / "ewok_fast" / "predictions.json").read_text())
    for domain, acc in tasks["ewok"]["by_domain"].items():  # collate_preds' _calculate_target_results
        rows = [r for r in EWOK_ROWS if r["Domain"] == domain]
        preds = ewok[domain]["predictions"]
        assert [p["id"] for p in preds] == [f"{domain}_{i}" for i in range(len(rows))]
        assert np.mean([p["pred"].strip() == r["Target1"] for p, r in zip(preds, rows, strict=True)]) == acc
    et = json.loads((root / "entity_tracking" / "entity_tracking" / "predictions.json").read_text())
    assert sorted(et) == ["regular_0_ops", "regular_1_ops"] and len(et["regular_0_ops"]["predictions"]) == 2
    wug = json.loads((root / "wug_adj" / "wug_adj_nominalization" / "predictions.json").read_text())
    probs = [p["prob"] for p in wug["wug_adj"]["predictions"]]
    assert spearman(probs, [r["ratio"] for r in WUG_ROWS]) == pytest.approx(tasks["wug_adj"]["spearman"])
    reading = json.loads((root / "reading" / "predictions.json").read_text())["reading"]["predictions"]
    assert [p["id"] for p in reading] == list(range(40)) and all(p["pred"] > 0 for p in reading)
    assert (root / "blimp" / "blimp_fast" / "predictions.json").is_file()
    ens = tmp_path / "out" / "pipeline" / "ensemble_llama_gpt2_" / "main" / "zero_shot" / "causal"
    assert (ens / "reading" / "predictions.json").is_file()
    table = (tmp_path / "out" / "results.md").read_text()
    assert "EWoK" in table and "entity tracking" in table and "reading" in table


def test_bad_task_input_is_one_error_line(tiny_teachers, tmp_path):
    with pytest.raises(BblError, match="--tasks: unknown task"):
        EvalConfig(tasks=["blimp", "cloze"])
    r = run(["eval", tiny_teachers[0], "--tasks", "ewok", "--task-data", f"ewok={tmp_path / 'nope'}",
             "--out", tmp_path / "o"])
    assert r.exit_code == 1 and error_lines(r) and "--task-data ewok=PATH" in error_lines(r)[0]
    r = run(["eval", tiny_teachers[0], "--tasks", "reading", "--task-data", f"reading={tmp_path}",
             "--out", tmp_path / "o"])
    assert r.exit_code == 1 and "reading_data.csv" in error_lines(r)[0]
    r = run(["eval", tiny_teachers[0], "--tasks", "wug", "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "unknown task" in error_lines(r)[0]  # a usage error
    bad = write_jsonl(tmp_path / "et" / "regular.jsonl", [{"input_prefix": "x", "options": ["a"]}])
    with pytest.raises(BblError, match=r"regular.jsonl:1: missing field 'numops'"):
        read_items("entity_tracking", bad.parent, option="x")


def test_a_suite_missing_here_falls_back_to_the_other_with_a_note(tmp_path, monkeypatch, capsys):
    """EWoK is here only as its fast zip, entity tracking only in full: each suite scores what there is, and says so."""
    from bbl.cli.commands import _task_data

    (tmp_path / "data" / "ewok_fast").mkdir(parents=True)
    (tmp_path / "data" / "entity_tracking").mkdir()
    monkeypatch.chdir(tmp_path)
    full = _task_data([], "full", ["ewok", "entity_tracking"])
    assert full == {"ewok": Path("data/ewok_fast"), "entity_tracking": Path("data/entity_tracking")}
    assert "note: ewok: no ewok_filtered/ here; scoring data/ewok_fast" in capsys.readouterr().out
    fast = _task_data(["ewok=elsewhere.zip"], "fast", ["ewok", "entity_tracking"])
    assert fast == {"ewok": Path("elsewhere.zip"), "entity_tracking": Path("data/entity_tracking")}
    assert "entity_tracking: no entity_tracking_fast/ here" in capsys.readouterr().out


def test_a_babylm_submission_reads_evaluation_data_as_it_is_and_files_predictions_as_collated(tiny_teachers,
                                                                                                tmp_path):
    """`--suite` alone asks for the BabyLM suite (every zero-shot task, the pipeline's scoring, every
    predictions.json); `--eval-data` takes evaluation_data/{full_eval,fast_eval}/; a task missing from the suite
    falls back to the other suite and says so in the JSON and results.md; predictions go to the folders the
    collation reads whatever the source folder is called, under --revision-name."""
    root = tmp_path / "evaluation_data"
    pair = {"sentence_good": "the cat sat .", "sentence_bad": "cat the sat .", "field": "syntax", "UID": "p1",
            "linguistics_term": "word_order"}
    for suite, blimp, supplement in (("full_eval", "blimp_filtered", "supplement_filtered"),
                                     ("fast_eval", "blimp_fast", "supplement_fast")):
        write_jsonl(root / suite / blimp / "p1.jsonl", [pair] * 2)
        write_jsonl(root / suite / supplement / "hypernym.jsonl", [{"sentence_good": "a b .", "sentence_bad": "b a ."}])
        write_jsonl(root / suite / "wug_adj_nominalization" / "wug_adj_nominalization.jsonl", WUG_ROWS)
        write_reading(root / suite / "reading" / "reading_data.csv")
    write_jsonl(root / "fast_eval" / "entity_tracking_fast" / "regular.jsonl", ET_ROWS)
    write_jsonl(root / "full_eval" / "entity_tracking" / "regular.jsonl", ET_ROWS)
    write_jsonl(root / "fast_eval" / "ewok_fast" / "toy-domain.jsonl", EWOK_ROWS[:1])  # no ewok_filtered: falls back
    mine = write_jsonl(tmp_path / "my_ewok" / "toy-domain.jsonl", EWOK_ROWS[:1]).parent
    model = tiny_teachers[0]

    r = run(["eval", model, "--suite", "full", "--eval-data", root, "--revision-name", "chck_2M",
             "--batch-size", "4", "--out", tmp_path / "full"])
    assert r.exit_code == 0, r.output
    assert (f"wrote 1 model JSON(s), results.md, blimp.png, results.json and 6 predictions.json under pipeline/ "
            f"to {tmp_path / 'full'}\n") in r.output
    assert "note: ewok: no ewok_filtered/ here" in r.output
    result = json.loads((tmp_path / "full" / "results.json").read_text())[0]["tasks"]
    assert set(result) == {"blimp", "supplement", "ewok", "entity_tracking", "wug_adj", "reading"}
    assert result["blimp"]["scoring"] == "pipeline" and result["ewok"]["fallback"] == "ewok_filtered"
    assert "fallback" not in result["blimp"]
    table = (tmp_path / "full" / "results.md").read_text()
    assert "**EWoK (mean over domains)** (fell back †)" in table and "† ewok: the full suite's ewok_filtered/" in table
    causal = tmp_path / "full" / "pipeline" / "llama" / "chck_2M" / "zero_shot" / "causal"
    found = sorted(str(p.relative_to(causal)) for p in causal.rglob("predictions.json"))
    assert found == ["blimp/blimp_filtered/predictions.json", "blimp/supplement_filtered/predictions.json",
                     "entity_tracking/entity_tracking/predictions.json", "ewok/ewok_fast/predictions.json",
                     "reading/predictions.json", "wug_adj/wug_adj_nominalization/predictions.json"]

    r = run(["eval", model, "--suite", "fast", "--eval-data", root / "fast_eval", "--task-data", f"ewok={mine}",
             "--tasks", "blimp,ewok", "--pair-scoring", "bos", "--out", tmp_path / "fast"])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "fast" / "results.json").read_text())[0]["tasks"]
    assert result["blimp"]["scoring"] == "bos" and result["ewok"]["dataset"] == "ewok_fast"
    causal = tmp_path / "fast" / "pipeline" / "llama" / "main" / "zero_shot" / "causal"
    assert [str(p.relative_to(causal)) for p in causal.rglob("predictions.json")] == [
        "ewok/ewok_fast/predictions.json"]  # my_ewok/ filed as the collation reads it; BLiMP under bos writes none
    assert result["ewok"]["predictions"] == "pipeline/llama/main/zero_shot/causal/ewok/ewok_fast/predictions.json"
    assert "predictions" not in result["blimp"] and "and 1 predictions.json under pipeline/" in r.output
    r = run(["eval", model, "--tasks", "blimp", "--blimp-dir", root / "full_eval" / "blimp_filtered", "--out",
             tmp_path / "bos"])  # no --suite: lm-eval's scoring, none of the pipeline's files, and it says so
    assert r.exit_code == 0, r.output
    assert not list((tmp_path / "bos").rglob("predictions.json"))
    assert "results.json; no pipeline/ predictions.json" in r.output and "and pipeline/" not in r.output
    r = run(["eval", model, "--suite", "fast", "--eval-data", tmp_path / "my_ewok" / "nope", "--out", tmp_path / "x"])
    assert r.exit_code == 1 and "--eval-data" in error_lines(r)[0]
    r = run(["eval", model, "--revision-name", "a/b", "--out", tmp_path / "x"])
    assert r.exit_code == 2 and "--revision-name" in error_lines(r)[0]  # a usage error


def test_items_past_a_learned_position_table_are_marked_truncated_in_the_results_and_predictions(tiny_teachers,
                                                                                               tmp_path):
    """GPT-2 (128 learned positions) keeps the last tokens of a longer item, where the pipeline's code fails: the
    count of such items per task in results.json, a mark on the number in results.md and on each such item in
    predictions.json. A rotary LLaMA scores the same items whole: nothing marked."""
    long_prefix = "Box 0 contains the ball, " * 40 + "Box 1 contains "
    rows = [{**row, "input_prefix": long_prefix} if i in (1, 3) else row for i, row in enumerate(ET_ROWS)]
    et = write_jsonl(tmp_path / "et" / "regular.jsonl", rows).parent
    reading = write_reading(tmp_path / "reading.csv", n=30, long_rows=(4,))
    args = ["--tasks", "entity_tracking,reading", "--task-data", f"entity_tracking={et}", "--task-data",
            f"reading={reading}", "--batch-size", "4"]

    r = run(["eval", tiny_teachers[1], *args, "--out", tmp_path / "gpt2"])
    assert r.exit_code == 0, r.output
    assert "warning: gpt2 entity_tracking: 2 item(s) longer than the model's learned position table" in r.output
    tasks = json.loads((tmp_path / "gpt2" / "results.json").read_text())[0]["tasks"]
    assert (tasks["entity_tracking"]["truncated"], tasks["reading"]["truncated"]) == (2, 1)
    causal = tmp_path / "gpt2" / "pipeline" / "gpt2" / "main" / "zero_shot" / "causal"
    preds = json.loads((causal / "entity_tracking" / "entity_tracking" / "predictions.json").read_text())
    marked = {p["id"]: p.get("truncated", False) for v in preds.values() for p in v["predictions"]}
    assert marked == {"regular_0_ops_0": False, "regular_0_ops_1": False,  # rows 0 and 2 (numops 0)
                      "regular_1_ops_0": True, "regular_1_ops_1": True}  # rows 1 and 3, the long ones
    preds = json.loads((causal / "reading" / "predictions.json").read_text())["reading"]["predictions"]
    assert [p["id"] for p in preds if p.get("truncated")] == [4] and set(preds[0]) == {"id", "pred", "prev_pred"}
    table = (tmp_path / "gpt2" / "results.md").read_text()
    assert "| **Entity tracking (mean over splits)** (truncated ‡) |" in table
    assert "‡ entity_tracking: items longer than the model's learned positions, scored on their last tokens (gpt2 2 " \
           "of 4); the pipeline cannot score them" in table
    assert "‡ reading: " in table and "(gpt2 1 of 30)" in table

    r = run(["eval", tiny_teachers[0], *args, "--out", tmp_path / "llama"])
    assert r.exit_code == 0, r.output
    tasks = json.loads((tmp_path / "llama" / "results.json").read_text())[0]["tasks"]
    assert tasks["entity_tracking"]["truncated"] == tasks["reading"]["truncated"] == 0
    assert "‡" not in (tmp_path / "llama" / "results.md").read_text() and "truncated" not in "".join(
        p.read_text() for p in (tmp_path / "llama").rglob("predictions.json"))
