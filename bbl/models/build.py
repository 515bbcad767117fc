"""Build the paper's GPT-2 and LLaMA models from a `ModelConfig` with the transformers classes (never rebuilt),
and the checks every stage makes of a model dir before loading one (config, tokenizer, positions).

`build_model(cfg, vocab_size)` returns a randomly initialised `GPT2LMHeadModel` or `LlamaForCausalLM`; pass
`device="meta"` to count parameters of the paper-sized models without spending memory.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from bbl.config import ModelConfig
from bbl.data.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS
from bbl.errors import BblError, UsageError
from bbl.io import load_json

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
                       num_key_value_heads=cfg.n_kv_head or cfg.n_head,
                       max_position_embeddings=cfg.max_position_embeddings,
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


@contextlib.contextmanager
def bidirectional_attention(model):
    """Within the block, `model` (a transformers causal LM, possibly DDP-wrapped) builds a bidirectional attention
    mask: its config's `is_causal` is False, which transformers' `masking_utils.create_causal_mask` reads to build
    `create_bidirectional_mask` instead ("to use decoder-only models with bi-directional attention"). The forward
    must also pass `is_causal=False` (`BIDIRECTIONAL`), which the attention interface (sdpa, flash) reads where no
    mask is materialised. No model code is forked. Used by masked-LM phases (AntLM, Yu et al. 2024)."""
    config = getattr(model, "module", model).config
    before = getattr(config, "is_causal", True)
    config.is_causal = False
    try:
        yield
    finally:
        config.is_causal = before


BIDIRECTIONAL = {"is_causal": False}
"""The forward keyword that, inside `bidirectional_attention`, reaches the attention interface."""


def forward_without_logits(model, input_ids, *, bidirectional: bool = False):
    """Run a transformers causal LM for its last hidden states only: `logits_to_keep` selects no position, so the
    (B, S, V) logits are never computed. Returns the model's output; `.hidden_states[-1]` is (B, S, H) after the
    final norm (transformers ties it to `last_hidden_state`). Used by the chunked loss and the chunked dump.
    `bidirectional`: every position attends to every other (`bidirectional_attention`), for masked-LM phases."""
    import torch

    none = torch.empty(0, dtype=torch.long, device=input_ids.device)
    if not bidirectional:
        return model(input_ids=input_ids, output_hidden_states=True, logits_to_keep=none)
    with bidirectional_attention(model):
        return model(input_ids=input_ids, output_hidden_states=True, logits_to_keep=none, **BIDIRECTIONAL)


def count_parameters(model) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def max_positions(config) -> int:
    """Positions a transformers causal LM accepts: `max_position_embeddings` (GPT-2: `n_positions`), read from a
    `PretrainedConfig`, a model (its `.config`) or a config.json dict."""
    config = getattr(config, "config", config)
    get = config.get if isinstance(config, dict) else (lambda k: getattr(config, k, None))
    return int(get("max_position_embeddings") or get("n_positions"))


LEARNED_POSITION_TABLES = ("wpe", "embed_positions", "position_embeddings")
"""Module names of learned absolute position tables (GPT-2's `wpe`, OPT's `embed_positions`, BERT-style
`position_embeddings`): an index past their end fails."""


def scoring_positions(model) -> int | None:
    """The most tokens a model can score in one pass: `max_positions` when it has a learned absolute position table
    (`LEARNED_POSITION_TABLES`), None for rotary or other computed positions (LLaMA, Qwen), which run at any length
    (past the trained one), as the BabyLM evaluation pipeline runs them."""
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) and name.rsplit(".", 1)[-1] in LEARNED_POSITION_TABLES:
            return max_positions(model)
    return None


def common_scoring_positions(models) -> int | None:
    """The smallest `scoring_positions` of `models` (None when none has a limit)."""
    limits = [n for n in (scoring_positions(m) for m in models) if n is not None]
    return min(limits) if limits else None


def load_causal_lm(model_dir: Path, **kwargs):
    """`AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)`, its failures as one line: call after
    `check_model_dir`, which names damaged metadata; what is left is the weights (truncated, missing, of another
    shape) or an architecture this transformers does not know.

    Raises:
        BblError: "{model_dir}: cannot load the model ({error type}: {its first line}); ...".
    """
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    except Exception as e:  # transformers, safetensors and torch raise many types for an unreadable model dir
        raise BblError(f"{model_dir}: cannot load the model ({type(e).__name__}: {str(e).strip().splitlines()[0]}); "
                       f"save it again with save_pretrained, or pass another dir") from None


HF_METADATA = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
"""The small JSON files of a model dir that `from_pretrained` reads, besides config.json (and tokenizer.json, read
by `tokenizer_fingerprint`), when present."""


def check_seq_len(seq_len: int, positions: int, *, option: str, subject) -> None:
    """Refuse windows longer than a model's positions.

    Raises:
        UsageError: "{option} {seq_len} exceeds the {positions} positions of {subject}; use {option} <= {positions}".
    """
    if seq_len > positions:
        raise UsageError(f"{option} {seq_len} exceeds the {positions} positions of {subject}; "
                       f"use {option} <= {positions}")


def weight_files(model_dir: Path, *, fix: str) -> list[Path]:
    """The weight files `from_pretrained` reads from a model dir: the shards its safetensors index names, else
    `model.safetensors`, else `pytorch_model*.bin`.

    Raises:
        BblError: no weights at all, or a damaged index.
    """
    d = Path(model_dir)
    index = d / "model.safetensors.index.json"
    if index.is_file():
        weight_map = (load_json(index, fix=fix) or {}).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise BblError(f"{index}: names no weight files (no weight_map); {fix}")
        return sorted({d / str(name) for name in weight_map.values()})
    if (d / "model.safetensors").exists():
        return [d / "model.safetensors"]
    bins = sorted(d.glob("pytorch_model*.bin"))
    if not bins:
        raise BblError(f"{d}: no weights (model.safetensors or pytorch_model.bin); {fix}")
    return bins


def check_weights(model_dir: Path, *, fix: str = "save the model again or restore its weights") -> None:
    """Before a model is loaded, trained or published: every weight file is there, and a safetensors file's header
    parses and covers the file (`safetensors.safe_open`, which reads the header only: an empty or truncated file
    fails here in a line, not as a traceback deep in `from_pretrained`).

    Raises:
        BblError: naming the file and `fix`.
    """
    for file in weight_files(model_dir, fix=fix):
        if not file.is_file():
            raise BblError(f"{file}: missing (the model's weights); {fix}")
        if file.stat().st_size == 0:
            raise BblError(f"{file}: empty (0 bytes, the model's weights); {fix}")
        if file.suffix != ".safetensors":
            continue
        from safetensors import safe_open

        try:
            with safe_open(str(file), "pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error type from Rust
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise BblError(f"{file}: not loadable weights ({reason}); {fix}") from None


def check_model_dir(model_dir: Path, *, seq_len: int | None = None, option: str = "--seq-len",
                    written_by: str = "bbl or save_pretrained") -> dict:
    """Before anything is loaded or written: a model dir (config.json) holding its tokenizer (tokenizer.json) and
    weights that load (`check_weights`), whose positions hold `seq_len` tokens when given. Returns its config.json
    as a dict.

    Raises:
        BblError: naming the dir (or `option`) and the fix.
    """
    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise BblError(f"{d}: not a model dir (no config.json); pass a dir written by {written_by}")
    if not (d / "tokenizer.json").is_file():
        raise BblError(f"{d}: no tokenizer (tokenizer.json) in the model dir; save the tokenizer with the model")
    fix = f"save the model again ({written_by}) or restore the file"
    config = load_json(d / "config.json", fix=fix)
    for name in HF_METADATA:  # what from_pretrained reads besides: damaged, it fails inside transformers
        load_json(d / name, fix=fix)
    check_weights(d, fix=fix)
    if seq_len is not None:
        try:
            positions = max_positions(config)
        except (TypeError, ValueError):
            raise BblError(f"{d / 'config.json'}: names no max_position_embeddings (or n_positions); {fix}") from None
        check_seq_len(seq_len, positions, option=option, subject=d)
    return config
