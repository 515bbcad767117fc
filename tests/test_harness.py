"""Scoring parity with lm-evaluation-harness (issue 13): `bbl eval`'s minimal-pair verdicts equal those of lm-eval's
`HFLM.loglikelihood("", sentence)` on real BLiMP pairs, pair by pair. Skipped without the `harness` extra."""

import numpy as np
import pytest

from .conftest import REAL_DATA, save_random_model

lm_eval = pytest.importorskip("lm_eval", reason="pip install 'bbl[harness]' for the lm-evaluation-harness parity test")


pytestmark = pytest.mark.slow  # the real lm-evaluation-harness
FILES = ("anaphor_gender_agreement", "determiner_noun_agreement_1", "regular_plural_subject_verb_agreement_1")


def _pairs():
    from bbl.evaluate.zero_shot import load_pairs

    if not (REAL_DATA / "blimp_filtered").is_dir():
        pytest.skip(f"real BLiMP data not found at {REAL_DATA}")
    return [row for name in FILES for row in load_pairs(REAL_DATA / "blimp_filtered" / f"{name}.jsonl", max_pairs=20)]


@pytest.fixture(scope="module")
def tiny_model(trained_cache):
    """A tiny bbl teacher trained on the tiny corpus: its verdicts on real pairs are a non-trivial pattern."""
    teachers, _ = trained_cache
    return teachers[0]


def test_bbl_eval_and_lm_eval_harness_agree_pair_by_pair(tiny_model, prepared, tmp_path):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bbl.evaluate.zero_shot import score_pairs, sentence_logprobs

    rows = _pairs()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    ours = score_pairs([model], tokenizer, rows, batch_size=16)
    sentences = [r["sentence_good"] for r in rows] + [r["sentence_bad"] for r in rows]
    our_lls = sentence_logprobs([model], tokenizer, sentences, batch_size=16)

    lm = HFLM(pretrained=str(tiny_model), backend="causal", device="cpu", batch_size=16, dtype="float32")
    assert lm.prefix_token_id == tokenizer.bos_token_id  # the empty context is the BOS token, as bbl's
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=("", s), idx=i) for i, s in enumerate(sentences)]
    theirs_lls = np.array([ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)])
    theirs = theirs_lls[:len(rows)] > theirs_lls[len(rows):]

    np.testing.assert_allclose(our_lls, theirs_lls, rtol=1e-4, atol=1e-3)
    assert ours.tolist() == theirs.tolist()  # the verdicts, pair by pair
    assert 0 < ours.sum() < len(rows)  # a pattern, not all-right or all-wrong


def test_a_random_model_agrees_too(prepared, tmp_path):
    """Also for an untrained model, whose log-likelihoods are far from any trained regularity."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bbl.evaluate.zero_shot import score_pairs

    path = save_random_model("gpt2-tiny", prepared, tmp_path / "gpt2", seed=7)
    rows = _pairs()
    ours = score_pairs([AutoModelForCausalLM.from_pretrained(str(path)).eval()],
                       AutoTokenizer.from_pretrained(str(path)), rows, batch_size=16)
    lm = HFLM(pretrained=str(path), backend="causal", device="cpu", batch_size=16, dtype="float32")
    sentences = [r["sentence_good"] for r in rows] + [r["sentence_bad"] for r in rows]
    lls = np.array([ll for ll, _ in lm.loglikelihood(
        [Instance(request_type="loglikelihood", doc={}, arguments=("", s), idx=i) for i, s in enumerate(sentences)],
        disable_tqdm=True)])
    assert ours.tolist() == (lls[:len(rows)] > lls[len(rows):]).tolist()
