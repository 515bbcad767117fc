"""The models room: building the paper's GPT-2 and LLaMA models from a config (`bbl.models.build`), loading
teachers with their provenance (`bbl.models.teachers`) and their logit-mean ensemble and its sparse soft targets
(`bbl.models.ensemble`)."""

from bbl.models.build import (
    build_model,
    check_model_dir,
    check_seq_len,
    count_parameters,
    forward_without_logits,
    hf_config,
    max_positions,
)

__all__ = ["build_model", "check_model_dir", "check_seq_len", "count_parameters", "forward_without_logits",
           "hf_config", "max_positions"]
