"""The distill room: `bbl distill` — the student trained on L = alpha*CE + (1-alpha)*T^2*KD from the cache's soft
targets (or, as the online reference, from resident teachers), through the train room's recipe with the
distillation Trainer (`bbl.distill.trainer`)."""

from bbl.distill.recipe import distill

__all__ = ["distill"]
