"""BabyLlama-2's settings as presets (issue 22): the 345M LLaMA counted on the meta device, its grouped-query
attention, and the pipeline preset of two same-architecture teachers with different seeds and a T = 1 cache."""

import pytest

from bbl.config import ModelConfig, load_config
from bbl.errors import BblError
from bbl.models.build import build_model, count_parameters, hf_config
from bbl.pipeline import build_stages, load_pipeline_preset


def test_smollama_345m_is_the_model_card_s_model():
    cfg = load_config("smollama-345m")
    model = build_model(cfg.model, 16_000, device="meta")
    # by hand: untied embeddings 2 x 16,000 x 960; per layer q, o 960 x 960, k, v 960 x 320 (5 of 15 heads), MLP
    # 3 x 960 x 2,560, two RMSNorms; a final RMSNorm
    per_layer = 2 * 960 * 960 + 2 * 960 * 320 + 3 * 960 * 2560 + 2 * 960
    assert count_parameters(model) == 2 * 16_000 * 960 + 32 * per_layer + 960 == 345_355_200
    hf = hf_config(cfg.model, 16_000)
    assert (hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim) == (15, 5, 64)
    assert hf.rms_norm_eps == 1e-6 and not hf.tie_word_embeddings and hf.max_position_embeddings == 256
    t = cfg.training
    assert (t.lr, t.weight_decay, t.batch_size, t.micro_batch_size, t.epochs, t.warmup_steps) == \
        (7e-4, 5.0, 128, 32, 8, 600)
    assert (t.lr_scheduler, t.precision, t.seq_len) == ("cosine", "fp16", 128)
    assert (cfg.distill.alpha, cfg.distill.reduction) == (0.5, "babyllama")


def test_the_babyllama2_pipeline_trains_two_seeds_of_one_teacher_and_dumps_at_t1(tmp_path):
    data = tmp_path / "babylm"
    for split in ("babylm_10M", "babylm_dev", "blimp_filtered", "supplement_filtered"):
        (data / split).mkdir(parents=True)
    preset = load_pipeline_preset("babyllama2")
    stages = {s.key: s.argv for s in build_stages("babyllama2", data, tmp_path / "w")}
    teachers = [argv for key, argv in stages.items() if key.startswith("teacher-")]
    assert len(teachers) == 2 and all(argv[1] == "smollama-345m" for argv in teachers)
    seeds = [argv[argv.index("--set") + 1] for argv in teachers]
    assert sorted(seeds) == ["training.seed=0", "training.seed=1"]
    dump = stages["dump-logits"]
    assert dump[dump.index("--temperature") + 1] == "1.0" and preset.temperature == 1.0
    assert stages["distill"][1] == stages["baseline"][1] == preset.student == "smollama-345m"


@pytest.mark.parametrize("kw,message", [
    ({"n_head": 15, "n_kv_head": 4, "hidden_size": 960}, "divide model.n_head"),
    ({"architecture": "gpt2", "n_head": 4, "n_kv_head": 2, "hidden_size": 64}, "llama only"),
])
def test_bad_key_value_heads_are_refused(kw, message):
    with pytest.raises(BblError, match=message):
        ModelConfig(**kw)
