"""The losses room: distillation losses as pure tensor functions (`bbl.losses.kd`) and the chunked LM head + CE
+ KD loss that never holds (B, S, V) logits (`bbl.losses.chunked`). Every public name is exported here, so
`bbl.losses.topk_tail_kl`, `bbl.losses.chunked_head_loss`, ... are the API."""

from bbl.losses.chunked import IGNORE_INDEX, KDTargets, chunked_head_loss, default_chunk_rows, shift_labels
from bbl.losses.kd import (
    distillation_loss,
    full_kl,
    hybrid_kl,
    hybrid_targets,
    reduce_kd,
    retemper,
    sampled_kl,
    sampled_logprobs,
    sampled_targets,
    topk_renorm_kl,
    topk_tail_kl,
    xlogx_term,
)

__all__ = ["IGNORE_INDEX", "KDTargets", "chunked_head_loss", "default_chunk_rows", "distillation_loss", "full_kl",
           "hybrid_kl", "hybrid_targets", "reduce_kd", "retemper", "sampled_kl", "sampled_logprobs",
           "sampled_targets", "shift_labels", "topk_renorm_kl", "topk_tail_kl", "xlogx_term"]
