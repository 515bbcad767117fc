"""The losses room: distillation losses as pure tensor functions (`bbl.losses.kd`), the divergences they can
measure, registered by name (`bbl.losses.divergences`), the (k+1)-outcome coarsening and its one chain rule
(`bbl.losses.coarse`), and the chunked LM head + CE + KD loss that never holds (B, S, V) logits
(`bbl.losses.chunked`), and the KD readings of cached targets by `distill.kd_variant` (`bbl.losses.readings`).
Every public name is exported here, so `bbl.losses.topk_tail_kl`,
`bbl.losses.chunked_head_loss`, ... are the API."""

from bbl.losses.chunked import IGNORE_INDEX, KDTargets, chunked_head_loss, default_chunk_rows, shift_labels
from bbl.losses.coarse import chain_rule, student_coarse_logprobs, teacher_coarse_logprobs
from bbl.losses.divergences import DIVERGENCES, FORWARD_KL, Divergence, coarse_kl, xlogx_term
from bbl.losses.kd import (
    distillation_loss,
    full_divergence,
    full_kl,
    hybrid_kl,
    hybrid_targets,
    reduce_kd,
    retemper,
    sampled_kl,
    sampled_logprobs,
    sampled_targets,
    topk_divergence,
    topk_renorm_kl,
    topk_tail_kl,
)
from bbl.losses.readings import READINGS, KDContext, KDReading, get_reading, reading_problem, register_reading

__all__ = ["DIVERGENCES", "FORWARD_KL", "IGNORE_INDEX", "READINGS", "Divergence", "KDContext", "KDReading",
           "KDTargets", "get_reading", "register_reading", "chain_rule", "chunked_head_loss",
           "coarse_kl", "default_chunk_rows", "distillation_loss", "full_divergence", "full_kl", "hybrid_kl",
           "hybrid_targets", "reading_problem", "reduce_kd", "retemper", "sampled_kl", "sampled_logprobs",
           "sampled_targets", "shift_labels", "student_coarse_logprobs", "teacher_coarse_logprobs",
           "topk_divergence", "topk_renorm_kl", "topk_tail_kl", "xlogx_term"]
