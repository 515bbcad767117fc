"""Build the paper's GPT-2 and LLaMA models from a `ModelConfig` with the transformers classes (never rebuilt).

`build_model(cfg, vocab_size)` returns a randomly initialised `GPT2LMHeadModel` or `LlamaForCausalLM`; pass
`device="meta"` to count parameters of the paper-sized models without spending memory.
"""

from __future__ import annotations

from bbl.config import ModelConfig
from bbl.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS

PAD_ID, BOS_ID, EOS_ID = (SPECIAL_TOKENS.index(t) for t in (PAD, BOS, EOS))


def hf_config(cfg: ModelConfig, vocab_size: int):
    """The transformers config for `cfg` (GPT2Config or LlamaConfig) with bbl's special-token ids."""
    from transformers import GPT2Config, LlamaConfig

    ids = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    if cfg.architecture == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=cfg.max_position_embeddings, n_embd=cfg.hidden_size,
                          n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=cfg.intermediate_size, **ids)
    return LlamaConfig(vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                       num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                       num_key_value_heads=cfg.n_head, max_position_embeddings=cfg.max_position_embeddings,
                       tie_word_embeddings=False, **ids)


def build_model(cfg: ModelConfig, vocab_size: int, *, device: str | None = None, seed: int | None = None):
    """A freshly initialised causal LM for `cfg` (on `device`, e.g. "meta"), seeded when `seed` is given."""
    import torch
    from transformers import AutoModelForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    config = hf_config(cfg, vocab_size)
    if device is None:
        return AutoModelForCausalLM.from_config(config)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config)


def forward_without_logits(model, input_ids):
    """Run a transformers causal LM for its last hidden states only: `logits_to_keep` selects no position, so the
    (B, S, V) logits are never computed. Returns the model's output; `.hidden_states[-1]` is (B, S, H) after the
    final norm (transformers ties it to `last_hidden_state`). Used by the chunked loss and the chunked dump."""
    import torch

    none = torch.empty(0, dtype=torch.long, device=input_ids.device)
    return model(input_ids=input_ids, output_hidden_states=True, logits_to_keep=none)


def count_parameters(model) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
